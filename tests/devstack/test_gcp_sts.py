"""The GCP STS + IAM Credentials stand-in speaks Google's formats and checks tokens for real."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from google.auth import identity_pool
from google.auth.exceptions import OAuthError
from google.auth.transport.requests import Request as GoogleAuthRequest
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.support.gcp import (
    DEFAULT_TOKEN_AUDIENCE,
    POOL,
    PROVIDER_AUDIENCE,
    SERVICE_ACCOUNT,
    RunningGcpSts,
    StartGcpSts,
    service_account_for_project,
    workload_provider,
)
from tests.support.platform import ServedDevIssuer
from tokenbroker.clock import FrozenClock
from tokenbroker.devstack.gcp_sts import (
    GcpStsConfig,
    ServiceAccount,
    WorkloadIdentityProvider,
    parse_gcp_sts_config,
)

ORG = "66a38abf-69bc-4cb7-ad73-7f61e389079f"
PROJECT = "5b44fa6d-ecfd-40ab-8e69-14d6fe7c638c"
OTHER_PROJECT = "0d7a1a2e-2c4f-4a8e-9b3e-000000000000"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"


@pytest.fixture
def clock() -> FrozenClock:
    """One frozen clock for the issuer and the stand-in."""
    return FrozenClock(float(int(time.time())))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain client session for talking to the stand-in."""
    async with aiohttp.ClientSession() as session:
        yield session


def env0_provider(issuer: ServedDevIssuer, **options: object) -> WorkloadIdentityProvider:
    """A provider of the test pool trusting the dev env0 issuer."""
    return workload_provider(
        issuer.issuer_url("env0"),
        issuer.jwks_url("env0"),
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
async def sts(
    gcp_sts: StartGcpSts, dev_issuer: ServedDevIssuer, clock: FrozenClock
) -> RunningGcpSts:
    """The stand-in trusting the dev env0 issuer, with one service account for PROJECT."""
    dev_issuer.clock = clock
    config = GcpStsConfig(
        providers=[env0_provider(dev_issuer, attribute_condition={"apiKeyType": "oidc"})],
        service_accounts=[service_account_for_project(PROJECT)],
    )
    return await gcp_sts(config, clock)


def env0_token(issuer: ServedDevIssuer, project: str = PROJECT, **options: object) -> str:
    """An env0-shaped token for the test provider."""
    options.setdefault("audience", DEFAULT_TOKEN_AUDIENCE)
    return issuer.mint("env0", org=ORG, project=project, **options)  # type: ignore[arg-type]


def exchange_form(token: str, **overrides: str) -> dict[str, str]:
    """The form google-auth sends to STS, with the given subject token."""
    return {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "audience": PROVIDER_AUDIENCE,
        "scope": CLOUD_PLATFORM,
        "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "subject_token": token,
        "subject_token_type": JWT_TYPE,
        **overrides,
    }


async def post_token(
    http: aiohttp.ClientSession, sts: RunningGcpSts, form: Mapping[str, str]
) -> tuple[int, dict[str, object]]:
    """POST a form to STS; the status and JSON body."""
    async with http.post(sts.token_url, data=dict(form)) as response:
        return response.status, await response.json()


async def federated_token(http: aiohttp.ClientSession, sts: RunningGcpSts, token: str) -> str:
    """Exchange a subject token, asserting success; the federated access token."""
    status, body = await post_token(http, sts, exchange_form(token))
    assert status == 200, body
    access_token = body["access_token"]
    assert isinstance(access_token, str)
    return access_token


async def generate(
    http: aiohttp.ClientSession,
    sts: RunningGcpSts,
    bearer: str | None,
    email: str = SERVICE_ACCOUNT,
    body: Mapping[str, object] | None = None,
) -> tuple[int, dict[str, object]]:
    """Call generateAccessToken; the status and JSON body."""
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    payload = body if body is not None else {"scope": [CLOUD_PLATFORM], "lifetime": "3600s"}
    url = sts.impersonation_url(email)
    async with http.post(url, json=dict(payload), headers=headers) as response:
        return response.status, await response.json()


# --- STS -----------------------------------------------------------------------------------


async def test_a_valid_token_gets_a_federated_bearer_token(
    sts: RunningGcpSts, dev_issuer: ServedDevIssuer, http: aiohttp.ClientSession
) -> None:
    status, body = await post_token(http, sts, exchange_form(env0_token(dev_issuer)))
    assert status == 200
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert isinstance(body["access_token"], str)


async def test_a_json_body_is_accepted_like_the_rest_reference_shows(
    sts: RunningGcpSts, dev_issuer: ServedDevIssuer, http: aiohttp.ClientSession
) -> None:
    async with http.post(sts.token_url, json=exchange_form(env0_token(dev_issuer))) as response:
        assert response.status == 200
        assert (await response.json())["token_type"] == "Bearer"


async def test_federated_token_lives_no_longer_than_the_subject_token(
    sts: RunningGcpSts, dev_issuer: ServedDevIssuer, http: aiohttp.ClientSession
) -> None:
    token = env0_token(dev_issuer, lifetime_seconds=600)
    status, body = await post_token(http, sts, exchange_form(token))
    assert status == 200
    assert body["expires_in"] == 600


async def test_an_unknown_provider_is_invalid_target(
    sts: RunningGcpSts, dev_issuer: ServedDevIssuer, http: aiohttp.ClientSession
) -> None:
    other = PROVIDER_AUDIENCE.replace("env0-provider", "other-provider")
    status, body = await post_token(
        http, sts, exchange_form(env0_token(dev_issuer), audience=other)
    )
    assert (status, body["error"]) == (400, "invalid_target")


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("grant_type", "client_credentials", "unsupported_grant_type"),
        ("requested_token_type", "urn:ietf:params:oauth:token-type:id_token", "invalid_request"),
        ("subject_token_type", "urn:ietf:params:aws:token-type:aws4_request", "invalid_request"),
        ("subject_token", "", "invalid_request"),
    ],
)
async def test_malformed_exchange_requests_are_refused(
    sts: RunningGcpSts,
    dev_issuer: ServedDevIssuer,
    http: aiohttp.ClientSession,
    field: str,
    value: str,
    error: str,
) -> None:
    form = exchange_form(env0_token(dev_issuer), **{field: value})
    status, body = await post_token(http, sts, form)
    assert (status, body["error"]) == (400, error)
    assert body["error_description"]


async def test_a_token_for_another_audience_is_invalid_grant(
    sts: RunningGcpSts, dev_issuer: ServedDevIssuer, http: aiohttp.ClientSession
) -> None:
    token = env0_token(dev_issuer, audience="https://prod.env0.com")
    status, body = await post_token(http, sts, exchange_form(token))
    assert (status, body["error"]) == (400, "invalid_grant")
    assert "audience" in str(body["error_description"])


async def test_configured_allowed_audiences_replace_the_default(
    gcp_sts: StartGcpSts,
    dev_issuer: ServedDevIssuer,
    clock: FrozenClock,
    http: aiohttp.ClientSession,
) -> None:
    dev_issuer.clock = clock
    provider = env0_provider(dev_issuer, allowed_audiences=["https://prod.env0.com"])
    sts = await gcp_sts(GcpStsConfig(providers=[provider]), clock)
    accepted = env0_token(dev_issuer, audience="https://prod.env0.com")
    assert (await post_token(http, sts, exchange_form(accepted)))[0] == 200
    refused = env0_token(dev_issuer)
    assert (await post_token(http, sts, exchange_form(refused)))[1]["error"] == "invalid_grant"


async def test_an_expired_token_is_invalid_grant(
    sts: RunningGcpSts,
    dev_issuer: ServedDevIssuer,
    clock: FrozenClock,
    http: aiohttp.ClientSession,
) -> None:
    token = env0_token(dev_issuer, lifetime_seconds=300)
    clock.advance(301)
    status, body = await post_token(http, sts, exchange_form(token))
    assert (status, body["error"]) == (400, "invalid_grant")
    assert "expired" in str(body["error_description"])


async def test_a_token_living_over_48_hours_is_invalid_grant(
    sts: RunningGcpSts, dev_issuer: ServedDevIssuer, http: aiohttp.ClientSession
) -> None:
    token = env0_token(dev_issuer, lifetime_seconds=48 * 3600 + 1)
    status, body = await post_token(http, sts, exchange_form(token))
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_a_token_living_exactly_48_hours_is_accepted(
    sts: RunningGcpSts, dev_issuer: ServedDevIssuer, http: aiohttp.ClientSession
) -> None:
    token = env0_token(dev_issuer, lifetime_seconds=48 * 3600)
    assert (await post_token(http, sts, exchange_form(token)))[0] == 200


async def test_a_token_signed_by_another_key_is_invalid_grant(
    sts: RunningGcpSts, dev_issuer: ServedDevIssuer, http: aiohttp.ClientSession
) -> None:
    genuine = env0_token(dev_issuer)
    claims = jwt.decode(genuine, dev_issuer.signing_key("env0")).claims
    impostor = RSAKey.generate_key(2048, private=True)
    kid = dev_issuer.signing_key("env0").kid
    forged = jwt.encode({"alg": "RS256", "kid": kid}, claims, impostor)
    status, body = await post_token(http, sts, exchange_form(forged))
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_a_token_from_another_issuer_is_invalid_grant(
    sts: RunningGcpSts, dev_issuer: ServedDevIssuer, http: aiohttp.ClientSession
) -> None:
    token = env0_token(dev_issuer, claims={"iss": "https://login.app.env0.com/"})
    status, body = await post_token(http, sts, exchange_form(token))
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_an_unsigned_token_is_invalid_grant(
    sts: RunningGcpSts, dev_issuer: ServedDevIssuer, http: aiohttp.ClientSession
) -> None:
    header, payload, _ = env0_token(dev_issuer).split(".")
    none_header = "eyJhbGciOiJub25lIn0"  # {"alg":"none"}
    for token in (f"{none_header}.{payload}.", f"{header}.{payload}."):
        status, body = await post_token(http, sts, exchange_form(token))
        assert (status, body["error"]) == (400, "invalid_grant")


async def test_a_failing_attribute_condition_is_unauthorized_client(
    sts: RunningGcpSts, dev_issuer: ServedDevIssuer, http: aiohttp.ClientSession
) -> None:
    token = env0_token(dev_issuer, claims={"apiKeyType": "user"})
    status, body = await post_token(http, sts, exchange_form(token))
    assert status == 400
    assert body == {
        "error": "unauthorized_client",
        "error_description": "The given credential is rejected by the attribute condition.",
    }


async def test_a_callable_attribute_condition_sees_the_claims(
    gcp_sts: StartGcpSts,
    dev_issuer: ServedDevIssuer,
    clock: FrozenClock,
    http: aiohttp.ClientSession,
) -> None:
    dev_issuer.clock = clock
    provider = env0_provider(
        dev_issuer, attribute_condition=lambda claims: claims.get("projectId") == PROJECT
    )
    sts = await gcp_sts(GcpStsConfig(providers=[provider]), clock)
    assert (await post_token(http, sts, exchange_form(env0_token(dev_issuer))))[0] == 200
    other = env0_token(dev_issuer, project=OTHER_PROJECT)
    assert (await post_token(http, sts, exchange_form(other)))[1]["error"] == "unauthorized_client"


async def test_an_attribute_condition_that_raises_rejects(
    gcp_sts: StartGcpSts,
    dev_issuer: ServedDevIssuer,
    clock: FrozenClock,
    http: aiohttp.ClientSession,
) -> None:
    dev_issuer.clock = clock

    def broken(claims: Mapping[str, object]) -> bool:
        raise KeyError("no such claim")

    sts = await gcp_sts(
        GcpStsConfig(providers=[env0_provider(dev_issuer, attribute_condition=broken)]), clock
    )
    status, body = await post_token(http, sts, exchange_form(env0_token(dev_issuer)))
    assert (status, body["error"]) == (400, "unauthorized_client")


async def test_an_oversized_request_is_refused(
    sts: RunningGcpSts, http: aiohttp.ClientSession
) -> None:
    status, _ = await post_token(http, sts, exchange_form("a" * (70 * 1024)))
    assert status in (400, 413)


def test_a_provider_needs_a_workload_identity_provider_name() -> None:
    with pytest.raises(ValueError, match="provider name"):
        WorkloadIdentityProvider(
            audience="//iam.googleapis.com/projects/x/providers/y",
            issuer="https://issuer.example",
            jwks_uri="https://issuer.example/jwks",
        )


def test_a_provider_refuses_a_plain_http_jwks_uri() -> None:
    with pytest.raises(ValueError, match="https"):
        WorkloadIdentityProvider(
            audience=PROVIDER_AUDIENCE,
            issuer="http://issuer.example",
            jwks_uri="http://issuer.example/jwks",
        )


async def test_an_issuer_whose_keys_cannot_be_fetched_is_invalid_grant(
    gcp_sts: StartGcpSts,
    dev_issuer: ServedDevIssuer,
    clock: FrozenClock,
    http: aiohttp.ClientSession,
) -> None:
    dev_issuer.clock = clock
    sts = await gcp_sts(GcpStsConfig(providers=[env0_provider(dev_issuer)]), clock)
    token = env0_token(dev_issuer)
    await dev_issuer.stop()
    status, body = await post_token(http, sts, exchange_form(token))
    assert (status, body["error"]) == (400, "invalid_grant")


def test_a_config_document_builds_providers_and_accounts() -> None:
    config = parse_gcp_sts_config(
        {
            "providers": [
                {
                    "audience": PROVIDER_AUDIENCE,
                    "issuer": "http://127.0.0.1:8401/env0",
                    "jwks_uri": "http://127.0.0.1:8401/env0/.well-known/jwks.json",
                    "attribute_condition": {"apiKeyType": "oidc"},
                }
            ],
            "service_accounts": [
                {
                    "email": SERVICE_ACCOUNT,
                    "members": [f"principalSet://iam.googleapis.com/{POOL}/*"],
                }
            ],
        }
    )
    [provider] = config.providers
    assert provider.pool == POOL
    assert provider.accepted_audiences == (DEFAULT_TOKEN_AUDIENCE,)
    assert provider.attribute_condition == {"apiKeyType": "oidc"}
    assert config.service_accounts[0].members == (f"principalSet://iam.googleapis.com/{POOL}/*",)


@pytest.mark.parametrize(
    "document",
    [
        {"providers": []},
        {"providers": [{"audience": PROVIDER_AUDIENCE, "issuer": "x"}]},
        {
            "providers": [
                {
                    "audience": PROVIDER_AUDIENCE,
                    "issuer": "https://issuer.example",
                    "jwks_uri": "https://issuer.example/jwks",
                    "attribute_mapping": {"google.subject": "assertion.sub + 'x'"},
                }
            ]
        },
    ],
)
def test_a_config_document_that_does_not_validate_is_refused(document: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"validation error|unsupported attribute mapping"):
        parse_gcp_sts_config(document)


# --- IAM Credentials -------------------------------------------------------------------------


async def test_impersonation_gives_a_service_account_token_in_googles_shape(
    sts: RunningGcpSts, dev_issuer: ServedDevIssuer, http: aiohttp.ClientSession
) -> None:
    federated = await federated_token(http, sts, env0_token(dev_issuer))
    status, body = await generate(http, sts, federated)
    assert status == 200
    assert set(body) == {"accessToken", "expireTime"}
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", str(body["expireTime"]))


async def test_impersonation_without_a_federated_token_is_unauthenticated(
    sts: RunningGcpSts, http: aiohttp.ClientSession
) -> None:
    for bearer in (None, "ya29.not-issued-here"):
        status, body = await generate(http, sts, bearer)
        assert status == 401
        error = body["error"]
        assert isinstance(error, dict)
        assert error["code"] == 401
        assert error["status"] == "UNAUTHENTICATED"


async def test_an_expired_federated_token_is_unauthenticated(
    sts: RunningGcpSts,
    dev_issuer: ServedDevIssuer,
    clock: FrozenClock,
    http: aiohttp.ClientSession,
) -> None:
    federated = await federated_token(http, sts, env0_token(dev_issuer))
    clock.advance(3601)
    assert (await generate(http, sts, federated))[0] == 401


async def test_an_unknown_service_account_is_permission_denied(
    sts: RunningGcpSts, dev_issuer: ServedDevIssuer, http: aiohttp.ClientSession
) -> None:
    federated = await federated_token(http, sts, env0_token(dev_issuer))
    status, body = await generate(
        http, sts, federated, email="nobody@example-project.iam.gserviceaccount.com"
    )
    assert status == 403
    assert body["error"] == {
        "code": 403,
        "message": "Permission 'iam.serviceAccounts.getAccessToken' denied on resource "
        "(or it may not exist).",
        "status": "PERMISSION_DENIED",
    }


async def test_a_principal_outside_the_binding_is_permission_denied(
    sts: RunningGcpSts, dev_issuer: ServedDevIssuer, http: aiohttp.ClientSession
) -> None:
    federated = await federated_token(http, sts, env0_token(dev_issuer, project=OTHER_PROJECT))
    assert (await generate(http, sts, federated))[0] == 403


async def test_a_subject_principal_member_lets_exactly_that_subject_in(
    gcp_sts: StartGcpSts,
    dev_issuer: ServedDevIssuer,
    clock: FrozenClock,
    http: aiohttp.ClientSession,
) -> None:
    dev_issuer.clock = clock
    token = env0_token(dev_issuer)
    subject = jwt.decode(token, dev_issuer.signing_key("env0")).claims["sub"]
    account = ServiceAccount(
        email=SERVICE_ACCOUNT,
        members=(f"principal://iam.googleapis.com/{POOL}/subject/{subject}",),
    )
    sts = await gcp_sts(
        GcpStsConfig(providers=[env0_provider(dev_issuer)], service_accounts=[account]), clock
    )
    federated = await federated_token(http, sts, token)
    assert (await generate(http, sts, federated))[0] == 200
    other = await federated_token(http, sts, env0_token(dev_issuer, claims={"sub": "someone"}))
    assert (await generate(http, sts, other))[0] == 403


@pytest.mark.parametrize(
    "body",
    [
        {"lifetime": "3600s"},
        {"scope": [], "lifetime": "3600s"},
        {"scope": [CLOUD_PLATFORM], "lifetime": "3601s"},
        {"scope": [CLOUD_PLATFORM], "lifetime": "an hour"},
    ],
)
async def test_bad_generate_requests_are_invalid_argument(
    sts: RunningGcpSts,
    dev_issuer: ServedDevIssuer,
    http: aiohttp.ClientSession,
    body: dict[str, object],
) -> None:
    federated = await federated_token(http, sts, env0_token(dev_issuer))
    status, answer = await generate(http, sts, federated, body=body)
    assert status == 400
    assert answer["error"]["status"] == "INVALID_ARGUMENT"  # type: ignore[index]


async def test_long_lifetimes_need_the_accounts_allowance(
    gcp_sts: StartGcpSts,
    dev_issuer: ServedDevIssuer,
    clock: FrozenClock,
    http: aiohttp.ClientSession,
) -> None:
    dev_issuer.clock = clock
    account = service_account_for_project(PROJECT, allow_long_lifetime=True)
    sts = await gcp_sts(
        GcpStsConfig(providers=[env0_provider(dev_issuer)], service_accounts=[account]), clock
    )
    federated = await federated_token(http, sts, env0_token(dev_issuer))
    status, body = await generate(
        http, sts, federated, body={"scope": [CLOUD_PLATFORM], "lifetime": "43200s"}
    )
    assert status == 200
    expires = datetime.strptime(str(body["expireTime"]), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert int(expires.timestamp()) == int(clock.now()) + 43200


# --- token info ------------------------------------------------------------------------------


async def test_tokeninfo_names_the_service_account_and_expiry(
    sts: RunningGcpSts, dev_issuer: ServedDevIssuer, http: aiohttp.ClientSession
) -> None:
    federated = await federated_token(http, sts, env0_token(dev_issuer))
    access_token = str((await generate(http, sts, federated))[1]["accessToken"])
    async with http.get(f"{sts.url}/v1/tokeninfo", params={"access_token": access_token}) as r:
        assert r.status == 200
        info = await r.json()
    assert info["email"] == SERVICE_ACCOUNT
    assert info["scope"] == CLOUD_PLATFORM
    assert info["expires_in"] == "3600"
    assert info["sub"].startswith(f"principal://iam.googleapis.com/{POOL}/subject/")


async def test_tokeninfo_of_an_unknown_token_is_an_error(
    sts: RunningGcpSts, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{sts.url}/v1/tokeninfo", params={"access_token": "nope"}) as r:
        assert r.status == 400
        assert (await r.json())["error"] == "invalid_token"


# --- google-auth against the stand-in --------------------------------------------------------


class FixedTokenSupplier(identity_pool.SubjectTokenSupplier):
    """Hands google-auth one subject token."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_subject_token(self, context: object, request: object) -> str:
        """The token (google-auth calls this on every refresh)."""
        return self.token


async def test_google_auth_refreshes_through_a_credential_file_and_impersonation(
    sts: RunningGcpSts,
    dev_issuer: ServedDevIssuer,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "oidc-token"
    token_file.write_text(env0_token(dev_issuer))
    credentials = identity_pool.Credentials.from_info(
        {
            "type": "external_account",
            "audience": PROVIDER_AUDIENCE,
            "subject_token_type": JWT_TYPE,
            "token_url": sts.token_url,
            "service_account_impersonation_url": sts.impersonation_url(SERVICE_ACCOUNT),
            "credential_source": {"file": str(token_file)},
        },
        scopes=[CLOUD_PLATFORM],
    )
    # google-auth is synchronous: refresh in a thread while the stand-in serves on this loop.
    await asyncio.to_thread(credentials.refresh, GoogleAuthRequest())
    assert credentials.valid
    async with http.get(
        f"{sts.url}/v1/tokeninfo", params={"access_token": str(credentials.token)}
    ) as r:
        assert r.status == 200
        assert (await r.json())["email"] == SERVICE_ACCOUNT


async def test_google_auth_refreshes_a_federated_token_from_a_supplier(
    sts: RunningGcpSts, dev_issuer: ServedDevIssuer, http: aiohttp.ClientSession
) -> None:
    credentials = identity_pool.Credentials(
        audience=PROVIDER_AUDIENCE,
        subject_token_type=JWT_TYPE,
        token_url=sts.token_url,
        subject_token_supplier=FixedTokenSupplier(env0_token(dev_issuer)),
        scopes=[CLOUD_PLATFORM],
    )
    await asyncio.to_thread(credentials.refresh, GoogleAuthRequest())
    assert credentials.valid
    async with http.get(
        f"{sts.url}/v1/tokeninfo", params={"access_token": str(credentials.token)}
    ) as r:
        info = await r.json()
    assert "email" not in info
    assert info["sub"].startswith(f"principal://iam.googleapis.com/{POOL}/subject/")


async def test_google_auth_sees_the_stand_ins_refusal(
    sts: RunningGcpSts, dev_issuer: ServedDevIssuer
) -> None:
    credentials = identity_pool.Credentials(
        audience=PROVIDER_AUDIENCE,
        subject_token_type=JWT_TYPE,
        token_url=sts.token_url,
        subject_token_supplier=FixedTokenSupplier(
            env0_token(dev_issuer, claims={"apiKeyType": "user"})
        ),
        scopes=[CLOUD_PLATFORM],
    )
    with pytest.raises(OAuthError, match="unauthorized_client"):
        await asyncio.to_thread(credentials.refresh, GoogleAuthRequest())
