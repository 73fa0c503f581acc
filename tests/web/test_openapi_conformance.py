"""A real broker answers every operation the way its OpenAPI document says (schemathesis)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from tests.support.serve import ORGANIZATION, PROJECT, policy, serving_issuer, start_broker
from tests.web.admin.conftest import ADMIN_TOKEN

from tokenbroker.web.admin.auth import admin_token_digest
from tokenbroker.web.routes.openapi import openapi_document

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 16,
        "generation": {"max-examples": 10, "deterministic": True, "database": "none"},
        "phases": {"stateful": {"enabled": False}},
        "dictionaries": {
            "names": {"values": [ORGANIZATION, "ci-token"]},
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


@pytest.fixture(scope="module")
def served_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedBroker]:
    directory = tmp_path_factory.mktemp("openapi-conformance")
    credential = {
        "name": "ci-token",
        "type": "oidc_token",
        "token": "mint",
        "audience": "https://ci.example.test",
    }
    with serving_issuer(directory) as issuer, ExitStack() as stack:
        sections = {
            **policy(issuer, [credential]),
            "admin": {"tokens": [admin_token_digest(ADMIN_TOKEN)]},
            "rate_limit": {"requests_per_minute": 1_000_000, "burst": 100_000},
        }
        broker = start_broker(directory, stack, sections)
        yield ServedBroker(broker.url, issuer.mint())


@schema.parametrize()
def test_every_operation_answers_as_documented(
    case: schemathesis.Case, served_broker: ServedBroker
) -> None:
    security = case.operation.definition.raw.get("security", [])
    token = ADMIN_TOKEN if {"adminToken": []} in security else served_broker.platform_token
    headers = {"Authorization": f"Bearer {token}"} if security else None
    case.call_and_validate(base_url=served_broker.url, headers=headers, checks=CHECKS)
