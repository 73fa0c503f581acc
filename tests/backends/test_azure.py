"""The azure_oidc backend: settings, Entra's errors, a scripted fake, and the Entra stand-in."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from bench.procs import free_port
from pydantic import ValidationError

from tests.backends.conftest import SleepRecorder
from tests.backends.contract import BackendContract, ContractCase
from tests.support.entra import (
    ARM_SCOPE,
    CLIENT_ID,
    ORG,
    OTHER_CLIENT_ID,
    PROJECT,
    SUBJECT,
    SUBSCRIPTION_ID,
    TENANT_ID,
    EntraReply,
    RunningEntra,
    ScriptedEntra,
    StartEntra,
    entra_error,
    env0_assertion,
    start_trusting_env0,
)
from tests.support.platform import ServedDevIssuer
from tokenbroker.backends.azure import (
    AzureOidcBackend,
    AzureOidcSettings,
    map_entra_error,
)
from tokenbroker.backends.base import BackendContext, traits_of
from tokenbroker.clock import FrozenClock
from tokenbroker.config.urls import url_context
from tokenbroker.errors import (
    AccessDenied,
    InvalidRequest,
    TemporarilyUnavailable,
    UpstreamError,
    UpstreamTimeout,
)
from tokenbroker.identity.models import Identity
from tokenbroker.retry import TransientFailure

IDENTITY = Identity(issuer="env0", org=ORG, project=PROJECT, subject=SUBJECT)


@pytest.fixture
def backend(
    http: aiohttp.ClientSession, clock: FrozenClock, sleeps: SleepRecorder
) -> AzureOidcBackend:
    """An Azure backend on the shared session and the frozen clock."""
    return AzureOidcBackend(BackendContext(http=http, clock=clock), sleep=sleeps)


def settings_for(authority_host: str, **overrides: object) -> AzureOidcSettings:
    """Settings of the test application at an authority host."""
    data: dict[str, object] = {
        "tenant_id": TENANT_ID,
        "client_id": CLIENT_ID,
        "authority_host": authority_host,
        **overrides,
    }
    return AzureOidcSettings.model_validate(data)


@pytest.fixture
async def stand_in(
    entra: StartEntra, dev_issuer: ServedDevIssuer, clock: FrozenClock
) -> RunningEntra:
    """The Entra stand-in, its application trusting the dev env0 issuer's SUBJECT."""
    return await start_trusting_env0(entra, dev_issuer, clock)


# --- settings ----------------------------------------------------------------------------------


def test_settings_default_to_arm_the_public_cloud_and_no_subscription() -> None:
    settings = AzureOidcSettings.model_validate({"tenant_id": TENANT_ID, "client_id": CLIENT_ID})
    assert settings.scope == "https://management.azure.com/.default"
    assert settings.authority_host == "https://login.microsoftonline.com"
    assert settings.subscription_id is None
    assert settings.token_url == (
        f"https://login.microsoftonline.com/{TENANT_ID}/oauth2/v2.0/token"
    )


def test_a_tenant_may_be_named_by_a_verified_domain() -> None:
    settings = AzureOidcSettings.model_validate(
        {"tenant_id": "contoso.onmicrosoft.com", "client_id": CLIENT_ID}
    )
    assert settings.token_url.endswith("/contoso.onmicrosoft.com/oauth2/v2.0/token")


@pytest.mark.parametrize("alias", ["common", "organizations", "Consumers"])
def test_a_multi_tenant_alias_is_refused_as_the_tenant(alias: str) -> None:
    with pytest.raises(ValidationError, match="names no tenant"):
        AzureOidcSettings.model_validate({"tenant_id": alias, "client_id": CLIENT_ID})


@pytest.mark.parametrize("field", ["client_id", "subscription_id"])
def test_application_and_subscription_ids_are_guids(field: str) -> None:
    data = {"tenant_id": TENANT_ID, "client_id": CLIENT_ID, field: "my-app"}
    with pytest.raises(ValidationError, match="must be a GUID"):
        AzureOidcSettings.model_validate(data)


@pytest.mark.parametrize(
    "scope",
    [
        "https://management.azure.com/user_impersonation",
        "https://management.azure.com/.default https://graph.microsoft.com/.default",
        "",
    ],
)
def test_the_scope_is_one_resources_default_scope(scope: str) -> None:
    with pytest.raises(ValidationError, match=r"'/\.default' scope"):
        AzureOidcSettings.model_validate(
            {"tenant_id": TENANT_ID, "client_id": CLIENT_ID, "scope": scope}
        )


@pytest.mark.parametrize(
    "host",
    [
        "http://login.microsoftonline.com",
        "https://login.microsoftonline.com/tenant",
        "https://10.0.0.5",
    ],
)
def test_an_authority_host_must_be_a_public_https_origin(host: str) -> None:
    data = {"tenant_id": TENANT_ID, "client_id": CLIENT_ID, "authority_host": host}
    with pytest.raises(ValidationError):
        AzureOidcSettings.model_validate(data, context=url_context(allow_private_backends=False))


def test_a_ca_cert_must_be_pem_certificates() -> None:
    data = {"tenant_id": TENANT_ID, "client_id": CLIENT_ID, "ca_cert": "not a certificate"}
    with pytest.raises(ValidationError, match="PEM"):
        AzureOidcSettings.model_validate(data)


def test_the_type_mints_for_entra_by_default_and_renders_the_bare_assertion() -> None:
    traits = traits_of(AzureOidcBackend)
    assert traits.default_mint_audience == "api://AzureADTokenExchange"
    assert traits.documents == {"azure-federated-token": True}
    assert traits.single_token is not None
    assert traits.single_token.value_name == "AZURE_ACCESS_TOKEN"
    assert not traits.revocable


# --- Entra's error answers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (
            "invalid_request",
            70021,
            "No matching federated identity record found for presented assertion.",
        ),
        ("unauthorized_client", 700016, "Application with identifier 'x' was not found."),
        ("invalid_client", 700024, "Client assertion is not within its valid time range."),
    ],
)
def test_entra_refusals_are_403_with_entras_code_and_description(
    error: str, code: int, message: str
) -> None:
    reply = entra_error(error, code, message, status=401 if error == "invalid_client" else 400)
    mapped = map_entra_error(reply.status, reply.body, [])
    assert isinstance(mapped, AccessDenied)
    assert mapped.reason == "backend_refused"
    assert mapped.description == f"Entra ID refused the client assertion: AADSTS{code}: {message}"
    assert mapped.details == {
        "upstream": {
            "error": error,
            "error_codes": [code],
            "trace_id": "0000aaaa-11bb-cccc-dd22-eeeeee333333",
            "correlation_id": "aaaa0000-bb11-2222-33cc-444444dddddd",
        }
    }


def test_an_invalid_scope_is_a_rejected_request() -> None:
    reply = entra_error("invalid_scope", 70011, "The provided value for 'scope' isn't valid.")
    mapped = map_entra_error(reply.status, reply.body, [])
    assert isinstance(mapped, InvalidRequest)
    assert mapped.reason == "backend_rejected_request"


def test_throttling_is_retried_then_temporarily_unavailable_with_entras_retry_after() -> None:
    mapped = map_entra_error(429, {"error": "temporarily_unavailable"}, [], retry_after="17")
    assert isinstance(mapped, TransientFailure)
    assert isinstance(mapped.final, TemporarilyUnavailable)
    assert mapped.final.retry_after == 17


def test_a_server_error_is_retried_then_an_upstream_error() -> None:
    mapped = map_entra_error(500, None, [])
    assert isinstance(mapped, TransientFailure)
    assert type(mapped.final) is UpstreamError


def test_an_error_description_never_carries_the_assertion(dev_issuer: ServedDevIssuer) -> None:
    token = env0_assertion(dev_issuer)
    body = {"error": "invalid_request", "error_description": f"AADSTS50027: bad {token} here"}
    mapped = map_entra_error(400, body, [token])
    assert isinstance(mapped, AccessDenied)
    assert token not in mapped.description
    assert not any(part in mapped.description for part in token.split("."))


# --- against a scripted Entra ----------------------------------------------------------------


async def test_the_grant_is_client_credentials_with_the_token_as_assertion(
    backend: AzureOidcBackend, scripted_entra: ScriptedEntra, clock: FrozenClock
) -> None:
    issued = await backend.exchange(
        IDENTITY, "outbound.jwt.value", settings_for(scripted_entra.url)
    )
    assert scripted_entra.requests == [
        {
            "tenant": TENANT_ID,
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "scope": ARM_SCOPE,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": "outbound.jwt.value",
        }
    ]
    assert issued.values["AZURE_ACCESS_TOKEN"] == "entra-access-token-value"
    # An assertion whose exp cannot be read leaves the access token's expiry.
    assert issued.expires_at == datetime.fromtimestamp(clock.now(), UTC) + timedelta(seconds=3599)


async def test_outputs_are_the_azure_and_terraform_azurerm_variables(
    backend: AzureOidcBackend, scripted_entra: ScriptedEntra
) -> None:
    settings = settings_for(scripted_entra.url, subscription_id=SUBSCRIPTION_ID)
    issued = await backend.exchange(IDENTITY, "outbound.jwt.value", settings)
    assert dict(issued.values) == {
        "AZURE_ACCESS_TOKEN": "entra-access-token-value",
        "AZURE_CLIENT_ID": CLIENT_ID,
        "AZURE_TENANT_ID": TENANT_ID,
        "AZURE_SUBSCRIPTION_ID": SUBSCRIPTION_ID,
        "ARM_CLIENT_ID": CLIENT_ID,
        "ARM_TENANT_ID": TENANT_ID,
        "ARM_SUBSCRIPTION_ID": SUBSCRIPTION_ID,
        "ARM_USE_OIDC": "true",
        "ARM_OIDC_TOKEN": "outbound.jwt.value",
    }


async def test_without_a_subscription_no_subscription_variable_is_given(
    backend: AzureOidcBackend, scripted_entra: ScriptedEntra
) -> None:
    issued = await backend.exchange(
        IDENTITY, "outbound.jwt.value", settings_for(scripted_entra.url)
    )
    assert "AZURE_SUBSCRIPTION_ID" not in issued.values
    assert "ARM_SUBSCRIPTION_ID" not in issued.values


async def test_the_credential_expires_with_the_assertion_when_that_comes_first(
    backend: AzureOidcBackend,
    scripted_entra: ScriptedEntra,
    dev_issuer: ServedDevIssuer,
    clock: FrozenClock,
) -> None:
    dev_issuer.clock = clock
    token = dev_issuer.mint("env0", org=ORG, project=PROJECT, lifetime_seconds=600)
    issued = await backend.exchange(IDENTITY, token, settings_for(scripted_entra.url))
    assert issued.expires_at == datetime.fromtimestamp(clock.now() + 600, UTC)
    assert issued.metadata["access_token_expires_at"] == (
        datetime.fromtimestamp(clock.now() + 3599, UTC).isoformat()
    )


async def test_throttling_is_retried_and_then_succeeds(
    backend: AzureOidcBackend, scripted_entra: ScriptedEntra, sleeps: SleepRecorder
) -> None:
    scripted_entra.replies = [
        EntraReply(status=429, body={"error": "temporarily_unavailable"}),
        EntraReply(status=503, body={"error": "temporarily_unavailable"}),
    ]
    issued = await backend.exchange(
        IDENTITY, "outbound.jwt.value", settings_for(scripted_entra.url)
    )
    assert issued.values["AZURE_ACCESS_TOKEN"] == "entra-access-token-value"
    assert len(scripted_entra.requests) == 3
    assert len(sleeps.delays) == 2


async def test_lasting_throttling_is_temporarily_unavailable_with_retry_after(
    backend: AzureOidcBackend, scripted_entra: ScriptedEntra
) -> None:
    throttled = EntraReply(status=429, body={}, headers={"Retry-After": "30"})
    scripted_entra.replies = [throttled] * 3
    with pytest.raises(TemporarilyUnavailable) as raised:
        await backend.exchange(IDENTITY, "outbound.jwt.value", settings_for(scripted_entra.url))
    assert (raised.value.status, raised.value.retry_after) == (503, 30)
    assert len(scripted_entra.requests) == 3


async def test_lasting_server_errors_are_a_502_after_the_retries(
    backend: AzureOidcBackend, scripted_entra: ScriptedEntra
) -> None:
    scripted_entra.replies = [EntraReply(status=500, body={"error": "server_error"})] * 3
    with pytest.raises(UpstreamError) as raised:
        await backend.exchange(IDENTITY, "outbound.jwt.value", settings_for(scripted_entra.url))
    assert raised.value.status == 502
    assert len(scripted_entra.requests) == 3


async def test_a_refusal_is_not_retried(
    backend: AzureOidcBackend, scripted_entra: ScriptedEntra
) -> None:
    scripted_entra.replies = [entra_error("invalid_request", 70021, "No matching record.")]
    with pytest.raises(AccessDenied):
        await backend.exchange(IDENTITY, "outbound.jwt.value", settings_for(scripted_entra.url))
    assert len(scripted_entra.requests) == 1


async def test_a_hung_entra_is_a_504_within_the_timeout(
    backend: AzureOidcBackend, scripted_entra: ScriptedEntra
) -> None:
    scripted_entra.replies = [EntraReply(hang=True)]
    settings = settings_for(scripted_entra.url, timeout_seconds=0.3)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        await backend.exchange(IDENTITY, "outbound.jwt.value", settings)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    "body",
    [
        {"token_type": "Bearer", "expires_in": 3599},
        {"token_type": "Bearer", "access_token": "t", "expires_in": -1},
        {"token_type": "Bearer", "access_token": "t", "expires_in": True},
    ],
)
async def test_an_answer_without_a_usable_token_is_an_upstream_error(
    backend: AzureOidcBackend, scripted_entra: ScriptedEntra, body: dict[str, object]
) -> None:
    scripted_entra.replies = [EntraReply(body=body)]
    with pytest.raises(UpstreamError, match="Entra ID answered without"):
        await backend.exchange(IDENTITY, "outbound.jwt.value", settings_for(scripted_entra.url))


# --- against the Entra stand-in (TLS with its CA as ca_cert) -----------------------------------


async def test_a_matching_assertion_gets_an_arm_token_over_tls_with_the_credentials_ca(
    backend: AzureOidcBackend, stand_in: RunningEntra, dev_issuer: ServedDevIssuer
) -> None:
    settings = settings_for(stand_in.url, ca_cert=stand_in.ca_pem)
    issued = await backend.exchange(IDENTITY, env0_assertion(dev_issuer), settings)
    assert issued.values["AZURE_ACCESS_TOKEN"]
    [record] = stand_in.server.issued
    assert (record.client_id, record.subject) == (CLIENT_ID, SUBJECT)


async def test_without_the_ca_the_stand_ins_certificate_is_refused_and_not_retried(
    backend: AzureOidcBackend, stand_in: RunningEntra, dev_issuer: ServedDevIssuer
) -> None:
    with pytest.raises(UpstreamError, match=r"TLS verification .* failed; check ca_cert"):
        await backend.exchange(IDENTITY, env0_assertion(dev_issuer), settings_for(stand_in.url))
    assert stand_in.server.issued == []


async def test_no_matching_federated_credential_is_refused_with_aadsts70021(
    backend: AzureOidcBackend, stand_in: RunningEntra, dev_issuer: ServedDevIssuer
) -> None:
    settings = settings_for(stand_in.url, ca_cert=stand_in.ca_pem)
    with pytest.raises(AccessDenied) as raised:
        await backend.exchange(IDENTITY, env0_assertion(dev_issuer, sub="auth0|other"), settings)
    assert "AADSTS70021: No matching federated identity record" in raised.value.description
    assert raised.value.details["upstream"]["error_codes"] == [70021]  # type: ignore[index]


async def test_an_unknown_application_is_refused_with_aadsts700016(
    backend: AzureOidcBackend, stand_in: RunningEntra, dev_issuer: ServedDevIssuer
) -> None:
    settings = settings_for(stand_in.url, ca_cert=stand_in.ca_pem, client_id=OTHER_CLIENT_ID)
    with pytest.raises(AccessDenied, match="AADSTS700016: Application with identifier"):
        await backend.exchange(IDENTITY, env0_assertion(dev_issuer), settings)


async def test_an_assertion_outside_its_time_window_is_refused_with_aadsts700024(
    backend: AzureOidcBackend,
    stand_in: RunningEntra,
    dev_issuer: ServedDevIssuer,
    clock: FrozenClock,
) -> None:
    token = env0_assertion(dev_issuer, exp=int(clock.now()) - 3600)
    settings = settings_for(stand_in.url, ca_cert=stand_in.ca_pem)
    with pytest.raises(AccessDenied, match="AADSTS700024: Client assertion is not within"):
        await backend.exchange(IDENTITY, token, settings)


class TestAzureContract(BackendContract):
    """azure_oidc passes the contract against the Entra stand-in."""

    @pytest.fixture
    async def contract_case(
        self,
        backend: AzureOidcBackend,
        stand_in: RunningEntra,
        dev_issuer: ServedDevIssuer,
        clock: FrozenClock,
    ) -> ContractCase:
        data = {
            "tenant_id": TENANT_ID,
            "client_id": CLIENT_ID,
            "authority_host": stand_in.url,
            "ca_cert": stand_in.ca_pem,
        }
        return ContractCase(
            backend=backend,
            settings_data=data,
            identity=IDENTITY,
            accepted_token=env0_assertion(dev_issuer),
            refused_token=env0_assertion(dev_issuer, sub="auth0|not-federated"),
            unreachable_settings_data={
                **data,
                "authority_host": f"https://127.0.0.1:{free_port()}",
                "timeout_seconds": 2,
            },
            timeout_seconds=5,
            now=clock.now(),
        )
