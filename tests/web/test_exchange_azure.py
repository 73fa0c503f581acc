"""POST /v1/exchange end to end for Azure: dev platform issuer -> broker -> Entra ID stand-in.

env0-shaped tokens, really signed, are exchanged in passthrough and mint mode; the stand-in
checks every assertion against its issuer's JWKS (the platform's, or the broker's own) and a
federated identity credential, over TLS with a CA made for the run. azure-identity, the real
client, gets tokens from the stand-in with the broker's ``format=azure-federated-token``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from azure.identity import ClientAssertionCredential, WorkloadIdentityCredential
from joserfc import jwt
from pytest_aiohttp import AiohttpClient
from tests.support.broker import (
    ReservedPort,
    ServedBroker,
    credential_entry,
    one_org_settings,
    post_token_exchange,
)
from tests.support.entra import (
    ARM_SCOPE,
    CLIENT_ID,
    OTHER_CLIENT_ID,
    SUBSCRIPTION_ID,
    TENANT_ID,
    RunningEntra,
    StartEntra,
)
from tests.support.platform import ServedDevIssuer

from tokenbroker.devstack.entra import (
    TOKEN_EXCHANGE_AUDIENCE,
    EntraApplication,
    EntraConfig,
    EntraTenant,
    FederatedIdentityCredential,
)
from tokenbroker.web.app import create_app

ORG = "66a38abf-69bc-4cb7-ad73-7f61e389079f"
PROJECT = "5b44fa6d-ecfd-40ab-8e69-14d6fe7c638c"
# env0's subject is the same for every deployment of an organization: what Entra keys on.
SUBJECT = "auth0|6f1d4e1a3c0b4d2e9a57"
FEDERATED_TOKEN = "azure-federated-token"


@dataclass
class Broker(ServedBroker):
    """A running broker wired to the dev platform issuer and the Entra stand-in."""

    entra: RunningEntra

    def token(self, **claims: object) -> str:
        """A signed env0 token of the organization's project, with env0's stable subject."""
        return self.issuer.mint("env0", org=ORG, project=PROJECT, claims={"sub": SUBJECT, **claims})


def azure_credential(name: str, entra: RunningEntra, **extra: object) -> dict[str, object]:
    settings: dict[str, object] = {
        "tenant_id": TENANT_ID,
        "client_id": CLIENT_ID,
        "subscription_id": SUBSCRIPTION_ID,
        "authority_host": entra.url,
        # The broker trusts the stand-in's CA for this credential only.
        "ca_cert": entra.ca_pem,
        "max_retries": 0,
    }
    return credential_entry(name, "azure_oidc", settings, **extra)


@pytest.fixture
async def broker(
    tmp_path: Path,
    dev_issuer: ServedDevIssuer,
    entra: StartEntra,
    aiohttp_client: AiohttpClient,
) -> Broker:
    reserved = ReservedPort()
    port = reserved.port
    public_url = f"http://127.0.0.1:{port}"
    env0_issuer = dev_issuer.issuer_url("env0")
    application = EntraApplication(
        CLIENT_ID,
        (
            # Passthrough: env0's own token, with the audience env0 gives it.
            FederatedIdentityCredential(
                name="env0-direct",
                issuer=env0_issuer,
                subject=SUBJECT,
                audiences=(dev_issuer.default_audience("env0"),),
            ),
            # Mint: the broker's token, for Entra's default audience.
            FederatedIdentityCredential(name="broker", issuer=public_url, subject=SUBJECT),
        ),
    )
    # An application that trusts nobody yet.
    stranger = EntraApplication(OTHER_CLIENT_ID)
    running = await entra(EntraConfig([EntraTenant(TENANT_ID, (application, stranger))]))
    credentials = [
        azure_credential("azure", running),
        # No audience: the type's default (api://AzureADTokenExchange) is minted for.
        azure_credential("azure-minted", running, token="mint"),
        azure_credential("azure-stranger", running, settings={"client_id": OTHER_CLIENT_ID}),
    ]
    issuer = dev_issuer.issuer_settings("env0")
    settings = one_org_settings(
        tmp_path / "broker",
        issuer,
        credentials,
        org=ORG,
        project=PROJECT,
        server={"public_url": public_url},
    )
    app = create_app(settings)
    client: TestClient[web.Request, None] = await aiohttp_client(reserved.server(app))
    return Broker(client, app, public_url, dev_issuer, running)


async def access_token_claims(broker: Broker, token: str) -> dict[str, Any]:
    """An access token's claims, verified against the stand-in tenant's published keys."""
    keys_ = broker.entra.server.access_token_keys()
    claims: dict[str, Any] = dict(jwt.decode(token, keys_).claims)
    return claims


@pytest.mark.parametrize(
    ("credential", "federated"), [("azure", "env0-direct"), ("azure-minted", "broker")]
)
async def test_an_env0_token_gets_an_entra_access_token_for_arm(
    broker: Broker, credential: str, federated: str
) -> None:
    response = await broker.exchange(broker.token(), credential)
    body = await response.json()
    assert response.status == 200, body
    assert (body["credential"], body["type"]) == (credential, "azure_oidc")
    values = body["values"]
    claims = await access_token_claims(broker, values["AZURE_ACCESS_TOKEN"])
    assert (claims["aud"], claims["azp"], claims["tid"]) == (
        "https://management.azure.com",
        CLIENT_ID,
        TENANT_ID,
    )
    assert (values["AZURE_CLIENT_ID"], values["ARM_TENANT_ID"]) == (CLIENT_ID, TENANT_ID)
    assert values["ARM_SUBSCRIPTION_ID"] == SUBSCRIPTION_ID
    assert values["ARM_USE_OIDC"] == "true"
    [issued] = broker.entra.server.issued
    assert (issued.federated_credential, issued.subject) == (federated, SUBJECT)


async def test_a_minted_assertion_is_for_entras_default_audience(broker: Broker) -> None:
    response = await broker.exchange(broker.token(), "azure-minted")
    body = await response.json()
    assertion = body["values"]["ARM_OIDC_TOKEN"]
    claims = dict(jwt.decode(assertion, await broker.jwks()).claims)
    assert (claims["iss"], claims["sub"]) == (broker.public_url, SUBJECT)
    assert claims["aud"] == TOKEN_EXCHANGE_AUDIENCE


async def test_the_federated_token_format_is_the_bare_assertion_without_calling_entra(
    broker: Broker,
) -> None:
    response = await broker.exchange(
        broker.token(), "azure-minted", query=f"?format={FEDERATED_TOKEN}"
    )
    text = await response.text()
    assert response.status == 200, text
    assert response.content_type == "text/plain"
    assert response.headers["Cache-Control"] == "no-store"
    claims = dict(jwt.decode(text, await broker.jwks()).claims)
    assert claims["aud"] == TOKEN_EXCHANGE_AUDIENCE
    assert broker.entra.server.issued == []
    [event] = await broker.audit("azure-minted")
    assert (event.outcome, event.reason) == ("success", "outbound_token")


async def test_in_passthrough_the_federated_token_is_the_platform_token(broker: Broker) -> None:
    token = broker.token()
    response = await broker.exchange(token, "azure", query=f"?format={FEDERATED_TOKEN}")
    assert await response.text() == token


async def test_an_application_without_a_matching_federated_credential_is_a_403_aadsts70021(
    broker: Broker,
) -> None:
    response = await broker.exchange(broker.token(), "azure-stranger")
    body = await response.json()
    assert (response.status, body["error"], body["reason"]) == (
        403,
        "access_denied",
        "backend_refused",
    ), body
    assert body["error_description"].startswith(
        "Entra ID refused the client assertion: AADSTS70021: "
        "No matching federated identity record found for presented assertion."
    )
    assert body["upstream"]["error_codes"] == [70021]
    assert body["upstream"]["trace_id"]
    [event] = await broker.audit("azure-stranger")
    assert (event.outcome, event.reason) == ("denied", "backend_refused")


async def test_rfc8693_returns_the_entra_access_token(broker: Broker) -> None:
    response = await post_token_exchange(broker.client, broker.token(), "azure-minted")
    body = await response.json()
    assert response.status == 200, body
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    claims = await access_token_claims(broker, body["access_token"])
    assert claims["azp"] == CLIENT_ID


async def test_no_token_reaches_logs_or_audit(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = broker.token()
    issued = await (await broker.exchange(token, "azure-minted")).json()
    federated = await (
        await broker.exchange(token, "azure", query=f"?format={FEDERATED_TOKEN}")
    ).text()
    await broker.exchange(token, "azure-stranger")
    events = [*await broker.audit("azure-minted"), *await broker.audit("azure-stranger")]
    captured = "\n".join(
        [record.getMessage() + json.dumps(vars(record), default=str) for record in caplog.records]
        + [repr(event) for event in events]
    )
    values = issued["values"]
    for secret in (token, federated, values["AZURE_ACCESS_TOKEN"], values["ARM_OIDC_TOKEN"]):
        assert secret not in captured
        assert secret.split(".")[1] not in captured


# --- azure-identity, the real client ----------------------------------------------------------


def read_federated_token(broker_url: str, credential: str, platform_token: str) -> str:
    """What a runner's callback does: ask the broker for the bare assertion (sync, stdlib)."""
    request = urllib.request.Request(  # noqa: S310 - the test broker on loopback
        f"{broker_url}/v1/exchange?format={FEDERATED_TOKEN}",
        data=json.dumps({"credential": credential}).encode(),
        headers={"Authorization": f"Bearer {platform_token}", "Content-Type": "application/json"},
        method="POST",
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        text: str = response.read().decode()
        return text


@pytest.fixture
def trusts_the_stand_in(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    """azure-identity's transport (requests) trusts the stand-in's CA, and nothing is proxied."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(broker.entra.ca_file))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.mark.usefixtures("trusts_the_stand_in")
@pytest.mark.parametrize("credential", ["azure", "azure-minted"])
async def test_client_assertion_credential_gets_a_token_with_the_brokers_assertion(
    broker: Broker, credential: str
) -> None:
    platform_token = broker.token()
    azure = ClientAssertionCredential(
        TENANT_ID,
        CLIENT_ID,
        lambda: read_federated_token(broker.public_url, credential, platform_token),
        authority=broker.entra.url,
        disable_instance_discovery=True,
    )
    # azure-identity is synchronous: it runs in a thread while the broker serves on this loop.
    access = await asyncio.to_thread(azure.get_token, ARM_SCOPE)
    claims = await access_token_claims(broker, access.token)
    assert (claims["azp"], claims["aud"]) == (CLIENT_ID, "https://management.azure.com")
    [issued] = broker.entra.server.issued
    assert issued.subject == SUBJECT
    # The broker handed out the assertion only: it never called Entra itself.
    [event] = await broker.audit(credential)
    assert event.reason == "outbound_token"


@pytest.mark.usefixtures("trusts_the_stand_in")
async def test_workload_identity_credential_reads_the_token_file_the_cli_wrote(
    broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "azure-federated-token"
    # The runner's client writes the file, as a CI step before the job's Azure tools run.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tokenbroker",
        "exchange",
        "--broker",
        broker.public_url,
        "--credential",
        "azure-minted",
        "--format",
        FEDERATED_TOKEN,
        "--output",
        str(token_file),
        "-q",
        env={"PATH": "/usr/bin:/bin", "ENV0_OIDC_TOKEN": broker.token(), "NO_PROXY": "*"},
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    # Read as-is by azure-identity: a trailing newline would travel inside the assertion.
    assert not token_file.read_text().endswith("\n")
    azure = WorkloadIdentityCredential(
        tenant_id=TENANT_ID,
        client_id=CLIENT_ID,
        token_file_path=str(token_file),
        authority=broker.entra.url,
        disable_instance_discovery=True,
    )
    access = await asyncio.to_thread(azure.get_token, ARM_SCOPE)
    claims = await access_token_claims(broker, access.token)
    assert claims["azp"] == CLIENT_ID
    [issued] = broker.entra.server.issued
    assert (issued.federated_credential, issued.subject) == ("broker", SUBJECT)
