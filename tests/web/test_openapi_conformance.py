"""A real broker answers every operation the way its OpenAPI document says (schemathesis)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from tests.support.serve import ORGANIZATION, PROJECT, policy, serving_issuer, start_broker
from tests.web.admin.conftest import ADMIN_TOKEN

from tokenbroker.web.admin.auth import admin_token_digest
from tokenbroker.web.routes.openapi import openapi_document

MINTED = "ci-token"
DOCUMENTED = "gcp"
GCP_AUDIENCE = (
    "//iam.googleapis.com/projects/1/locations/global"
    "/workloadIdentityPools/ci-pool/providers/dev-env0"
)
FORM = "application/x-www-form-urlencoded"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 16,
        "generation": {"max-examples": 10, "deterministic": True, "database": "none"},
        "phases": {"stateful": {"enabled": False}},
        "dictionaries": {
            "names": {"values": [ORGANIZATION, MINTED]},
            "issuers": {"values": ["dev-env0"]},
            "projects": {"values": [PROJECT]},
        },
        "parameters": {
            **{
                f"path.{name}": {"dictionary": "names", "probability": 0.5}
                for name in ("org", "name", "credential")
            },
            "path.project": {"dictionary": "projects", "probability": 0.5},
            "body.issuer": {"dictionary": "issuers", "probability": 0.5},
            "body.credential": {"dictionary": "names", "probability": 0.5},
        },
    }
)
schema = schemathesis.openapi.from_dict(copy.deepcopy(openapi_document()), config=CONFIG)


@schema.hook
def filter_path_parameters(
    context: schemathesis.HookContext, path_parameters: dict[str, object]
) -> bool:
    """Keep the organization the other operations need: only other names are deleted."""
    operation = context.operation
    deletes_org = (
        operation is not None and operation.label == "DELETE /v1/admin/organizations/{name}"
    )
    return not (deletes_org and path_parameters.get("name") == ORGANIZATION)


@dataclass(frozen=True)
class ServedBroker:
    url: str
    platform_token: str


MINTED_CREDENTIAL = {
    "name": MINTED,
    "type": "oidc_token",
    "token": "mint",
    "audience": "https://ci.example.test",
}
# Its runner formats are documents google-auth uses: no backend is called for them. Any other
# format would call Google's STS, here a closed loopback port.
DOCUMENTED_CREDENTIAL = {
    "name": DOCUMENTED,
    "type": "gcp_oidc",
    "settings": {"audience": GCP_AUDIENCE, "token_url": "http://127.0.0.1:9/v1/token"},
}


@contextmanager
def serving_broker(directory: Path, credentials: list[dict[str, object]]) -> Iterator[ServedBroker]:
    """A broker with an admin token and ``credentials`` assigned, and its platform issuer."""
    with serving_issuer(directory) as issuer, ExitStack() as stack:
        sections = {
            **policy(issuer, credentials),
            "admin": {"tokens": [admin_token_digest(ADMIN_TOKEN)]},
            # Every generated request comes from one address: no limit may answer for the app.
            "rate_limit": {
                "requests_per_minute": 1_000_000,
                "burst": 100_000,
                "per_client_per_minute": 1_000_000,
                "per_client_burst": 100_000,
            },
        }
        broker = start_broker(directory, stack, sections)
        yield ServedBroker(broker.url, issuer.mint())


@pytest.fixture(scope="module")
def fuzzed_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedBroker]:
    """The broker schemathesis sends generated requests to (they may change its policy).

    Its one credential is minted by the broker itself: with no backend to be absent (a 502),
    every 5xx it answers is its own.
    """
    with serving_broker(tmp_path_factory.mktemp("openapi-fuzzed"), [MINTED_CREDENTIAL]) as broker:
        yield broker


@pytest.fixture(scope="module")
def served_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedBroker]:
    """A broker whose policy only the explicit cases below use."""
    directory = tmp_path_factory.mktemp("openapi-served")
    with serving_broker(directory, [MINTED_CREDENTIAL, DOCUMENTED_CREDENTIAL]) as broker:
        yield broker


def call_as_documented(
    case: schemathesis.Case, broker: ServedBroker, token: str | None = None
) -> schemathesis.Response:
    """Send ``case`` with the bearer token its operation's security asks for; check the answer."""
    security = case.operation.definition.raw.get("security", [])
    if token is None and security:
        token = ADMIN_TOKEN if {"adminToken": []} in security else broker.platform_token
    headers = {"Authorization": f"Bearer {token}"} if token is not None else None
    return case.call_and_validate(base_url=broker.url, headers=headers, checks=CHECKS)


@schema.parametrize()
def test_every_operation_answers_as_documented(
    case: schemathesis.Case, fuzzed_broker: ServedBroker
) -> None:
    call_as_documented(case, fuzzed_broker)


# Answers random generation seldom reaches, sent explicitly and checked the same way.

EXCHANGE = schema["/v1/exchange"]["POST"]


@pytest.mark.parametrize(
    ("credential", "query", "content_type"),
    [
        (MINTED, {}, "application/json"),
        (MINTED, {"format": "env"}, "text/plain"),
        (MINTED, {"format": "shell"}, "text/x-shellscript"),
        (MINTED, {"dry_run": "true"}, "application/json"),
        (DOCUMENTED, {"format": "gcp-external-account"}, "application/json"),
        (DOCUMENTED, {"format": "gcp-executable"}, "application/json"),
    ],
    ids=["json", "env", "shell", "dry-run", "runner-config", "runner-executable"],
)
def test_each_success_of_the_exchange_is_documented(
    served_broker: ServedBroker, credential: str, query: dict[str, str], content_type: str
) -> None:
    case = EXCHANGE.Case(
        query=query, body={"credential": credential}, media_type="application/json"
    )
    response = call_as_documented(case, served_broker)
    assert response.status_code == 200
    assert response.headers["content-type"][0].startswith(content_type)


def test_a_refused_token_is_a_documented_401_with_a_bearer_challenge(
    served_broker: ServedBroker,
) -> None:
    case = EXCHANGE.Case(body={"credential": MINTED}, media_type="application/json")
    response = call_as_documented(case, served_broker, token="not-a-jwt")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == ['Bearer error="invalid_token"']


def test_the_token_endpoint_answers_its_documented_200(served_broker: ServedBroker) -> None:
    case = schema["/oauth2/token"]["POST"].Case(
        body={
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token": served_broker.platform_token,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "audience": MINTED,
        },
        media_type=FORM,
    )
    response = call_as_documented(case, served_broker)
    assert response.status_code == 200
    assert response.json()["issued_token_type"] == "urn:ietf:params:oauth:token-type:jwt"


def test_the_runner_revokes_its_job_as_documented(served_broker: ServedBroker) -> None:
    issued = EXCHANGE.Case(body={"credential": MINTED}, media_type="application/json")
    exchanged = call_as_documented(issued, served_broker)
    assert exchanged.status_code == 200
    case = schema["/v1/leases/revoke"]["POST"].Case(
        body={"job": True}, media_type="application/json"
    )
    response = call_as_documented(case, served_broker)
    assert response.status_code == 200
    lease = {"id": exchanged.json()["lease"]["id"], "credential": MINTED, "type": "oidc_token"}
    assert response.json() == {"revoked": [], "not_revocable": [lease]}
