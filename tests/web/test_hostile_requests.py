"""Requests that could crash a parser or be read two ways: a 400 (audited), never a 5xx.

The app runs on a real SQLite store with a dev platform issuer whose tokens are really signed;
no backend is reachable, and none is needed: every request here is refused before one is called.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict
from pytest_aiohttp import AiohttpClient
from tests.support.broker import one_org_settings
from tests.support.platform import ServedDevIssuer
from tests.web.admin.conftest import ADMIN_TOKEN

from tokenbroker.config import Settings
from tokenbroker.identity.fingerprint import token_fingerprint
from tokenbroker.policy.models import AuditEvent
from tokenbroker.web import keys
from tokenbroker.web.admin.auth import admin_token_digest
from tokenbroker.web.app import create_app

ORG = "66a38abf-69bc-4cb7-ad73-7f61e389079f"
PROJECT = "5b44fa6d-ecfd-40ab-8e69-14d6fe7c638c"
GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
FORM = "application/x-www-form-urlencoded"

Client = TestClient[web.Request, web.Application]


def hostile_settings(tmp_path: Path, issuer: ServedDevIssuer) -> Settings:
    """An organization and a credential (at an address never called), an admin token."""
    vault = {
        "organization": "acme",
        "name": "prod-vault",
        "type": "vault_oidc",
        "settings": {"address": "https://vault.example.com", "role": "ci"},
    }
    return one_org_settings(
        tmp_path,
        issuer.issuer_settings("env0"),
        [vault],
        org=ORG,
        admin={"tokens": [admin_token_digest(ADMIN_TOKEN)]},
    )


@pytest.fixture
async def client(
    tmp_path: Path, dev_issuer: ServedDevIssuer, aiohttp_client: AiohttpClient
) -> Client:
    return await aiohttp_client(create_app(hostile_settings(tmp_path, dev_issuer)))


@pytest.fixture
def platform_token(dev_issuer: ServedDevIssuer) -> str:
    return dev_issuer.mint("env0", org=ORG, project=PROJECT)


async def audit_events(client: Client) -> list[AuditEvent]:
    return list(await client.server.app[keys.STORE].audit.events())


async def post(
    client: Client,
    path: str,
    body: bytes,
    headers: Mapping[str, str] | CIMultiDict[str],
) -> tuple[int, dict[str, object], CIMultiDict[str]]:
    async with client.post(path, data=body, headers=headers) as reply:
        return reply.status, await reply.json(), CIMultiDict(reply.headers)


def form(**fields: str) -> bytes:
    return "&".join(f"{k}={v}" for k, v in fields.items()).encode()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# Item 2: inputs that raised inside the parsers (500) before.


async def test_a_body_of_60000_brackets_is_a_400_with_an_audit_event(
    client: Client, platform_token: str
) -> None:
    status, body, _ = await post(client, "/v1/exchange", b"[" * 60_000, bearer(platform_token))
    assert (status, body["reason"]) == (400, "body_malformed")
    [event] = await audit_events(client)
    assert (event.outcome, event.reason) == ("denied", "body_malformed")
    assert event.token_fingerprint == token_fingerprint(platform_token)


async def test_the_admin_api_refuses_60000_brackets_with_a_400(client: Client) -> None:
    headers = {**bearer(ADMIN_TOKEN), "Content-Type": "application/json"}
    status, body, _ = await post(client, "/v1/admin/organizations", b"[" * 60_000, headers)
    assert (status, body["reason"]) == (400, "malformed_json")


async def test_a_lone_surrogate_credential_is_a_400_audited_with_the_name_escaped(
    client: Client, platform_token: str
) -> None:
    raw = b'{"credential": "prod-vault\\ud800"}'
    status, body, _ = await post(client, "/v1/exchange", raw, bearer(platform_token))
    assert (status, body["reason"]) == (400, "credential_malformed")
    [event] = await audit_events(client)
    assert event.reason == "credential_malformed"
    assert event.credential == "prod-vault\\ud800"


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (f"{FORM}; charset=bogus", form(grant_type=GRANT)),
        (f"{FORM}; charset=utf-16", "grant_type=x".encode("utf-16")),
        (FORM, b"grant_type=\xff\xfe"),
        (FORM, b"grant_type=%ff%fe"),
    ],
    ids=["charset-bogus", "charset-utf-16", "not-utf-8", "percent-encoded-not-utf-8"],
)
async def test_a_token_request_not_in_utf_8_is_a_400_with_an_audit_event(
    client: Client, content_type: str, body: bytes
) -> None:
    status, reply, _ = await post(client, "/oauth2/token", body, {"Content-Type": content_type})
    assert status == 400
    assert reply["reason"] in {"charset_unsupported", "body_malformed"}
    [event] = await audit_events(client)
    assert (event.outcome, event.reason) == ("denied", reply["reason"])


# Item 10: requests that could be read two ways.


async def test_two_authorization_headers_are_a_400_with_an_audit_event(
    client: Client, platform_token: str, dev_issuer: ServedDevIssuer
) -> None:
    other = dev_issuer.mint("env0", org=ORG, project="another-project")
    headers = CIMultiDict([("Authorization", f"Bearer {platform_token}")])
    headers.add("Authorization", f"Bearer {other}")
    status, body, _ = await post(client, "/v1/exchange", b"", headers)
    assert (status, body["reason"]) == (400, "authorization_repeated")
    [event] = await audit_events(client)
    assert event.reason == "authorization_repeated"
    assert event.token_fingerprint is None


async def test_two_authorization_headers_are_a_400_on_the_admin_api(client: Client) -> None:
    headers = CIMultiDict([("Authorization", f"Bearer {ADMIN_TOKEN}")])
    headers.add("Authorization", "Bearer something-else")
    async with client.get("/v1/admin/organizations", headers=headers) as reply:
        assert reply.status == 400
        assert (await reply.json())["reason"] == "authorization_repeated"


async def test_a_json_key_given_twice_is_a_400(client: Client, platform_token: str) -> None:
    raw = b'{"credential": "prod-vault", "credential": "other"}'
    status, body, _ = await post(client, "/v1/exchange", raw, bearer(platform_token))
    assert (status, body["reason"]) == (400, "body_malformed")
    assert [e.reason for e in await audit_events(client)] == ["body_malformed"]


async def test_a_json_key_given_twice_is_a_400_on_the_admin_api(client: Client) -> None:
    raw = b'{"name": "acme2", "name": "other", "issuer": "dev-env0", "platform_org_id": "x"}'
    headers = {**bearer(ADMIN_TOKEN), "Content-Type": "application/json"}
    status, body, _ = await post(client, "/v1/admin/organizations", raw, headers)
    assert (status, body["reason"]) == (400, "malformed_json")


@pytest.mark.parametrize(
    "query", ["dry_run=true&dry_run=false", "dry_run=yes", "dry_run=TRUE", "dry_run="]
)
async def test_a_repeated_or_unclear_boolean_is_a_400(
    client: Client, platform_token: str, query: str
) -> None:
    status, body, _ = await post(client, f"/v1/exchange?{query}", b"", bearer(platform_token))
    assert status == 400
    assert body["reason"] == "query_invalid"


@pytest.mark.parametrize("value", ["1", "true"])
async def test_dry_run_true_or_1_runs_the_dry_run(
    client: Client, platform_token: str, value: str
) -> None:
    status, body, _ = await post(
        client, f"/v1/exchange?dry_run={value}", b"", bearer(platform_token)
    )
    assert status == 200
    assert "checks" in body


async def test_a_repeated_form_field_is_a_400(client: Client, platform_token: str) -> None:
    body = (
        form(grant_type=GRANT, subject_token=platform_token, subject_token_type=JWT_TYPE)
        + b"&audience=prod-vault&audience=other"
    )
    status, reply, _ = await post(client, "/oauth2/token", body, {"Content-Type": FORM})
    assert (status, reply["reason"]) == (400, "parameter_repeated")
    assert [e.reason for e in await audit_events(client)] == ["parameter_repeated"]


@pytest.mark.parametrize(
    ("field", "error", "reason"),
    [
        ("actor_token", "invalid_request", "actor_token_unsupported"),
        ("actor_token_type", "invalid_request", "actor_token_unsupported"),
        ("scope", "invalid_request", "scope_unsupported"),
        ("resource", "invalid_target", "resource_unsupported"),
    ],
)
async def test_rfc_8693_parameters_the_broker_does_not_implement_are_refused(
    client: Client, platform_token: str, field: str, error: str, reason: str
) -> None:
    body = form(
        grant_type=GRANT,
        subject_token=platform_token,
        subject_token_type=JWT_TYPE,
        audience="prod-vault",
        **{field: "https://example.com/x"},
    )
    status, reply, _ = await post(client, "/oauth2/token", body, {"Content-Type": FORM})
    assert (status, reply["error"], reply["reason"]) == (400, error, reason)
    assert [e.reason for e in await audit_events(client)] == [reason]


async def test_a_401_for_a_refused_token_carries_the_bearer_invalid_token_challenge(
    client: Client,
) -> None:
    status, _, headers = await post(client, "/v1/exchange", b"", bearer("not-a-jwt"))
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


@pytest.mark.parametrize("path", ["/v1/exchange", "/v1/admin/organizations"])
async def test_a_401_without_any_token_carries_the_bare_bearer_challenge(
    client: Client, path: str
) -> None:
    status, _, headers = await post(client, path, b"{}", {"Content-Type": "application/json"})
    assert status == 401
    assert headers["WWW-Authenticate"] == "Bearer"
