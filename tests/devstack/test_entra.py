"""The Entra ID stand-in: Microsoft's documented formats, assertions checked for real, over TLS.

Assertions are env0-shaped tokens really signed by the dev platform issuer; the stand-in finds
their keys through the issuer's OpenID discovery, as Entra ID does. MSAL, a real client, reads
the tenant metadata and gets a token.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msal
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from tests.support.entra import (
    ARM_SCOPE,
    CLIENT_ID,
    ORG,
    OTHER_CLIENT_ID,
    PROJECT,
    SUBJECT,
    TENANT_ID,
    RunningEntra,
    StartEntra,
    env0_assertion,
    start_trusting_env0,
)
from tests.support.platform import ServedDevIssuer
from tokenbroker.clock import FrozenClock
from tokenbroker.devstack.entra import (
    JWT_BEARER_ASSERTION,
    MAX_FEDERATED_CREDENTIALS,
    TOKEN_EXCHANGE_AUDIENCE,
    EntraApplication,
    EntraConfig,
    EntraTenant,
    FederatedIdentityCredential,
)


@pytest.fixture
def clock() -> FrozenClock:
    """One frozen clock for the issuer and the stand-in."""
    return FrozenClock(float(int(time.time())))


@pytest.fixture
async def stand_in(
    entra: StartEntra, dev_issuer: ServedDevIssuer, clock: FrozenClock
) -> RunningEntra:
    """The stand-in with one application trusting the dev env0 issuer's SUBJECT."""
    return await start_trusting_env0(entra, dev_issuer, clock)


@pytest.fixture
async def http(stand_in: RunningEntra) -> AsyncIterator[aiohttp.ClientSession]:
    """A client session trusting the stand-in's CA (verification on)."""
    context = ssl.create_default_context(cadata=stand_in.ca_pem)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        yield session


async def token_request(
    http: aiohttp.ClientSession,
    stand_in: RunningEntra,
    client_assertion: str,
    *,
    tenant: str = TENANT_ID,
    **overrides: str,
) -> tuple[int, dict[str, Any]]:
    """POST the client-credentials grant as azure-identity sends it."""
    form = {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "scope": ARM_SCOPE,
        "client_assertion_type": JWT_BEARER_ASSERTION,
        "client_assertion": client_assertion,
        **overrides,
    }
    async with http.post(f"{stand_in.url}/{tenant}/oauth2/v2.0/token", data=form) as response:
        body: dict[str, Any] = await response.json()
        return response.status, body


async def assert_entra_error(
    answer: tuple[int, dict[str, Any]], status: int, error: str, code: int
) -> dict[str, Any]:
    got_status, body = answer
    assert (got_status, body["error"], body["error_codes"]) == (status, error, [code]), body
    description = body["error_description"]
    assert description.startswith(f"AADSTS{code}: ")
    assert f"\r\nTrace ID: {body['trace_id']}\r\n" in description
    assert f"Correlation ID: {body['correlation_id']}" in description
    return body


# --- success ---------------------------------------------------------------------------------


async def test_a_matching_assertion_gets_an_access_token_signed_by_the_tenant(
    stand_in: RunningEntra, http: aiohttp.ClientSession, dev_issuer: ServedDevIssuer
) -> None:
    status, body = await token_request(http, stand_in, env0_assertion(dev_issuer))
    assert status == 200, body
    assert set(body) == {"token_type", "expires_in", "ext_expires_in", "access_token"}
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 3599)
    async with http.get(f"{stand_in.url}/{TENANT_ID}/discovery/v2.0/keys") as response:
        keys = await response.json()
    claims = jwt.decode(body["access_token"], KeySet.import_key_set(keys)).claims
    assert claims["aud"] == "https://management.azure.com"
    assert claims["iss"] == f"{stand_in.url}/{TENANT_ID}/v2.0"
    assert (claims["azp"], claims["tid"], claims["idtyp"]) == (CLIENT_ID, TENANT_ID, "app")
    [issued] = stand_in.server.issued
    assert (issued.federated_credential, issued.subject) == ("env0-deployer", SUBJECT)


async def test_the_tenant_metadata_is_the_openid_configuration_msal_reads(
    stand_in: RunningEntra, http: aiohttp.ClientSession
) -> None:
    url = f"{stand_in.url}/{TENANT_ID}/v2.0/.well-known/openid-configuration"
    async with http.get(url) as response:
        document = await response.json()
    assert response.status == 200
    authority = f"{stand_in.url}/{TENANT_ID}"
    assert document["token_endpoint"] == f"{authority}/oauth2/v2.0/token"
    assert document["authorization_endpoint"] == f"{authority}/oauth2/v2.0/authorize"
    assert document["issuer"] == f"{authority}/v2.0"
    assert document["jwks_uri"] == f"{authority}/discovery/v2.0/keys"


async def test_msal_gets_a_token_with_the_assertion_through_the_tenant_metadata(
    stand_in: RunningEntra, dev_issuer: ServedDevIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(stand_in.ca_file))
    client_assertion = env0_assertion(dev_issuer)

    def acquire() -> dict[str, Any]:
        app = msal.ConfidentialClientApplication(
            CLIENT_ID,
            client_credential={"client_assertion": lambda: client_assertion},
            authority=f"{stand_in.url}/{TENANT_ID}",
            instance_discovery=False,
        )
        result: dict[str, Any] = app.acquire_token_for_client(scopes=[ARM_SCOPE])
        return result

    # MSAL is synchronous: it runs in a thread while the stand-in serves on this loop.
    result = await asyncio.to_thread(acquire)
    assert "access_token" in result, result
    assert result["token_type"] == "Bearer"


# --- refusals --------------------------------------------------------------------------------


async def test_another_subject_has_no_matching_federated_credential(
    stand_in: RunningEntra, http: aiohttp.ClientSession, dev_issuer: ServedDevIssuer
) -> None:
    answer = await token_request(
        http, stand_in, env0_assertion(dev_issuer, sub="auth0|someone-else")
    )
    body = await assert_entra_error(answer, 400, "invalid_request", 70021)
    assert "Assertion Subject: 'auth0|someone-else'" in body["error_description"]
    assert stand_in.server.issued == []


async def test_another_audience_has_no_matching_federated_credential(
    stand_in: RunningEntra, http: aiohttp.ClientSession, dev_issuer: ServedDevIssuer
) -> None:
    answer = await token_request(
        http, stand_in, env0_assertion(dev_issuer, aud="https://prod.env0.com")
    )
    await assert_entra_error(answer, 400, "invalid_request", 70021)


async def test_another_issuer_has_no_matching_federated_credential(
    stand_in: RunningEntra, http: aiohttp.ClientSession, dev_issuer: ServedDevIssuer
) -> None:
    token = dev_issuer.mint(
        "gitpod",
        org=ORG,
        project=PROJECT,
        audience=TOKEN_EXCHANGE_AUDIENCE,
        claims={"sub": SUBJECT},
    )
    body = await assert_entra_error(
        await token_request(http, stand_in, token), 400, "invalid_request", 70021
    )
    assert f"Assertion Issuer: '{dev_issuer.issuer_url('gitpod')}'" in body["error_description"]


async def test_an_assertion_signed_by_another_key_fails_signature_validation(
    stand_in: RunningEntra, http: aiohttp.ClientSession, dev_issuer: ServedDevIssuer
) -> None:
    genuine = env0_assertion(dev_issuer)
    claims = jwt.decode(genuine, dev_issuer.signing_key("env0")).claims
    header = {"alg": "RS256", "kid": dev_issuer.signing_key("env0").kid}
    forged = jwt.encode(header, claims, RSAKey.generate_key(2048))
    answer = await token_request(http, stand_in, forged)
    await assert_entra_error(answer, 401, "invalid_client", 700027)


async def test_an_expired_assertion_is_outside_its_time_window(
    stand_in: RunningEntra,
    http: aiohttp.ClientSession,
    dev_issuer: ServedDevIssuer,
    clock: FrozenClock,
) -> None:
    token = env0_assertion(dev_issuer)
    # Past exp, and past the five minutes of clock skew Entra allows.
    clock.advance(24 * 3600 + 301)
    body = await assert_entra_error(
        await token_request(http, stand_in, token), 401, "invalid_client", 700024
    )
    assert "Client assertion is not within its valid time range" in body["error_description"]


async def test_an_assertion_not_valid_yet_is_outside_its_time_window(
    stand_in: RunningEntra,
    http: aiohttp.ClientSession,
    dev_issuer: ServedDevIssuer,
    clock: FrozenClock,
) -> None:
    token = env0_assertion(dev_issuer, nbf=int(clock.now()) + 600)
    await assert_entra_error(
        await token_request(http, stand_in, token), 401, "invalid_client", 700024
    )


async def test_an_unknown_application_is_refused_with_its_identifier(
    stand_in: RunningEntra, http: aiohttp.ClientSession, dev_issuer: ServedDevIssuer
) -> None:
    answer = await token_request(
        http, stand_in, env0_assertion(dev_issuer), client_id=OTHER_CLIENT_ID
    )
    body = await assert_entra_error(answer, 400, "unauthorized_client", 700016)
    assert f"Application with identifier '{OTHER_CLIENT_ID}'" in body["error_description"]


async def test_an_unknown_tenant_is_not_found(
    stand_in: RunningEntra, http: aiohttp.ClientSession, dev_issuer: ServedDevIssuer
) -> None:
    other = "00000000-0000-4000-8000-000000000000"
    answer = await token_request(http, stand_in, env0_assertion(dev_issuer), tenant=other)
    await assert_entra_error(answer, 400, "invalid_request", 90002)


async def test_a_scope_without_default_is_refused_for_client_credentials(
    stand_in: RunningEntra, http: aiohttp.ClientSession, dev_issuer: ServedDevIssuer
) -> None:
    answer = await token_request(
        http,
        stand_in,
        env0_assertion(dev_issuer),
        scope="https://management.azure.com/user_impersonation",
    )
    await assert_entra_error(answer, 400, "invalid_scope", 1002012)


async def test_a_request_without_an_assertion_is_an_unauthenticated_client(
    stand_in: RunningEntra, http: aiohttp.ClientSession
) -> None:
    answer = await token_request(http, stand_in, "")
    await assert_entra_error(answer, 401, "invalid_client", 7000218)


async def test_the_callers_client_request_id_is_the_correlation_id(
    stand_in: RunningEntra, http: aiohttp.ClientSession
) -> None:
    correlation = "5d0b2a9e-1c3f-4e7a-8b6d-0a1b2c3d4e5f"
    async with http.post(
        stand_in.token_url,
        data={"grant_type": "client_credentials", "client_id": CLIENT_ID, "scope": ARM_SCOPE},
        headers={"client-request-id": correlation},
    ) as response:
        body = await response.json()
    assert body["correlation_id"] == correlation


# --- Azure's limit of 20 federated credentials -------------------------------------------------


def numbered_credentials(issuer: str, count: int) -> tuple[FederatedIdentityCredential, ...]:
    return tuple(
        FederatedIdentityCredential(name=f"fic-{n}", issuer=issuer, subject=f"subject-{n}")
        for n in range(count)
    )


def test_an_application_holds_twenty_federated_credentials() -> None:
    credentials = numbered_credentials("https://issuer.example", MAX_FEDERATED_CREDENTIALS)
    assert MAX_FEDERATED_CREDENTIALS == 20
    assert len(EntraApplication(CLIENT_ID, credentials).federated_credentials) == 20


def test_an_application_with_a_twenty_first_federated_credential_is_refused() -> None:
    credentials = numbered_credentials("https://issuer.example", 21)
    with pytest.raises(ValueError, match="Azure allows at most 20"):
        EntraApplication(CLIENT_ID, credentials)


async def test_adding_a_twenty_first_federated_credential_to_a_running_tenant_is_refused(
    entra: StartEntra,
) -> None:
    credentials = numbered_credentials("https://issuer.example", 20)
    running = await entra(
        EntraConfig([EntraTenant(TENANT_ID, (EntraApplication(CLIENT_ID, credentials),))])
    )
    extra = FederatedIdentityCredential(name="fic-20", issuer="https://issuer.example", subject="s")
    with pytest.raises(ValueError, match="at most 20"):
        running.server.add_federated_credential(TENANT_ID, CLIENT_ID, extra)


def test_an_issuer_and_subject_pair_appears_once_per_application() -> None:
    twice = (
        FederatedIdentityCredential(name="a", issuer="https://issuer.example", subject="s"),
        FederatedIdentityCredential(name="b", issuer="https://issuer.example", subject="s"),
    )
    with pytest.raises(ValueError, match="only once"):
        EntraApplication(CLIENT_ID, twice)
