"""POST /v1/exchange end to end: dev platform issuer -> broker -> a real OpenBao dev server.

The flow of env0's Vault guide: an env0-shaped token, really signed, is exchanged through the
broker, and the VAULT_TOKEN it returns writes and reads a KV secret.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass

import aiohttp
import hvac
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from bench.procs import free_port
from pytest_aiohttp import AiohttpClient, AiohttpServer
from tests.exchange.test_replay import drop_table
from tests.fakes.vault import FakeVault, Reply
from tests.support.broker import (
    JWT_TOKEN_TYPE,
    ReservedPort,
    credential_entry,
    post_exchange,
    post_token_exchange,
)
from tests.support.openbao import OpenBaoDevServer, configure_jwt_auth, trust_env0_tokens
from tests.support.platform import ServedDevIssuer

from tokenbroker.config import parse_settings
from tokenbroker.identity.models import Identity
from tokenbroker.issuer.minting import mint_for_identity
from tokenbroker.protocol import EXPIRES_AT_HEADER, LEASE_ID_HEADER
from tokenbroker.web import keys
from tokenbroker.web.app import create_app

ORG = "66a38abf-69bc-4cb7-ad73-7f61e389079f"
OTHER_ORG = "0b9d3a7e-1111-4222-8333-444455556666"
PROJECT = "5b44fa6d-ecfd-40ab-8e69-14d6fe7c638c"
UNASSIGNED_PROJECT = "9f0e8d7c-0000-4000-8000-0000000000aa"
PROD_ENV = "9c3ca3cf-870d-4db4-9c60-5adf37faab45"
ROLE = "env0-deployer"
POLICY = "env0-access"
KV = "secrets-for-env0"
MINT_AUDIENCE = "vault-via-broker"
CREDENTIAL_BOUND_ROLE = "credential-bound"

pytestmark = pytest.mark.openbao


@dataclass
class Broker:
    """A running broker wired to a dev platform issuer and a configured OpenBao."""

    client: TestClient[web.Request, web.Application]
    issuer: ServedDevIssuer
    openbao: OpenBaoDevServer
    fake_vault: FakeVault
    mint_path: str
    gate: GatedProxy

    def token(self, *, org: str = ORG, project: str = PROJECT, **kw: object) -> str:
        return self.issuer.mint("env0", org=org, project=project, **kw)  # type: ignore[arg-type]

    async def exchange(
        self, token: str | None, credential: str | None = None, *, query: str = ""
    ) -> aiohttp.ClientResponse:
        return await post_exchange(self.client, token, credential, query=query)

    @property
    def app(self) -> web.Application:
        return self.client.server.app


class GatedProxy:
    """A proxy to OpenBao that holds each request until ``open`` is set: a Vault that answers
    only after the runner has given up."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.open = asyncio.Event()
        self.held = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._forward)
        return app

    async def _forward(self, request: web.Request) -> web.Response:
        self.held.set()
        await self.open.wait()
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method,
                self.target + request.path_qs,
                headers=headers,
                data=await request.read(),
            ) as answer,
        ):
            return web.Response(
                status=answer.status, body=await answer.read(), content_type=answer.content_type
            )


def vault_credential(name: str, address: str, path: str, **extra: object) -> dict[str, object]:
    settings = {"address": address, "role": ROLE, "auth_path": path, "timeout_seconds": 2}
    return credential_entry(name, "vault_oidc", settings, **extra)


@pytest.fixture
async def broker(
    tmp_path: object,
    dev_issuer: ServedDevIssuer,
    openbao: OpenBaoDevServer,
    aiohttp_server: AiohttpServer,
    aiohttp_client: AiohttpClient,
) -> Broker:
    suffix = uuid.uuid4().hex[:8]
    passthrough_path, mint_path = f"env0-{suffix}", f"broker-{suffix}"
    reserved = ReservedPort()
    port = reserved.port
    public_url = f"http://127.0.0.1:{port}"
    # Every call to the fake stalls: the slow Vault.
    fake_vault = FakeVault(default=Reply(stall=True))
    fake_server = await aiohttp_server(fake_vault.app())
    fake_address = str(fake_server.make_url("")).rstrip("/")
    gate = GatedProxy(openbao.address)
    gated_address = str((await aiohttp_server(gate.app())).make_url("")).rstrip("/")
    issuer = dev_issuer.issuer_settings("env0")
    settings = parse_settings(
        {
            # The backends and issuers of this test listen on loopback.
            "security": {"allow_private_backends": True},
            "server": {"data_dir": str(tmp_path), "public_url": public_url, "port": port},
            "issuers": [issuer.model_dump(mode="json")],
            "organizations": [
                {"name": "acme", "issuer": issuer.name, "platform_org_id": ORG},
            ],
            "credentials": [
                vault_credential("prod-vault", openbao.address, passthrough_path),
                vault_credential(
                    "minted-vault",
                    openbao.address,
                    mint_path,
                    token="mint",
                    audience=MINT_AUDIENCE,
                ),
                vault_credential(
                    "prod-only-vault",
                    openbao.address,
                    passthrough_path,
                    bound_claims={"environmentId": PROD_ENV, "/aud/0": "https://prod.*"},
                ),
                vault_credential(
                    "wrong-role-vault",
                    openbao.address,
                    passthrough_path,
                    settings={"role": "no-such-role"},
                ),
                vault_credential(
                    "down-vault",
                    f"http://127.0.0.1:{free_port()}",
                    "jwt",
                    settings={"max_retries": 1},
                ),
                vault_credential(
                    "slow-vault", fake_address, "jwt", settings={"timeout_seconds": 1}
                ),
                vault_credential("unassigned-vault", openbao.address, passthrough_path),
                vault_credential("gated-vault", gated_address, passthrough_path),
                vault_credential(
                    "credential-bound-vault",
                    openbao.address,
                    mint_path,
                    token="mint",
                    audience=MINT_AUDIENCE,
                    settings={"role": CREDENTIAL_BOUND_ROLE},
                ),
            ],
            "assignments": [
                {
                    "organization": "acme",
                    "project": PROJECT,
                    "credentials": [
                        "prod-vault",
                        "minted-vault",
                        "prod-only-vault",
                        "wrong-role-vault",
                        "down-vault",
                        "slow-vault",
                        "credential-bound-vault",
                        "gated-vault",
                    ],
                },
            ],
        },
        {},
    )
    server = reserved.server(create_app(settings))
    client = await aiohttp_client(server)
    await trust_env0_tokens(
        openbao,
        dev_issuer,
        passthrough_path,
        role=ROLE,
        org=ORG,
        claims={"apiKeyType": "oidc"},
        policy=POLICY,
        kv_mount=KV,
    )
    # The README's advice: a role for minted tokens binds the credential they were minted for.
    mint_roles = {
        ROLE: {"organizationId": ORG},
        CREDENTIAL_BOUND_ROLE: {"/tokenbroker/credential": "credential-bound-vault"},
    }
    for role, bound_claims in mint_roles.items():
        await asyncio.to_thread(
            configure_jwt_auth,
            openbao.client(),
            path=mint_path,
            jwks_url=f"{public_url}/.well-known/jwks.json",
            bound_issuer=public_url,
            role=role,
            bound_audiences=[MINT_AUDIENCE],
            bound_claims=bound_claims,
            policies=[POLICY],
            kv_mount=KV,
        )
    return Broker(client, dev_issuer, openbao, fake_vault, mint_path, gate)


async def assert_error(
    response: aiohttp.ClientResponse, status: int, error: str, reason: str
) -> dict[str, object]:
    body: dict[str, object] = await response.json()
    assert (response.status, body["error"], body["reason"]) == (status, error, reason), body
    assert body["request_id"] == response.headers["X-Request-Id"]
    return body


def kv_round_trip(broker: Broker, vault_token: str) -> object:
    runner = broker.openbao.client(token=vault_token)
    runner.secrets.kv.v2.create_or_update_secret(
        path="creds", secret={"password": "p4ss"}, mount_point=KV
    )
    read = runner.secrets.kv.v2.read_secret_version(
        path="creds", mount_point=KV, raise_on_deleted_version=True
    )
    return read["data"]["data"]


async def test_an_env0_token_gets_a_vault_token_that_writes_and_reads_kv(broker: Broker) -> None:
    response = await broker.exchange(broker.token(), "prod-vault")
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.json()
    assert (body["credential"], body["type"]) == ("prod-vault", "vault_oidc")
    assert body["values"]["VAULT_ADDR"] == broker.openbao.address
    assert POLICY in body["metadata"]["policies"]
    assert body["expires_at"].endswith("Z")
    assert kv_round_trip(broker, body["values"]["VAULT_TOKEN"]) == {"password": "p4ss"}


async def test_a_mint_credential_logs_in_with_a_broker_signed_token(broker: Broker) -> None:
    response = await broker.exchange(broker.token(), "minted-vault")
    assert response.status == 200, await response.text()
    body = await response.json()
    assert kv_round_trip(broker, body["values"]["VAULT_TOKEN"]) == {"password": "p4ss"}


async def test_env_and_shell_formats_carry_the_vault_values(broker: Broker) -> None:
    token = broker.token()
    env = await (await broker.exchange(token, "prod-vault", query="?format=env")).text()
    shell = await (await broker.exchange(token, "prod-vault", query="?format=shell")).text()
    env_values = dict(line.split("=", 1) for line in env.splitlines())
    assert set(env_values) == {"VAULT_ADDR", "VAULT_TOKEN", "TOKENBROKER_LEASE_ID"}
    assert env_values["TOKENBROKER_LEASE_ID"].startswith("lse_")
    assert f"export VAULT_TOKEN='{env_values['VAULT_TOKEN']}'" in shell.splitlines()
    lease = env_values["TOKENBROKER_LEASE_ID"]
    assert f"export TOKENBROKER_LEASE_ID='{lease}'" in shell.splitlines()


async def test_every_format_names_its_lease_and_expiry_in_headers(broker: Broker) -> None:
    token = broker.token()
    answer = await broker.exchange(token, "prod-vault")
    body = await answer.json()
    assert answer.headers[LEASE_ID_HEADER] == body["lease"]["id"]
    assert answer.headers[EXPIRES_AT_HEADER] == body["expires_at"]
    # A retry in the reuse window: the same lease, so the same headers, in a format whose
    # body (env lines) has no expiry at all.
    env = await broker.exchange(token, "prod-vault", query="?format=env")
    assert env.headers[LEASE_ID_HEADER] == body["lease"]["id"]
    assert env.headers[EXPIRES_AT_HEADER] == body["expires_at"]
    assert f"TOKENBROKER_LEASE_ID={body['lease']['id']}" in (await env.text()).splitlines()


async def test_a_dry_run_names_no_lease(broker: Broker) -> None:
    answer = await broker.exchange(broker.token(), "prod-vault", query="?dry_run=true")
    assert answer.status == 200
    assert LEASE_ID_HEADER not in answer.headers
    assert EXPIRES_AT_HEADER not in answer.headers


async def test_a_retry_with_the_same_token_gets_the_same_vault_token(broker: Broker) -> None:
    token = broker.token()
    first = await (await broker.exchange(token, "prod-vault")).json()
    second = await (await broker.exchange(token, "prod-vault")).json()
    other = await (await broker.exchange(broker.token(), "prod-vault")).json()
    assert first["values"]["VAULT_TOKEN"] == second["values"]["VAULT_TOKEN"]
    assert other["values"]["VAULT_TOKEN"] != first["values"]["VAULT_TOKEN"]
    events = await broker.app[keys.STORE].audit.events(credential="prod-vault")
    assert sorted(event.reason for event in events) == ["issued", "issued", "reused"]


async def test_an_issued_credential_is_logged_at_info_and_a_reused_one_at_debug(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tokenbroker.exchange.service")
    token = broker.token()
    for _ in range(2):
        assert (await broker.exchange(token, "prod-vault")).status == 200
    assert (await broker.exchange(token, "prod-only-vault")).status == 403
    decided = [
        r
        for r in caplog.records
        if r.name == "tokenbroker.exchange.service" and r.msg.startswith("exchange decided")
    ]
    assert [(getattr(r, "reason", None), r.levelno) for r in decided] == [
        ("issued", logging.INFO),
        ("reused", logging.DEBUG),
        ("bound_claims_mismatch", logging.INFO),
    ]
    # The text format shows only the message: it names the decision itself.
    assert decided[-1].getMessage() == (
        "exchange decided: denied (bound_claims_mismatch), credential prod-only-vault, "
        f"organization acme, project {PROJECT}"
    )


async def test_a_refused_exchange_logs_one_info_line_and_an_admin_refusal_its_own(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tokenbroker")
    assert (await broker.exchange("not.a-jwt.at-all", "prod-vault")).status == 401
    assert (await broker.client.get("/v1/admin/organizations")).status == 401
    lines = [(r.name, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert [name for name, _ in lines] == ["tokenbroker.exchange.service", "tokenbroker.web.errors"]
    assert lines[0][1].startswith("exchange decided: denied (token_malformed)")
    assert lines[1][1] == "request refused"


async def test_the_only_assigned_credential_needs_no_name_but_several_do(broker: Broker) -> None:
    response = await broker.exchange(broker.token(), None)
    body = await assert_error(response, 400, "invalid_request", "credential_required")
    assert "prod-vault" in str(body["error_description"])


async def test_a_token_of_another_organization_is_denied(broker: Broker) -> None:
    response = await broker.exchange(broker.token(org=OTHER_ORG), "prod-vault")
    await assert_error(response, 403, "access_denied", "organization_unknown")


async def test_a_project_without_assignments_is_denied(broker: Broker) -> None:
    response = await broker.exchange(broker.token(project=UNASSIGNED_PROJECT), "prod-vault")
    await assert_error(response, 403, "access_denied", "project_not_assigned")


async def test_a_credential_not_assigned_to_the_project_is_denied_listing_the_choices(
    broker: Broker,
) -> None:
    response = await broker.exchange(broker.token(), "unassigned-vault")
    body = await assert_error(response, 403, "access_denied", "credential_not_assigned")
    assert "prod-vault" in str(body["error_description"])


async def test_a_bound_claim_mismatch_is_denied_at_the_broker(broker: Broker) -> None:
    response = await broker.exchange(broker.token(environment="staging-env"), "prod-only-vault")
    body = await assert_error(response, 403, "access_denied", "bound_claims_mismatch")
    assert "environmentId" in str(body["error_description"])


async def test_matching_bound_claims_are_allowed(broker: Broker) -> None:
    response = await broker.exchange(broker.token(environment=PROD_ENV), "prod-only-vault")
    assert response.status == 200


async def test_a_role_mismatch_at_vault_passes_on_vaults_reason(broker: Broker) -> None:
    response = await broker.exchange(broker.token(), "wrong-role-vault")
    body = await assert_error(response, 403, "access_denied", "backend_refused")
    assert "no-such-role" in str(body["error_description"])


async def test_vault_down_is_a_502(broker: Broker) -> None:
    response = await broker.exchange(broker.token(), "down-vault")
    await assert_error(response, 502, "upstream_error", "backend_unreachable")


async def test_vault_slow_is_a_504(broker: Broker) -> None:
    response = await broker.exchange(broker.token(), "slow-vault")
    await assert_error(response, 504, "upstream_timeout", "backend_timeout")


async def test_dry_run_explains_each_check_and_calls_no_backend(broker: Broker) -> None:
    response = await broker.exchange(
        broker.token(environment="staging-env"), "slow-vault", query="?dry_run=true"
    )
    trace = await response.json()
    assert response.status == 200
    assert trace["allowed"] is True
    assert [check["check"] for check in trace["checks"]] == [
        "token",
        "identity",
        "organization",
        "assignment",
        "bound_claims",
        "credential",
        "output",
    ]
    assert broker.fake_vault.requests == []


async def test_dry_run_shows_expected_and_actual_bound_claim_values(broker: Broker) -> None:
    response = await broker.exchange(
        broker.token(environment="staging-env"), "prod-only-vault", query="?dry_run=true"
    )
    trace = await response.json()
    assert (trace["allowed"], trace["reason"]) == (False, "bound_claims_mismatch")
    bound = trace["checks"][-1]
    assert bound["ok"] is False
    by_claim = {entry["claim"]: entry for entry in bound["claims"]}
    assert by_claim["environmentId"]["expected"] == [PROD_ENV]
    assert by_claim["environmentId"]["actual"] == "staging-env"
    assert by_claim["environmentId"]["matched"] is False
    assert by_claim["/aud/0"]["matched"] is True


async def test_dry_run_of_an_unassigned_credential_lists_the_assigned_ones(
    broker: Broker,
) -> None:
    response = await broker.exchange(broker.token(), "unassigned-vault", query="?dry_run=true")
    trace = await response.json()
    assert (trace["allowed"], trace["reason"]) == (False, "credential_not_assigned")
    refused = trace["checks"][-1]
    assert (refused["check"], refused["ok"]) == ("assignment", False)
    assert refused["reason"] == "credential_not_assigned"
    assert "prod-vault" in refused["assigned"]
    assert "unassigned-vault" not in refused["assigned"]


async def test_dry_run_of_a_bad_token_names_the_failed_check(broker: Broker) -> None:
    response = await broker.exchange("not.a.jwt", "prod-vault", query="?dry_run=true")
    trace = await response.json()
    assert trace["allowed"] is False
    assert trace["checks"] == [
        {
            "check": "token",
            "ok": False,
            "detail": trace["error_description"],
            "reason": "token_malformed",
        }
    ]


async def test_no_bearer_token_is_a_401(broker: Broker) -> None:
    await assert_error(
        await broker.exchange(None, "prod-vault"), 401, "invalid_token", "token_missing"
    )


async def test_an_expired_token_is_a_401(broker: Broker) -> None:
    token = broker.token(lifetime_seconds=1, issued_at=broker.issuer.clock.now() - 3600)
    await assert_error(
        await broker.exchange(token, "prod-vault"), 401, "invalid_token", "token_expired"
    )


async def test_a_malformed_body_is_a_400(broker: Broker) -> None:
    response = await broker.client.post(
        "/v1/exchange", data=b"{nope", headers={"Authorization": f"Bearer {broker.token()}"}
    )
    await assert_error(response, 400, "invalid_request", "body_malformed")


async def test_an_oversized_body_is_a_413(broker: Broker) -> None:
    response = await broker.client.post(
        "/v1/exchange",
        data=b"{" + b" " * 70_000 + b"}",
        headers={"Authorization": f"Bearer {broker.token()}"},
    )
    body = await response.json()
    assert (response.status, body["error"]) == (413, "payload_too_large")


async def test_an_unknown_format_is_a_400(broker: Broker) -> None:
    response = await broker.exchange(broker.token(), "prod-vault", query="?format=yaml")
    await assert_error(response, 400, "invalid_request", "unknown_format")


async def test_every_decision_is_audited_without_a_secret(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = broker.token()
    ok = await (await broker.exchange(token, "prod-vault")).json()
    minted = await (await broker.exchange(token, "minted-vault")).json()
    await broker.exchange(token, "wrong-role-vault")
    await broker.exchange(token, "prod-only-vault")
    events = await broker.app[keys.STORE].audit.events()
    assert sorted((e.credential, e.outcome) for e in events) == [
        ("minted-vault", "success"),
        ("prod-only-vault", "denied"),
        ("prod-vault", "success"),
        ("wrong-role-vault", "denied"),
    ]
    assert all(e.token_fingerprint and e.token_fingerprint.startswith("sha256:") for e in events)
    secrets = [
        token,
        *token.split("."),
        ok["values"]["VAULT_TOKEN"],
        minted["values"]["VAULT_TOKEN"],
    ]
    captured = "\n".join(
        [r.getMessage() + json.dumps(vars(r), default=str) for r in caplog.records]
        + [repr(e) for e in events]
    )
    for secret in secrets:
        assert secret not in captured


async def test_metrics_count_exchanges_by_type_and_outcome(broker: Broker) -> None:
    await broker.exchange(broker.token(), "prod-vault")
    await broker.exchange(broker.token(), "wrong-role-vault")
    text = await (await broker.client.get("/metrics")).text()
    assert 'tokenbroker_exchanges_total{credential_type="vault_oidc",outcome="success"} 1.0' in text
    assert 'tokenbroker_exchanges_total{credential_type="vault_oidc",outcome="denied"} 1.0' in text
    assert "tokenbroker_backend_seconds_bucket" in text
    assert 'tokenbroker_jwks_fetches_total{issuer="dev-env0"' in text


async def test_oauth2_token_exchange_returns_the_vault_token(broker: Broker) -> None:
    response = await post_token_exchange(broker.client, broker.token(), "prod-vault")
    body = await response.json()
    assert response.status == 200, body
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert body["token_type"] == "Bearer"
    assert 0 < body["expires_in"] <= 3600 * 24 * 32
    assert kv_round_trip(broker, body["access_token"]) == {"password": "p4ss"}


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
        ({"subject_token_type": "urn:ietf:params:oauth:token-type:saml2"}, "invalid_request"),
        ({"subject_token": "not.a.jwt"}, "invalid_grant"),
        ({"audience": "unassigned-vault"}, "invalid_target"),
    ],
)
async def test_oauth2_token_errors_use_rfc_6749_codes(
    broker: Broker, form: dict[str, str], error: str
) -> None:
    data = {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": broker.token(),
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "audience": "prod-vault",
        **form,
    }
    response = await broker.client.post("/oauth2/token", data=data)
    body = await response.json()
    assert (response.status, body["error"]) == (400, error)


def token_accessors(broker: Broker) -> set[str]:
    """Every token OpenBao holds: a refused request must not add one."""
    listed = broker.openbao.client().auth.token.list_accessors()
    return set(listed["data"]["keys"])


async def last_audit(broker: Broker) -> tuple[str, str]:
    event = (await broker.app[keys.STORE].audit.events(limit=1))[0]
    return event.outcome, event.reason


async def test_a_format_the_credential_cannot_render_is_refused_before_vault_is_called(
    broker: Broker,
) -> None:
    before = token_accessors(broker)
    response = await broker.exchange(
        broker.token(), "prod-vault", query="?format=aws-credential-process"
    )
    await assert_error(response, 400, "invalid_request", "format_not_supported")
    assert token_accessors(broker) == before
    assert await last_audit(broker) == ("denied", "format_not_supported")


async def test_an_rfc_8693_token_type_that_does_not_match_is_refused_before_vault_is_called(
    broker: Broker,
) -> None:
    before = token_accessors(broker)
    response = await post_token_exchange(
        broker.client,
        broker.token(),
        "prod-vault",
        requested_token_type=JWT_TOKEN_TYPE,
    )
    await assert_error(response, 400, "invalid_request", "requested_token_type_unsupported")
    assert token_accessors(broker) == before
    assert await last_audit(broker) == ("denied", "requested_token_type_unsupported")


async def test_the_dry_run_refuses_what_the_exchange_refuses_and_for_the_same_reason(
    broker: Broker,
) -> None:
    token = broker.token()
    query = "?format=aws-credential-process"
    trace = await (await broker.exchange(token, "prod-vault", query=query + "&dry_run=1")).json()
    real = await (await broker.exchange(token, "prod-vault", query=query)).json()
    assert trace["allowed"] is False
    assert trace["checks"][-1]["check"] == "output"
    assert trace["reason"] == real["reason"] == "format_not_supported"


@pytest.mark.parametrize("value", ["on", "yes", "TRUE", ""])
async def test_dry_run_takes_only_true_false_1_or_0(broker: Broker, value: str) -> None:
    before = token_accessors(broker)
    response = await broker.exchange(broker.token(), "prod-vault", query=f"?dry_run={value}")
    await assert_error(response, 400, "invalid_request", "query_invalid")
    assert token_accessors(broker) == before


async def test_a_token_that_claims_to_live_for_ages_is_refused(broker: Broker) -> None:
    token = broker.token(claims={"exp": 10**30})
    response = await broker.exchange(token, "prod-vault")
    await assert_error(response, 401, "invalid_token", "token_lifetime_too_long")


async def test_an_unwritable_audit_issues_nothing_and_revokes_what_vault_issued(
    broker: Broker,
) -> None:
    settings = broker.app[keys.SETTINGS]
    before = token_accessors(broker)
    # The audit table disappears under the running broker: every write of it now fails.
    await drop_table(settings.server.data_dir / "tokenbroker.db", "audit_events")
    response = await broker.exchange(broker.token(), "prod-vault")
    await assert_error(response, 503, "temporarily_unavailable", "audit_unavailable")
    assert response.headers["Retry-After"].isdigit()
    # OpenBao did log in (a token was created), and the broker revoked it again.
    assert token_accessors(broker) == before
    ready = await broker.client.get("/readyz")
    body = await ready.json()
    assert (ready.status, body["checks"]["audit"], body["checks"]["store"]) == (
        503,
        "failing: OperationalError",
        "ok",
    )


async def test_a_credential_revoked_through_the_broker_is_never_handed_out_again(
    broker: Broker,
) -> None:
    token = broker.token()
    first = await (await broker.exchange(token, "prod-vault")).json()
    revoked = await broker.client.post(
        "/v1/leases/revoke", json={"job": True}, headers={"Authorization": f"Bearer {token}"}
    )
    answer = await revoked.json()
    assert (revoked.status, answer["not_revocable"]) == (200, [])
    assert answer["revoked"] == [
        {"id": first["lease"]["id"], "credential": "prod-vault", "type": "vault_oidc"}
    ]
    old = first["values"]["VAULT_TOKEN"]
    with pytest.raises(hvac.exceptions.Forbidden):
        broker.openbao.client(token=old).auth.token.lookup_self()
    again = await (await broker.exchange(token, "prod-vault")).json()
    assert again["values"]["VAULT_TOKEN"] != old
    assert kv_round_trip(broker, again["values"]["VAULT_TOKEN"]) == {"password": "p4ss"}
    assert await last_audit(broker) == ("success", "issued")


async def test_a_vault_role_bound_to_its_credential_refuses_a_token_minted_for_another(
    broker: Broker,
) -> None:
    # The token a runner could hold from another mint credential with the same audience.
    token = broker.token()
    bound = await (await broker.exchange(token, "credential-bound-vault")).json()
    assert kv_round_trip(broker, bound["values"]["VAULT_TOKEN"]) == {"password": "p4ss"}
    identity = Identity(issuer="dev-env0", org=ORG, project=PROJECT, subject="auth0|someone")
    for_another = mint_for_identity(
        broker.app[keys.KEYRING],
        identity,
        issuer_url=broker.app[keys.SETTINGS].server.issuer_url,
        audience=MINT_AUDIENCE,
        lifetime_seconds=300,
        clock=broker.app[keys.CLOCK],
        context={"credential": "dev-oidc"},
    )
    with pytest.raises(hvac.exceptions.InvalidRequest, match="claim"):
        broker.openbao.client(token=None).auth.jwt.jwt_login(
            role=CREDENTIAL_BOUND_ROLE, jwt=for_another, path=broker.mint_path
        )


async def test_a_credential_issued_after_the_runner_hung_up_is_revoked(broker: Broker) -> None:
    before = token_accessors(broker)
    token = broker.token()
    with pytest.raises(asyncio.TimeoutError):
        await broker.client.post(
            "/v1/exchange",
            json={"credential": "gated-vault"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=0.5),
        )
    assert broker.gate.held.is_set()
    broker.gate.open.set()
    store = broker.app[keys.STORE]
    deadline = asyncio.get_running_loop().time() + 15
    lease = None
    while asyncio.get_running_loop().time() < deadline:
        leases = await store.leases.listing(filters={"credential": "gated-vault"})
        lease = leases[0] if leases else None
        if lease is not None and lease.state == "revoked":
            break
        await asyncio.sleep(0.05)  # polling the broker's own progress, bounded by the deadline
    assert lease is not None
    assert (lease.state, lease.revoked_by) == ("revoked", "broker")
    assert lease.revoke_reason == "the answer never reached the runner"
    # OpenBao did log in; the token it made was revoked again.
    assert token_accessors(broker) == before
