"""The vault_oidc backend against a real OpenBao dev server, and a scripted fake for the rest."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace

import aiohttp
import hvac
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError
from pytest_aiohttp import AiohttpServer

from tests.backends.contract import BackendContract, ContractCase
from tests.fakes.jwks import JwksServer
from tests.fakes.vault import FakeVault, Reply, vault_errors
from tests.support.openbao import (
    OpenBaoDevServer,
    configure_jwt_auth,
    create_namespace,
    trust_env0_tokens,
)
from tests.support.platform import ServedDevIssuer
from tokenbroker.backends.base import BackendContext, IssuedCredential, RevocableBackend
from tokenbroker.backends.vault import VaultOidcBackend, VaultOidcSettings, redact
from tokenbroker.clock import FrozenClock
from tokenbroker.devstack.platform_issuer import DevPlatformIssuer
from tokenbroker.errors import AccessDenied, UpstreamError, UpstreamTimeout
from tokenbroker.identity.models import Identity
from tokenbroker.identity.profiles.env0 import AUDIENCE as ENV0_AUDIENCE

ORG = "66a38abf-69bc-4cb7-ad73-7f61e389079f"
OTHER_ORG = "0b1c2d3e-0000-4000-8000-000000000000"
PROJECT = "5b44fa6d-ecfd-40ab-8e69-14d6fe7c638c"
ROLE = "env0-deployer"
AUTH_PATH = "ci/env0"
KV_MOUNT = "secrets-for-env0"
POLICY = "env0-access"
NAMESPACE = "team-a"
NOW = 1_800_000_000.0
IDENTITY = Identity(issuer="env0", org=ORG, project=PROJECT, subject="auth0|63021f2ce98a11d0")

pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")


# --- fixtures -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VaultSetup:
    """A configured JWT auth mount on a server: what a vault_oidc credential points at."""

    server: OpenBaoDevServer
    namespace: str | None = None

    def settings(self, **overrides: object) -> VaultOidcSettings:
        data: dict[str, object] = {
            "address": self.server.address,
            "role": ROLE,
            "auth_path": AUTH_PATH,
            "namespace": self.namespace,
            "timeout_seconds": 5,
        }
        if self.server.ca_cert_pem:
            data["ca_cert"] = self.server.ca_cert_pem
        return VaultOidcSettings.model_validate({**data, **overrides})

    def client(self, token: str | None = None) -> hvac.Client:
        return self.server.client(token=token, namespace=self.namespace)


def _configure(client: hvac.Client, platform: DevPlatformIssuer, jwks_url: str) -> None:
    configure_jwt_auth(
        client,
        path=AUTH_PATH,
        jwks_url=jwks_url,
        bound_issuer=platform.issuer_url("env0"),
        role=ROLE,
        bound_audiences=[ENV0_AUDIENCE],
        bound_claims={"organizationId": ORG, "apiKeyType": "oidc"},
        policies=[POLICY],
        kv_mount=KV_MOUNT,
    )


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> DevPlatformIssuer:
    """The dev platform issuer (real RSA keys, env0-shaped tokens) for the whole session."""
    return DevPlatformIssuer(tmp_path_factory.mktemp("platform-keys"))


@pytest.fixture(scope="session")
def platform_jwks(platform: DevPlatformIssuer) -> Iterator[JwksServer]:
    """The dev issuer's env0 JWKS, served from a thread for the session-scoped OpenBao."""
    with JwksServer(platform.public_jwks("env0")) as server:
        yield server


@pytest.fixture(scope="session")
def vault(
    openbao: OpenBaoDevServer, platform: DevPlatformIssuer, platform_jwks: JwksServer
) -> VaultSetup:
    """env0's Vault guide on the shared OpenBao: JWT auth at a custom path, role, KV, policy."""
    _configure(openbao.client(), platform, platform_jwks.url)
    return VaultSetup(openbao)


@pytest.fixture(scope="session")
def vault_in_namespace(
    openbao: OpenBaoDevServer, platform: DevPlatformIssuer, platform_jwks: JwksServer
) -> VaultSetup:
    """The same set-up inside an OpenBao namespace."""
    create_namespace(openbao.client(), NAMESPACE)
    _configure(openbao.client(namespace=NAMESPACE), platform, platform_jwks.url)
    return VaultSetup(openbao, NAMESPACE)


@pytest.fixture(scope="session")
def vault_over_tls(
    openbao_tls: OpenBaoDevServer, platform: DevPlatformIssuer, platform_jwks: JwksServer
) -> VaultSetup:
    """The set-up on an OpenBao that serves TLS with its own CA."""
    _configure(openbao_tls.client(), platform, platform_jwks.url)
    return VaultSetup(openbao_tls)


@pytest.fixture
def env0_token(platform: DevPlatformIssuer) -> str:
    """A validly signed env0-shaped token of the organization the role is bound to."""
    return platform.mint("env0", org=ORG, project=PROJECT)


@pytest.fixture
def other_org_token(platform: DevPlatformIssuer) -> str:
    """A validly signed env0-shaped token of another organization."""
    return platform.mint("env0", org=OTHER_ORG, project=PROJECT)


@dataclass
class Calls:
    """What the backend's session did: request attempts and backoff sleeps."""

    attempts: int = 0
    sleeps: list[float] | None = None


@pytest.fixture
def calls() -> Calls:
    return Calls(sleeps=[])


@pytest.fixture
async def http(calls: Calls) -> AsyncIterator[aiohttp.ClientSession]:
    """The shared session, counting every request attempt (including ones that cannot connect)."""

    async def count(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        calls.attempts += 1

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(count)
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        yield session


@pytest.fixture
def backend(http: aiohttp.ClientSession, calls: Calls) -> VaultOidcBackend:
    """The backend with a frozen clock; backoff sleeps are recorded instead of slept."""

    async def record_sleep(seconds: float) -> None:
        assert calls.sleeps is not None
        calls.sleeps.append(seconds)

    return VaultOidcBackend(BackendContext(http, FrozenClock(NOW)), sleep=record_sleep)


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fake_settings(server: object, **overrides: object) -> VaultOidcSettings:
    url = str(server.make_url("")).rstrip("/")  # type: ignore[attr-defined]
    data: dict[str, object] = {"address": url, "role": ROLE, "auth_path": AUTH_PATH}
    return VaultOidcSettings.model_validate({**data, **overrides})


def _self_signed_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "test ca")])
    now = datetime.now(tz=UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now.replace(year=now.year + 1))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


# --- real OpenBao -------------------------------------------------------------------------------


@pytest.mark.openbao
async def test_env0_token_logs_in_and_the_vault_token_writes_and_reads_kv(
    backend: VaultOidcBackend, vault: VaultSetup, env0_token: str
) -> None:
    credential = await backend.exchange(IDENTITY, env0_token, vault.settings())

    assert set(credential.values) == {"VAULT_ADDR", "VAULT_TOKEN"}
    assert credential.values["VAULT_ADDR"] == vault.server.address
    runner = vault.client(credential.values["VAULT_TOKEN"])
    runner.secrets.kv.v2.create_or_update_secret(
        path="creds", secret={"password": "s3cret"}, mount_point=KV_MOUNT
    )
    read = runner.secrets.kv.v2.read_secret_version(
        path="creds", mount_point=KV_MOUNT, raise_on_deleted_version=True
    )
    assert read["data"]["data"] == {"password": "s3cret"}


@pytest.mark.openbao
async def test_login_reports_lease_policies_and_accessor_and_expiry_from_the_clock(
    backend: VaultOidcBackend, vault: VaultSetup, env0_token: str
) -> None:
    credential = await backend.exchange(IDENTITY, env0_token, vault.settings())

    lease = credential.metadata["lease_duration"]
    assert isinstance(lease, int)
    assert lease > 0
    assert credential.expires_at == datetime.fromtimestamp(NOW + lease, tz=UTC)
    assert POLICY in credential.metadata["policies"]  # type: ignore[operator]
    assert credential.metadata["renewable"] is True
    assert credential.metadata["accessor"]
    assert credential.metadata["entity_id"]
    assert credential.revocation_handle == credential.values["VAULT_TOKEN"]
    looked_up = vault.client(credential.values["VAULT_TOKEN"]).auth.token.lookup_self()
    assert looked_up["data"]["accessor"] == credential.metadata["accessor"]


@pytest.mark.openbao
async def test_login_in_a_namespace_gives_vault_namespace_and_a_token_working_there(
    backend: VaultOidcBackend, vault_in_namespace: VaultSetup, env0_token: str
) -> None:
    credential = await backend.exchange(IDENTITY, env0_token, vault_in_namespace.settings())

    assert credential.values["VAULT_NAMESPACE"] == NAMESPACE
    runner = vault_in_namespace.client(credential.values["VAULT_TOKEN"])
    runner.secrets.kv.v2.create_or_update_secret(
        path="ns-creds", secret={"k": "v"}, mount_point=KV_MOUNT
    )
    read = runner.secrets.kv.v2.read_secret_version(
        path="ns-creds", mount_point=KV_MOUNT, raise_on_deleted_version=True
    )
    assert read["data"]["data"] == {"k": "v"}


@pytest.mark.openbao
async def test_vault_trusts_the_dev_issuer_served_on_the_tests_own_loop(
    backend: VaultOidcBackend, openbao: OpenBaoDevServer, dev_issuer: ServedDevIssuer
) -> None:
    path = f"dev-issuer-{uuid.uuid4().hex[:8]}"
    await trust_env0_tokens(
        openbao,
        dev_issuer,
        path,
        role=ROLE,
        org=ORG,
        claims={"apiKeyType": "oidc"},
        policy=POLICY,
        kv_mount=KV_MOUNT,
    )
    token = dev_issuer.mint("env0", org=ORG, project=PROJECT)
    settings = VaultSetup(openbao).settings(auth_path=path)

    credential = await backend.exchange(IDENTITY, token, settings)

    assert credential.values["VAULT_TOKEN"]


@pytest.mark.openbao
async def test_bound_claim_mismatch_at_vault_is_access_denied_with_vaults_reason(
    backend: VaultOidcBackend, vault: VaultSetup, other_org_token: str
) -> None:
    with pytest.raises(AccessDenied) as raised:
        await backend.exchange(IDENTITY, other_org_token, vault.settings())

    assert raised.value.reason == "backend_refused"
    assert 'claim "organizationId" does not match' in raised.value.description
    assert repr(ROLE) in raised.value.description


@pytest.mark.openbao
async def test_unknown_role_at_vault_is_access_denied_naming_the_role(
    backend: VaultOidcBackend, vault: VaultSetup, env0_token: str
) -> None:
    with pytest.raises(AccessDenied) as raised:
        await backend.exchange(IDENTITY, env0_token, vault.settings(role="no-such-role"))

    assert raised.value.reason == "backend_refused"
    assert "no-such-role" in raised.value.description


@pytest.mark.openbao
async def test_revoke_really_revokes_the_vault_token(
    backend: VaultOidcBackend, vault: VaultSetup, env0_token: str
) -> None:
    settings = vault.settings()
    credential = await backend.exchange(IDENTITY, env0_token, settings)
    runner = vault.client(credential.values["VAULT_TOKEN"])
    runner.auth.token.lookup_self()

    await backend.revoke(credential, settings)

    with pytest.raises(hvac.exceptions.Forbidden):
        runner.auth.token.lookup_self()


@pytest.mark.openbao
async def test_tls_vault_is_verified_against_the_credentials_ca_cert(
    backend: VaultOidcBackend, vault_over_tls: VaultSetup, env0_token: str
) -> None:
    credential = await backend.exchange(IDENTITY, env0_token, vault_over_tls.settings())

    assert vault_over_tls.client(credential.values["VAULT_TOKEN"]).auth.token.lookup_self()


@pytest.mark.openbao
async def test_tls_vault_with_an_untrusted_certificate_is_refused_without_retrying(
    backend: VaultOidcBackend, vault_over_tls: VaultSetup, env0_token: str, calls: Calls
) -> None:
    settings = vault_over_tls.settings(ca_cert=_self_signed_pem())

    with pytest.raises(UpstreamError) as raised:
        await backend.exchange(IDENTITY, env0_token, settings)

    assert raised.value.reason == "backend_unreachable"
    assert "TLS" in raised.value.description
    assert calls.attempts == 1


@pytest.mark.openbao
async def test_no_token_appears_in_logs_or_errors_of_a_login_and_a_refusal(
    backend: VaultOidcBackend,
    vault: VaultSetup,
    env0_token: str,
    other_org_token: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    credential = await backend.exchange(IDENTITY, env0_token, vault.settings())
    with pytest.raises(AccessDenied) as raised:
        await backend.exchange(IDENTITY, other_org_token, vault.settings())

    vault_token = credential.values["VAULT_TOKEN"]
    texts = [record.getMessage() for record in caplog.records]
    texts += [str(record.args) for record in caplog.records]
    texts += [repr(credential), str(raised.value), repr(raised.value)]
    assert caplog.records  # the backend does log; none of it is secret
    for secret in (env0_token, other_org_token, vault_token, *other_org_token.split(".")):
        assert all(secret not in text for text in texts)


class TestVaultContract(BackendContract):
    """The backend contract, against the real OpenBao."""

    @pytest.fixture
    def contract_case(
        self,
        backend: VaultOidcBackend,
        vault: VaultSetup,
        env0_token: str,
        other_org_token: str,
    ) -> ContractCase:
        data = vault.settings().model_dump(exclude_none=True)
        return ContractCase(
            backend=backend,
            settings_data=data,
            identity=IDENTITY,
            accepted_token=env0_token,
            refused_token=other_org_token,
            unreachable_settings_data={
                **data,
                "address": f"http://127.0.0.1:{_unused_port()}",
                "timeout_seconds": 2,
            },
            timeout_seconds=2,
            now=NOW,
            revocable=True,
        )


# --- scripted fake: what a real server cannot be made to do ---------------------------------------


async def test_login_posts_role_and_jwt_to_the_auth_path_without_namespace_header(
    aiohttp_server: AiohttpServer, backend: VaultOidcBackend, env0_token: str
) -> None:
    fake = FakeVault()
    server = await aiohttp_server(fake.app())

    credential = await backend.exchange(IDENTITY, env0_token, _fake_settings(server))

    (request,) = fake.requests
    assert (request.method, request.path) == ("POST", f"/v1/auth/{AUTH_PATH}/login")
    assert request.body == {"role": ROLE, "jwt": env0_token}
    assert "X-Vault-Namespace" not in request.headers
    assert "X-Vault-Token" not in request.headers
    assert "VAULT_NAMESPACE" not in credential.values


async def test_namespace_is_sent_as_the_x_vault_namespace_header(
    aiohttp_server: AiohttpServer, backend: VaultOidcBackend, env0_token: str
) -> None:
    fake = FakeVault()
    server = await aiohttp_server(fake.app())

    credential = await backend.exchange(
        IDENTITY, env0_token, _fake_settings(server, namespace="/admin/team-a/")
    )

    assert fake.requests[0].headers["X-Vault-Namespace"] == "admin/team-a"
    assert credential.values["VAULT_NAMESPACE"] == "admin/team-a"


async def test_vault_down_is_upstream_error_after_the_configured_retries(
    backend: VaultOidcBackend, env0_token: str, calls: Calls
) -> None:
    settings = VaultOidcSettings(
        address=f"http://127.0.0.1:{_unused_port()}", role=ROLE, max_retries=3, timeout_seconds=2
    )
    started = time.monotonic()

    with pytest.raises(UpstreamError) as raised:
        await backend.exchange(IDENTITY, env0_token, settings)

    assert time.monotonic() - started < settings.timeout_seconds
    assert raised.value.reason == "backend_unreachable"
    assert calls.attempts == 4
    assert calls.sleeps is not None
    assert len(calls.sleeps) == 3


async def test_vault_down_with_no_retries_is_tried_once(
    backend: VaultOidcBackend, env0_token: str, calls: Calls
) -> None:
    settings = VaultOidcSettings(
        address=f"http://127.0.0.1:{_unused_port()}", role=ROLE, max_retries=0
    )

    with pytest.raises(UpstreamError):
        await backend.exchange(IDENTITY, env0_token, settings)

    assert calls.attempts == 1


async def test_slow_vault_is_upstream_timeout_and_not_retried(
    aiohttp_server: AiohttpServer, backend: VaultOidcBackend, env0_token: str
) -> None:
    fake = FakeVault(default=Reply(stall=True))
    server = await aiohttp_server(fake.app())
    settings = _fake_settings(server, timeout_seconds=1.0, max_retries=3)
    started = time.monotonic()

    with pytest.raises(UpstreamTimeout) as raised:
        await backend.exchange(IDENTITY, env0_token, settings)

    assert time.monotonic() - started < 2
    assert raised.value.reason == "backend_timeout"
    assert len(fake.requests) == 1


async def test_412_then_200_is_retried_and_succeeds(
    aiohttp_server: AiohttpServer, backend: VaultOidcBackend, env0_token: str, calls: Calls
) -> None:
    fake = FakeVault([vault_errors(412, "required index state not present")])
    server = await aiohttp_server(fake.app())

    credential = await backend.exchange(IDENTITY, env0_token, _fake_settings(server))

    assert credential.values["VAULT_TOKEN"] == "s.FakeClientTokenValue0000000000"
    assert len(fake.requests) == 2
    assert calls.sleeps is not None
    assert len(calls.sleeps) == 1


async def test_5xx_is_retried_then_backend_unavailable_with_vaults_reason(
    aiohttp_server: AiohttpServer, backend: VaultOidcBackend, env0_token: str
) -> None:
    fake = FakeVault(default=vault_errors(503, "Vault is sealed"))
    server = await aiohttp_server(fake.app())

    with pytest.raises(UpstreamError) as raised:
        await backend.exchange(IDENTITY, env0_token, _fake_settings(server, max_retries=2))

    assert raised.value.reason == "backend_unavailable"
    assert "Vault is sealed" in raised.value.description
    assert len(fake.requests) == 3


async def test_backoff_grows_with_jitter_between_retries(
    aiohttp_server: AiohttpServer, backend: VaultOidcBackend, env0_token: str, calls: Calls
) -> None:
    fake = FakeVault(default=Reply(500))
    server = await aiohttp_server(fake.app())

    with pytest.raises(UpstreamError):
        await backend.exchange(IDENTITY, env0_token, _fake_settings(server, max_retries=4))

    assert calls.sleeps is not None
    steps = [0.2, 0.4, 0.8, 1.6]
    assert len(calls.sleeps) == len(steps)
    for slept, step in zip(calls.sleeps, steps, strict=True):
        assert step / 2 <= slept <= step


async def test_400_is_access_denied_and_not_retried(
    aiohttp_server: AiohttpServer, backend: VaultOidcBackend, env0_token: str
) -> None:
    fake = FakeVault([vault_errors(400, "error validating token: invalid audience (aud) claim")])
    server = await aiohttp_server(fake.app())

    with pytest.raises(AccessDenied) as raised:
        await backend.exchange(IDENTITY, env0_token, _fake_settings(server))

    assert "invalid audience (aud) claim" in raised.value.description
    assert len(fake.requests) == 1


async def test_403_is_access_denied(
    aiohttp_server: AiohttpServer, backend: VaultOidcBackend, env0_token: str
) -> None:
    fake = FakeVault([vault_errors(403, "permission denied")])
    server = await aiohttp_server(fake.app())

    with pytest.raises(AccessDenied) as raised:
        await backend.exchange(IDENTITY, env0_token, _fake_settings(server))

    assert raised.value.reason == "backend_refused"


async def test_other_4xx_is_backend_error_and_not_retried(
    aiohttp_server: AiohttpServer, backend: VaultOidcBackend, env0_token: str
) -> None:
    fake = FakeVault([vault_errors(404, "no handler for route")])
    server = await aiohttp_server(fake.app())

    with pytest.raises(UpstreamError) as raised:
        await backend.exchange(IDENTITY, env0_token, _fake_settings(server))

    assert raised.value.reason == "backend_error"
    assert "404" in raised.value.description
    assert len(fake.requests) == 1


async def test_a_redirect_is_not_followed(
    aiohttp_server: AiohttpServer, backend: VaultOidcBackend, env0_token: str
) -> None:
    fake = FakeVault([Reply(307, headers={"Location": "http://127.0.0.1:9/v1/auth/x/login"})])
    server = await aiohttp_server(fake.app())

    with pytest.raises(UpstreamError) as raised:
        await backend.exchange(IDENTITY, env0_token, _fake_settings(server))

    # A bare redirect is not an answer only Vault gives: it gets the "no Vault" answer.
    assert raised.value.reason == "backend_unreachable"
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    "reply",
    [
        Reply(200, raw=b"<html>proxy says hi</html>"),
        Reply(200, {"auth": None, "errors": []}),
        Reply(200, {"auth": {"client_token": "", "lease_duration": 60}}),
        Reply(200, {"auth": {"client_token": "s.x", "lease_duration": "soon"}}),
    ],
    ids=["not-json", "no-auth", "empty-client-token", "bad-lease"],
)
async def test_a_malformed_login_answer_is_told_apart_from_no_vault_at_all(
    aiohttp_server: AiohttpServer, backend: VaultOidcBackend, env0_token: str, reply: Reply
) -> None:
    server = await aiohttp_server(FakeVault([reply]).app())

    with pytest.raises(UpstreamError) as raised:
        await backend.exchange(IDENTITY, env0_token, _fake_settings(server))

    assert raised.value.reason == "backend_unreachable"


async def test_an_oversized_answer_is_told_apart_from_no_vault_at_all(
    aiohttp_server: AiohttpServer, backend: VaultOidcBackend, env0_token: str
) -> None:
    server = await aiohttp_server(FakeVault([Reply(200, raw=b" " * (2 * 1024 * 1024))]).app())

    with pytest.raises(UpstreamError) as raised:
        await backend.exchange(IDENTITY, env0_token, _fake_settings(server))

    assert raised.value.reason == "backend_unreachable"


async def test_vaults_reason_never_echoes_the_jwt_or_a_vault_token(
    aiohttp_server: AiohttpServer,
    backend: VaultOidcBackend,
    env0_token: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    payload = env0_token.split(".")[1]
    fake = FakeVault(
        [
            vault_errors(
                400,
                f"token {env0_token} is bad",
                f"payload {payload} and hvs.CAESIJ1v2Kq8ZmN3pQr7sTuVwXyZ echoed",
                "x" * 5000,
            )
        ]
    )
    server = await aiohttp_server(fake.app())

    with pytest.raises(AccessDenied) as raised:
        await backend.exchange(IDENTITY, env0_token, _fake_settings(server))

    texts = [raised.value.description, str(raised.value), repr(raised.value)]
    texts += [record.getMessage() for record in caplog.records]
    for text in texts:
        assert env0_token not in text
        assert payload not in text
        assert "hvs.CAESIJ1v2Kq8ZmN3pQr7sTuVwXyZ" not in text
    assert "token [redacted] is bad" in raised.value.description
    assert len(raised.value.description) <= 600


async def test_revoke_posts_revoke_self_with_the_token_and_namespace(
    aiohttp_server: AiohttpServer, backend: VaultOidcBackend
) -> None:
    fake = FakeVault(default=Reply(204))
    server = await aiohttp_server(fake.app())
    credential = IssuedCredential(
        values={}, expires_at=datetime.now(tz=UTC), revocation_handle="s.TokenToRevoke000000"
    )

    await backend.revoke(credential, _fake_settings(server, namespace="team-a"))

    (request,) = fake.requests
    assert (request.method, request.path) == ("POST", "/v1/auth/token/revoke-self")
    assert request.headers["X-Vault-Token"] == "s.TokenToRevoke000000"
    assert request.headers["X-Vault-Namespace"] == "team-a"


async def test_revoke_of_a_credential_without_a_handle_is_refused(
    backend: VaultOidcBackend,
) -> None:
    credential = IssuedCredential(values={}, expires_at=datetime.now(tz=UTC))
    settings = VaultOidcSettings(address="https://vault.example.com", role=ROLE)

    with pytest.raises(ValueError, match="no Vault token"):
        await backend.revoke(credential, settings)


def test_the_backend_is_a_revocable_backend(backend: VaultOidcBackend) -> None:
    assert isinstance(backend, RevocableBackend)
    assert VaultOidcBackend.settings_model is VaultOidcSettings


# --- pure parts ---------------------------------------------------------------------------------


def test_redact_removes_jwts_their_segments_vault_tokens_and_long_blobs() -> None:
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    text = (
        f"a {jwt} b eyJzdWIiOiJ4In0 c s.AbCdEfGhIjKlMnOpQrSt d {'Z' * 80} "
        'e claim "organizationId" does not match'
    )

    redacted = redact(text)

    assert "eyJ" not in redacted
    assert "s.AbCdEfGhIjKlMnOpQrSt" not in redacted
    assert "Z" * 80 not in redacted
    assert 'claim "organizationId" does not match' in redacted


def test_redact_removes_the_given_secret_even_when_not_jwt_shaped() -> None:
    assert "opaque-secret-123" not in redact("got opaque-secret-123 here", ["opaque-secret-123"])


# --- settings -----------------------------------------------------------------------------------


def test_settings_defaults_follow_env0s_form() -> None:
    settings = VaultOidcSettings(address="https://vault.example.com:8200/", role=ROLE)

    assert settings.address == "https://vault.example.com:8200"
    assert settings.auth_path == "jwt"
    assert settings.namespace is None
    assert settings.tls_verify is True
    assert (settings.timeout_seconds, settings.max_retries) == (10, 2)


def test_settings_refuse_to_turn_tls_verification_off() -> None:
    with pytest.raises(ValidationError, match="give the Vault server's CA as ca_cert"):
        VaultOidcSettings(address="https://vault.example.com", role=ROLE, tls_verify=False)


@pytest.mark.parametrize(
    "address",
    ["http://vault.example.com:8200", "ftp://vault.example.com", "https://u:p@vault.example.com"],
)
def test_settings_refuse_untrusted_addresses(address: str) -> None:
    with pytest.raises(ValidationError):
        VaultOidcSettings(address=address, role=ROLE)


def test_settings_accept_http_on_loopback() -> None:
    assert VaultOidcSettings(address="http://127.0.0.1:8200", role=ROLE).address.startswith("http:")


@pytest.mark.parametrize("auth_path", ["", "/", "a/../b", "a b", "jwt?x=1", "a//b", "jwt%2F"])
def test_settings_refuse_bad_auth_paths(auth_path: str) -> None:
    with pytest.raises(ValidationError):
        VaultOidcSettings(address="https://vault.example.com", role=ROLE, auth_path=auth_path)


def test_settings_strip_slashes_from_auth_path() -> None:
    settings = VaultOidcSettings(address="https://v.example.com", role=ROLE, auth_path="/ci/env0/")
    assert settings.auth_path == "ci/env0"


@pytest.mark.parametrize("role", ["", "a/b", "role with space", "x" * 300])
def test_settings_refuse_bad_role_names(role: str) -> None:
    with pytest.raises(ValidationError):
        VaultOidcSettings(address="https://vault.example.com", role=role)


def test_settings_accept_a_pem_ca_bundle_and_refuse_garbage() -> None:
    pem = _self_signed_pem()
    assert VaultOidcSettings(address="https://v.example.com", role=ROLE, ca_cert=pem).ca_cert
    with pytest.raises(ValidationError, match="PEM"):
        VaultOidcSettings(address="https://v.example.com", role=ROLE, ca_cert="not a cert")


@pytest.mark.parametrize(
    "overrides",
    [{"max_retries": 6}, {"max_retries": -1}, {"timeout_seconds": 0}, {"timeout_seconds": 1e6}],
)
def test_settings_bound_retries_and_timeout(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        VaultOidcSettings.model_validate(
            {"address": "https://v.example.com", "role": ROLE, **overrides}
        )


def test_settings_reject_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        VaultOidcSettings.model_validate(
            {"address": "https://v.example.com", "role": ROLE, "token": "x"}
        )


async def _refusal(backend: VaultOidcBackend, token: str, address: str) -> tuple[str, str]:
    with pytest.raises(UpstreamError) as raised:
        await backend.exchange(IDENTITY, token, VaultOidcSettings(address=address, role=ROLE))
    return raised.value.reason, raised.value.description.replace(address, "<address>")


async def test_nothing_listening_and_something_that_is_not_vault_get_the_same_answer(
    aiohttp_server: AiohttpServer, backend: VaultOidcBackend, env0_token: str
) -> None:
    # An address pointed at each port of a host must not tell which are open or what serves.
    async def redis_like(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"-ERR unknown command 'POST', with args beginning with: '/v1/auth'\r\n")
        await writer.drain()
        writer.close()

    not_vault_tcp = await asyncio.start_server(redis_like, "127.0.0.1", 0)
    tcp_port = not_vault_tcp.sockets[0].getsockname()[1]
    html_404 = await aiohttp_server(FakeVault([Reply(404, raw=b"<html>nope</html>")] * 5).app())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    try:
        answers = {
            await _refusal(backend, env0_token, address)
            for address in (
                f"http://127.0.0.1:{closed_port}",
                f"http://127.0.0.1:{tcp_port}",
                str(html_404.make_url("")).rstrip("/"),
            )
        }
    finally:
        not_vault_tcp.close()
        await not_vault_tcp.wait_closed()
    assert answers == {
        ("backend_unreachable", "no Vault answered at <address>; check the credential's address")
    }
