"""The gcp_oidc backend: against the STS + IAM Credentials stand-in, and a scripted fake."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from bench.procs import free_port
from pydantic import ValidationError

from tests.backends.conftest import SleepRecorder
from tests.backends.contract import BackendContract, ContractCase
from tests.support.gcp import (
    DEFAULT_TOKEN_AUDIENCE,
    PROVIDER_AUDIENCE,
    SERVICE_ACCOUNT,
    GoogleReply,
    RunningGcpSts,
    ScriptedGoogle,
    StartGcpSts,
    service_account_for_project,
    workload_provider,
)
from tests.support.platform import ServedDevIssuer
from tokenbroker.backends.base import BackendContext
from tokenbroker.backends.gcp import GcpOidcBackend, GcpOidcSettings, parse_expire_time
from tokenbroker.clock import FrozenClock
from tokenbroker.devstack.gcp_sts import GcpStsConfig
from tokenbroker.errors import AccessDenied, InvalidRequest, UpstreamError, UpstreamTimeout
from tokenbroker.identity.models import Identity

ORG = "66a38abf-69bc-4cb7-ad73-7f61e389079f"
PROJECT = "5b44fa6d-ecfd-40ab-8e69-14d6fe7c638c"
OTHER_PROJECT = "0d7a1a2e-2c4f-4a8e-9b3e-000000000000"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
LONG_LIVED = {"service_account": SERVICE_ACCOUNT, "allow_long_lifetime": True}
IDENTITY = Identity(issuer="env0", org=ORG, project=PROJECT, subject="auth0|63021f2ce98a11d0")


@pytest.fixture
def backend(
    http: aiohttp.ClientSession, clock: FrozenClock, sleeps: SleepRecorder
) -> GcpOidcBackend:
    """A GCP backend on the shared session and the frozen clock."""
    return GcpOidcBackend(BackendContext(http=http, clock=clock), sleep=sleeps)


@pytest.fixture
async def sts(
    gcp_sts: StartGcpSts, dev_issuer: ServedDevIssuer, clock: FrozenClock
) -> RunningGcpSts:
    """The stand-in trusting the dev env0 issuer; PROJECT may impersonate SERVICE_ACCOUNT."""
    dev_issuer.clock = clock
    provider = workload_provider(
        dev_issuer.issuer_url("env0"),
        dev_issuer.jwks_url("env0"),
        attribute_condition={"apiKeyType": "oidc"},
    )
    config = GcpStsConfig(
        providers=[provider], service_accounts=[service_account_for_project(PROJECT)]
    )
    return await gcp_sts(config, clock)


def env0_token(issuer: ServedDevIssuer, project: str = PROJECT, **options: object) -> str:
    """An env0-shaped token for the test provider."""
    options.setdefault("audience", DEFAULT_TOKEN_AUDIENCE)
    return issuer.mint("env0", org=ORG, project=project, **options)  # type: ignore[arg-type]


def gcp_settings(base_url: str, **overrides: object) -> GcpOidcSettings:
    """Settings pointing both APIs at a test server."""
    values: dict[str, object] = {
        "audience": PROVIDER_AUDIENCE,
        "token_url": f"{base_url}/v1/token",
        "iam_endpoint": base_url,
        **overrides,
    }
    return GcpOidcSettings.model_validate(values)


async def tokeninfo(http: aiohttp.ClientSession, sts: RunningGcpSts, token: str) -> dict[str, str]:
    """What the stand-in knows about an access token."""
    async with http.get(f"{sts.url}/v1/tokeninfo", params={"access_token": token}) as response:
        assert response.status == 200
        info: dict[str, str] = await response.json()
        return info


# --- against the stand-in --------------------------------------------------------------------


async def test_a_federated_token_is_issued_for_a_valid_token(
    backend: GcpOidcBackend,
    sts: RunningGcpSts,
    dev_issuer: ServedDevIssuer,
    http: aiohttp.ClientSession,
    clock: FrozenClock,
) -> None:
    issued = await backend.exchange(IDENTITY, env0_token(dev_issuer), gcp_settings(sts.url))
    token = issued.values["GOOGLE_OAUTH_ACCESS_TOKEN"]
    assert issued.values["CLOUDSDK_AUTH_ACCESS_TOKEN"] == token
    assert issued.expires_at == datetime.fromtimestamp(clock.now(), UTC) + timedelta(hours=1)
    assert issued.metadata == {
        "service_account": None,
        "token_type": "Bearer",
        "scopes": [CLOUD_PLATFORM],
    }
    info = await tokeninfo(http, sts, token)
    assert "email" not in info


async def test_impersonation_gives_the_service_accounts_token(
    backend: GcpOidcBackend,
    sts: RunningGcpSts,
    dev_issuer: ServedDevIssuer,
    http: aiohttp.ClientSession,
    clock: FrozenClock,
) -> None:
    settings = gcp_settings(sts.url, service_account=SERVICE_ACCOUNT, lifetime_seconds=1800)
    issued = await backend.exchange(IDENTITY, env0_token(dev_issuer), settings)
    info = await tokeninfo(http, sts, issued.values["GOOGLE_OAUTH_ACCESS_TOKEN"])
    assert info["email"] == SERVICE_ACCOUNT
    assert issued.expires_at == datetime.fromtimestamp(clock.now() + 1800, UTC)
    assert issued.metadata["service_account"] == SERVICE_ACCOUNT


async def test_a_token_for_another_audience_is_access_denied(
    backend: GcpOidcBackend, sts: RunningGcpSts, dev_issuer: ServedDevIssuer
) -> None:
    token = env0_token(dev_issuer, audience="https://prod.env0.com")
    with pytest.raises(AccessDenied) as raised:
        await backend.exchange(IDENTITY, token, gcp_settings(sts.url))
    assert raised.value.reason == "backend_refused"
    assert "invalid_grant" in raised.value.description
    assert "audience" in raised.value.description


async def test_an_expired_token_is_access_denied(
    backend: GcpOidcBackend, sts: RunningGcpSts, dev_issuer: ServedDevIssuer, clock: FrozenClock
) -> None:
    token = env0_token(dev_issuer, lifetime_seconds=300)
    clock.advance(301)
    with pytest.raises(AccessDenied, match="expired"):
        await backend.exchange(IDENTITY, token, gcp_settings(sts.url))


async def test_a_badly_signed_token_is_access_denied(
    backend: GcpOidcBackend, sts: RunningGcpSts, dev_issuer: ServedDevIssuer
) -> None:
    header, payload, signature = env0_token(dev_issuer).split(".")
    tampered = f"{header}.{payload}.{signature[::-1]}"
    with pytest.raises(AccessDenied) as raised:
        await backend.exchange(IDENTITY, tampered, gcp_settings(sts.url))
    assert "invalid_grant" in raised.value.description


async def test_a_failing_attribute_condition_is_access_denied(
    backend: GcpOidcBackend, sts: RunningGcpSts, dev_issuer: ServedDevIssuer
) -> None:
    token = env0_token(dev_issuer, claims={"apiKeyType": "user"})
    with pytest.raises(AccessDenied) as raised:
        await backend.exchange(IDENTITY, token, gcp_settings(sts.url))
    assert "unauthorized_client" in raised.value.description
    assert "attribute condition" in raised.value.description


async def test_an_unknown_service_account_is_access_denied(
    backend: GcpOidcBackend, sts: RunningGcpSts, dev_issuer: ServedDevIssuer
) -> None:
    settings = gcp_settings(
        sts.url, service_account="nobody@example-project.iam.gserviceaccount.com"
    )
    with pytest.raises(AccessDenied) as raised:
        await backend.exchange(IDENTITY, env0_token(dev_issuer), settings)
    assert "PERMISSION_DENIED" in raised.value.description


async def test_another_projects_identity_cannot_impersonate(
    backend: GcpOidcBackend, sts: RunningGcpSts, dev_issuer: ServedDevIssuer
) -> None:
    token = env0_token(dev_issuer, project=OTHER_PROJECT)
    settings = gcp_settings(sts.url, service_account=SERVICE_ACCOUNT)
    with pytest.raises(AccessDenied, match="PERMISSION_DENIED"):
        await backend.exchange(IDENTITY, token, settings)


async def test_an_unknown_provider_is_invalid_request(
    backend: GcpOidcBackend, sts: RunningGcpSts, dev_issuer: ServedDevIssuer
) -> None:
    settings = gcp_settings(
        sts.url, audience=PROVIDER_AUDIENCE.replace("env0-provider", "gone-provider")
    )
    with pytest.raises(InvalidRequest) as raised:
        await backend.exchange(IDENTITY, env0_token(dev_issuer), settings)
    assert raised.value.reason == "backend_rejected_request"
    assert "invalid_target" in raised.value.description


async def test_a_lifetime_the_account_does_not_allow_is_invalid_request(
    backend: GcpOidcBackend, sts: RunningGcpSts, dev_issuer: ServedDevIssuer
) -> None:
    settings = gcp_settings(
        sts.url,
        service_account=SERVICE_ACCOUNT,
        lifetime_seconds=7200,
        allow_long_lifetime=True,
    )
    with pytest.raises(InvalidRequest, match="INVALID_ARGUMENT"):
        await backend.exchange(IDENTITY, env0_token(dev_issuer), settings)


async def test_no_secret_reaches_logs_or_errors(
    backend: GcpOidcBackend,
    sts: RunningGcpSts,
    dev_issuer: ServedDevIssuer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    token = env0_token(dev_issuer)
    settings = gcp_settings(sts.url, service_account=SERVICE_ACCOUNT)
    issued = await backend.exchange(IDENTITY, token, settings)
    refused = env0_token(dev_issuer, project=OTHER_PROJECT)
    with pytest.raises(AccessDenied) as raised:
        await backend.exchange(IDENTITY, refused, settings)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for secret in (token, refused, issued.values["GOOGLE_OAUTH_ACCESS_TOKEN"]):
        assert secret not in logged
        assert secret not in str(raised.value)
        assert secret not in repr(issued)


# --- the requests Google receives ------------------------------------------------------------


async def test_sts_gets_an_rfc_8693_form_and_iam_the_federated_bearer(
    backend: GcpOidcBackend, scripted_google: ScriptedGoogle
) -> None:
    settings = gcp_settings(
        scripted_google.url,
        service_account=SERVICE_ACCOUNT,
        scopes=["https://www.googleapis.com/auth/devstorage.read_only"],
        subject_token_type="urn:ietf:params:oauth:token-type:id_token",
    )
    await backend.exchange(IDENTITY, "subject.token.value", settings)
    [form] = scripted_google.sts_requests
    assert form == {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "audience": PROVIDER_AUDIENCE,
        # The federated token must be allowed to call IAM Credentials, as google-auth asks.
        "scope": CLOUD_PLATFORM,
        "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "subject_token": "subject.token.value",
        "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
    }
    [(target, headers, body)] = scripted_google.iam_requests
    assert target == f"{SERVICE_ACCOUNT}:generateAccessToken"
    assert headers["Authorization"] == "Bearer federated-access-token-value"
    assert body == {
        "scope": ["https://www.googleapis.com/auth/devstorage.read_only"],
        "lifetime": "3600s",
    }


async def test_without_impersonation_sts_gets_the_credentials_scopes(
    backend: GcpOidcBackend, scripted_google: ScriptedGoogle
) -> None:
    scopes = ["https://www.googleapis.com/auth/devstorage.read_only", "openid"]
    await backend.exchange(
        IDENTITY, "subject.token.value", gcp_settings(scripted_google.url, scopes=scopes)
    )
    assert scripted_google.sts_requests[0]["scope"] == " ".join(scopes)
    assert scripted_google.iam_requests == []


@pytest.mark.parametrize(
    ("expire_time", "expected"),
    [
        ("2030-01-01T00:00:00Z", datetime(2030, 1, 1, tzinfo=UTC)),
        ("2030-01-01T00:00:00.5Z", datetime(2030, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)),
        ("2030-01-01T00:00:00.123456789Z", datetime(2030, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)),
        ("2030-01-01T01:00:00+01:00", datetime(2030, 1, 1, tzinfo=UTC)),
    ],
)
async def test_expire_time_is_read_with_or_without_fractional_seconds(
    backend: GcpOidcBackend,
    scripted_google: ScriptedGoogle,
    expire_time: str,
    expected: datetime,
) -> None:
    scripted_google.expire_time = expire_time
    settings = gcp_settings(scripted_google.url, service_account=SERVICE_ACCOUNT)
    issued = await backend.exchange(IDENTITY, "subject.token.value", settings)
    assert issued.expires_at == expected


@pytest.mark.parametrize("value", ["2030-01-01", "2030-01-01T00:00:00", "tomorrow", ""])
def test_unreadable_expire_times_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_expire_time(value)


# --- Google's error shapes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("invalid_grant", AccessDenied),
        ("unauthorized_client", AccessDenied),
        ("invalid_request", InvalidRequest),
        ("invalid_scope", InvalidRequest),
    ],
)
async def test_sts_oauth_errors_are_mapped(
    backend: GcpOidcBackend,
    scripted_google: ScriptedGoogle,
    error: str,
    expected: type[Exception],
) -> None:
    scripted_google.sts_replies.append(
        GoogleReply(400, {"error": error, "error_description": "Google says no"})
    )
    with pytest.raises(expected) as raised:
        await backend.exchange(IDENTITY, "subject.token.value", gcp_settings(scripted_google.url))
    assert "Google says no" in str(raised.value)
    assert len(scripted_google.sts_requests) == 1


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (403, "PERMISSION_DENIED", AccessDenied),
        (401, "UNAUTHENTICATED", AccessDenied),
        (400, "INVALID_ARGUMENT", InvalidRequest),
    ],
)
async def test_iam_errors_are_mapped(
    backend: GcpOidcBackend,
    scripted_google: ScriptedGoogle,
    status: int,
    code: str,
    expected: type[Exception],
) -> None:
    error = {"error": {"code": status, "message": "IAM says no", "status": code}}
    scripted_google.iam_replies.append(GoogleReply(status, error))
    settings = gcp_settings(scripted_google.url, service_account=SERVICE_ACCOUNT)
    with pytest.raises(expected, match="IAM says no"):
        await backend.exchange(IDENTITY, "subject.token.value", settings)
    assert len(scripted_google.iam_requests) == 1


async def test_sts_5xx_is_retried_then_upstream_error(
    backend: GcpOidcBackend, scripted_google: ScriptedGoogle, sleeps: SleepRecorder
) -> None:
    scripted_google.sts_replies.extend([GoogleReply(503, {"error": "temporarily_unavailable"})] * 3)
    with pytest.raises(UpstreamError) as raised:
        await backend.exchange(
            IDENTITY, "subject.token.value", gcp_settings(scripted_google.url, max_retries=2)
        )
    assert raised.value.status == 502
    assert len(scripted_google.sts_requests) == 3
    assert len(sleeps.delays) == 2


async def test_iam_5xx_then_success_gives_the_token(
    backend: GcpOidcBackend, scripted_google: ScriptedGoogle, sleeps: SleepRecorder
) -> None:
    unavailable = {"error": {"code": 503, "message": "try later", "status": "UNAVAILABLE"}}
    scripted_google.iam_replies.append(GoogleReply(503, unavailable))
    settings = gcp_settings(scripted_google.url, service_account=SERVICE_ACCOUNT)
    issued = await backend.exchange(IDENTITY, "subject.token.value", settings)
    assert issued.values["GOOGLE_OAUTH_ACCESS_TOKEN"] == "service-account-token-value"
    assert len(scripted_google.sts_requests) == 1
    assert len(scripted_google.iam_requests) == 2
    assert len(sleeps.delays) == 1


async def test_a_non_json_error_page_is_mapped_by_status(
    backend: GcpOidcBackend, scripted_google: ScriptedGoogle
) -> None:
    scripted_google.sts_replies.append(GoogleReply(403, {}))
    with pytest.raises(AccessDenied, match="HTTP 403"):
        await backend.exchange(IDENTITY, "subject.token.value", gcp_settings(scripted_google.url))


async def test_a_success_without_a_token_is_upstream_error(
    backend: GcpOidcBackend, scripted_google: ScriptedGoogle
) -> None:
    scripted_google.sts_replies.append(GoogleReply(200, {"token_type": "Bearer"}))
    with pytest.raises(UpstreamError):
        await backend.exchange(IDENTITY, "subject.token.value", gcp_settings(scripted_google.url))


async def test_google_not_answering_in_time_is_upstream_timeout(
    backend: GcpOidcBackend, scripted_google: ScriptedGoogle
) -> None:
    scripted_google.sts_replies.append(GoogleReply(hang=True))
    with pytest.raises(UpstreamTimeout):
        await backend.exchange(
            IDENTITY,
            "subject.token.value",
            # Long enough for the request to reach the fake on a loaded machine: the assertion
            # below is that a timed-out call is not retried.
            gcp_settings(scripted_google.url, timeout_seconds=1.0),
        )
    assert len(scripted_google.sts_requests) == 1


async def test_unreachable_google_is_retried_then_upstream_error(
    backend: GcpOidcBackend, sleeps: SleepRecorder
) -> None:
    settings = gcp_settings(f"http://127.0.0.1:{free_port()}", max_retries=1)
    with pytest.raises(UpstreamError) as raised:
        await backend.exchange(IDENTITY, "subject.token.value", settings)
    assert raised.value.reason == "backend_unreachable"
    assert len(sleeps.delays) == 1


# --- settings --------------------------------------------------------------------------------


def test_settings_defaults_follow_google() -> None:
    settings = GcpOidcSettings(audience=PROVIDER_AUDIENCE)
    assert settings.subject_token_type == "urn:ietf:params:oauth:token-type:jwt"
    assert settings.scopes == [CLOUD_PLATFORM]
    assert settings.token_url == "https://sts.googleapis.com/v1/token"
    assert settings.iam_endpoint == "https://iamcredentials.googleapis.com"
    assert settings.lifetime_seconds == 3600


@pytest.mark.parametrize(
    "overrides",
    [
        {
            "audience": "//iam.googleapis.com/projects/my-project/locations/global/"
            "workloadIdentityPools/pool/providers/prov"
        },
        {
            "audience": "https://iam.googleapis.com/projects/1/locations/global/"
            "workloadIdentityPools/pool1/providers/prov1"
        },
        {"subject_token_type": "urn:ietf:params:oauth:token-type:saml2"},
        {"scopes": []},
        {"scopes": ["two words"]},
        {"service_account": "not-an-email"},
        {"service_account": SERVICE_ACCOUNT, "lifetime_seconds": 3601},
        {
            "service_account": SERVICE_ACCOUNT,
            "lifetime_seconds": 43201,
            "allow_long_lifetime": True,
        },
        {"lifetime_seconds": 1800},
        {"token_url": "http://sts.example.com/v1/token"},
        {"iam_endpoint": "http://iamcredentials.example.com"},
        {"unknown": True},
    ],
)
def test_invalid_settings_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        GcpOidcSettings.model_validate({"audience": PROVIDER_AUDIENCE, **overrides})


@pytest.mark.parametrize(
    "overrides",
    [
        {
            "service_account": SERVICE_ACCOUNT,
            "lifetime_seconds": 43200,
            "allow_long_lifetime": True,
        },
        {"subject_token_type": "urn:ietf:params:oauth:token-type:id_token"},
        {"token_url": "http://127.0.0.1:8080/v1/token", "iam_endpoint": "http://localhost:8080"},
        {"service_account": "123456789-compute@developer.gserviceaccount.com"},
    ],
)
def test_valid_settings_are_accepted(overrides: dict[str, object]) -> None:
    GcpOidcSettings.model_validate({"audience": PROVIDER_AUDIENCE, **overrides})


@pytest.mark.parametrize(
    "overrides",
    [{}, {"service_account": SERVICE_ACCOUNT, "lifetime_seconds": 1800}],
)
def test_settings_parse_again_from_their_stored_json_form(overrides: dict[str, object]) -> None:
    settings = GcpOidcSettings.model_validate({"audience": PROVIDER_AUDIENCE, **overrides})
    assert GcpOidcSettings.model_validate(settings.model_dump(mode="json")) == settings


# --- the contract every backend passes -------------------------------------------------------


class TestGcpOidcContract(BackendContract):
    """gcp_oidc against the stand-in, impersonating a service account."""

    @pytest.fixture
    async def contract_case(
        self,
        backend: GcpOidcBackend,
        sts: RunningGcpSts,
        dev_issuer: ServedDevIssuer,
        clock: FrozenClock,
    ) -> ContractCase:
        settings = {
            "audience": PROVIDER_AUDIENCE,
            "token_url": sts.token_url,
            "iam_endpoint": sts.iam_endpoint,
            "service_account": SERVICE_ACCOUNT,
        }
        closed = f"http://127.0.0.1:{free_port()}"
        return ContractCase(
            backend=backend,
            settings_data=settings,
            identity=IDENTITY,
            accepted_token=env0_token(dev_issuer),
            refused_token=env0_token(dev_issuer, claims={"apiKeyType": "user"}),
            unreachable_settings_data={
                **settings,
                "token_url": f"{closed}/v1/token",
                "iam_endpoint": closed,
            },
            timeout_seconds=5.0,
            now=clock.now(),
        )
