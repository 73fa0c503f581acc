"""Entra ID test servers: the stand-in over https with a runtime CA, and a scripted fake.

``await entra(config)`` starts ``tokenbroker.devstack.entra`` on loopback over TLS, signed by
the ``test_ca`` fixture's CA, and returns where it listens and the CA bundle's file (what
``REQUESTS_CA_BUNDLE`` or a credential's ``ca_cert`` trusts). ``scripted_entra`` answers what a
test scripts (throttling, 5xx, hangs) over plain http and records every form it was sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from tests.support.platform import ServedDevIssuer
from tokenbroker.clock import Clock
from tokenbroker.devstack import entra as stand_in
from tokenbroker.devstack.entra import DevCertificateAuthority, EntraConfig, EntraServer

TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID = "0b5f1c4e-8a1d-4e5b-9f2a-6c3d7e8f9a01"
OTHER_CLIENT_ID = "3c9d2e1f-0a4b-4c6d-8e7f-9a0b1c2d3e02"
SUBSCRIPTION_ID = "8e5b9c2d-1f3a-4b6c-9d7e-0f1a2b3c4d05"
ARM_SCOPE = "https://management.azure.com/.default"
# The env0 organization and project of the tests' tokens; env0's subject is the same for every
# deployment of an organization: what Entra keys on.
ORG = "66a38abf-69bc-4cb7-ad73-7f61e389079f"
PROJECT = "5b44fa6d-ecfd-40ab-8e69-14d6fe7c638c"
SUBJECT = "auth0|6f1d4e1a3c0b4d2e9a57"


@dataclass(frozen=True)
class RunningEntra:
    """A started stand-in: its state, its https base URL and the CA that signed it."""

    server: EntraServer
    url: str
    ca_pem: str
    ca_file: Path

    @property
    def token_url(self) -> str:
        """The tenant's v2 token endpoint."""
        return f"{self.url}/{TENANT_ID}/oauth2/v2.0/token"


StartEntra = Callable[..., Awaitable[RunningEntra]]


@pytest.fixture(scope="session")
def test_ca() -> DevCertificateAuthority:
    """A CA made for this test run; nothing outside the run trusts it."""
    return DevCertificateAuthority()


@pytest.fixture
def entra(
    aiohttp_server: AiohttpServer, test_ca: DevCertificateAuthority, tmp_path: Path
) -> StartEntra:
    """Start the stand-in with a config (and optionally a clock) for this test, over https."""

    async def start(config: EntraConfig, clock: Clock | None = None) -> RunningEntra:
        server = EntraServer(config, clock=clock)
        running = await aiohttp_server(server.app(), ssl=test_ca.server_context())
        ca_file = tmp_path / "entra-ca.pem"
        ca_file.write_text(test_ca.ca_pem)
        url = str(running.make_url("")).rstrip("/")
        assert url.startswith("https://")
        return RunningEntra(server=server, url=url, ca_pem=test_ca.ca_pem, ca_file=ca_file)

    return start


def env0_credential(
    issuer: ServedDevIssuer, name: str = "env0-deployer"
) -> stand_in.FederatedIdentityCredential:
    """A federated credential trusting the dev env0 issuer's SUBJECT."""
    return stand_in.FederatedIdentityCredential(
        name=name, issuer=issuer.issuer_url("env0"), subject=SUBJECT
    )


async def start_trusting_env0(
    entra: StartEntra, issuer: ServedDevIssuer, clock: Clock
) -> RunningEntra:
    """The stand-in with one application (CLIENT_ID) trusting the dev env0 issuer's SUBJECT."""
    issuer.clock = clock
    application = stand_in.EntraApplication(CLIENT_ID, (env0_credential(issuer),))
    return await entra(EntraConfig([stand_in.EntraTenant(TENANT_ID, (application,))]), clock)


def env0_assertion(issuer: ServedDevIssuer, **claims: object) -> str:
    """An env0-shaped token for Entra: SUBJECT, aud api://AzureADTokenExchange."""
    return issuer.mint(
        "env0",
        org=ORG,
        project=PROJECT,
        audience=stand_in.TOKEN_EXCHANGE_AUDIENCE,
        claims={"sub": SUBJECT, **claims},
    )


@dataclass(frozen=True)
class EntraReply:
    """One scripted answer: a status, JSON body and headers, or a hang past the timeout."""

    status: int = 200
    body: Mapping[str, object] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    hang: bool = False


def entra_error(error: str, code: int, message: str, status: int = 400) -> EntraReply:
    """An error answer in Entra's documented shape."""
    trace = "0000aaaa-11bb-cccc-dd22-eeeeee333333"
    correlation = "aaaa0000-bb11-2222-33cc-444444dddddd"
    return EntraReply(
        status=status,
        body={
            "error": error,
            "error_description": f"AADSTS{code}: {message}\r\nTrace ID: {trace}\r\n"
            f"Correlation ID: {correlation}\r\nTimestamp: 2026-01-09 02:02:12Z",
            "error_codes": [code],
            "timestamp": "2026-01-09 02:02:12Z",
            "trace_id": trace,
            "correlation_id": correlation,
        },
    )


@dataclass
class ScriptedEntra:
    """A fake token endpoint answering from a script; records each form it gets.

    With an empty script it answers an access token, so a test scripts only what it is about.
    """

    replies: list[EntraReply] = field(default_factory=list)
    requests: list[dict[str, str]] = field(default_factory=list)
    url: str = ""
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        """The aiohttp application: ``/<tenant>/oauth2/v2.0/token``."""
        app = web.Application()
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        return app

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.requests.append(
            {"tenant": request.match_info["tenant"], **{k: str(v) for k, v in form.items()}}
        )
        reply = (
            self.replies.pop(0)
            if self.replies
            else EntraReply(
                body={
                    "token_type": "Bearer",
                    "expires_in": 3599,
                    "ext_expires_in": 3599,
                    "access_token": "entra-access-token-value",
                }
            )
        )
        if reply.hang:
            # Never answer in time: the client's timeout must fire first.
            await self.release.wait()
        return web.json_response(dict(reply.body), status=reply.status, headers=reply.headers)


@pytest.fixture
async def scripted_entra(aiohttp_server: AiohttpServer) -> AsyncIterator[ScriptedEntra]:
    """A running ``ScriptedEntra`` on loopback; hung requests are released at teardown."""
    fake = ScriptedEntra()
    server = await aiohttp_server(fake.app())
    fake.url = str(server.make_url("")).rstrip("/")
    yield fake
    fake.release.set()
