"""GCP test servers: the STS + IAM Credentials stand-in, and a scripted fake for error paths.

``await gcp_sts(config)`` starts ``tokenbroker.devstack.gcp_sts`` on loopback for the test and
returns where it listens; ``workload_provider(...)`` builds a provider for the test pool below.
``scripted_google`` answers what a test scripts (5xx, hangs, odd ``expireTime`` formats).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from tokenbroker.clock import Clock
from tokenbroker.devstack.gcp_sts import (
    AttributeCondition,
    GcpStsConfig,
    GcpStsServer,
    ServiceAccount,
    WorkloadIdentityProvider,
)

PROJECT_NUMBER = "123456789012"
POOL = f"projects/{PROJECT_NUMBER}/locations/global/workloadIdentityPools/ci-pool"
PROVIDER_AUDIENCE = f"//iam.googleapis.com/{POOL}/providers/env0-provider"
# Google's default allowed audience of a provider: its name as an https URL.
DEFAULT_TOKEN_AUDIENCE = f"https:{PROVIDER_AUDIENCE}"
SERVICE_ACCOUNT = "deployer@example-project.iam.gserviceaccount.com"


def workload_provider(
    issuer: str,
    jwks_uri: str,
    *,
    attribute_condition: AttributeCondition | None = None,
    allowed_audiences: Sequence[str] = (),
) -> WorkloadIdentityProvider:
    """A provider of the test pool trusting one issuer, mapping env0's project to an attribute."""
    return WorkloadIdentityProvider(
        audience=PROVIDER_AUDIENCE,
        issuer=issuer,
        jwks_uri=jwks_uri,
        allowed_audiences=tuple(allowed_audiences),
        attribute_mapping={
            "google.subject": "assertion.sub",
            "attribute.project": "assertion.projectId",
        },
        attribute_condition=attribute_condition,
    )


def service_account_for_project(
    project: str, *, allow_long_lifetime: bool = False
) -> ServiceAccount:
    """The test service account, impersonable by every identity of one project."""
    return ServiceAccount(
        email=SERVICE_ACCOUNT,
        members=(f"principalSet://iam.googleapis.com/{POOL}/attribute.project/{project}",),
        allow_long_lifetime=allow_long_lifetime,
    )


@dataclass(frozen=True)
class RunningGcpSts:
    """A started stand-in: its state and where its two APIs listen."""

    server: GcpStsServer
    url: str

    @property
    def token_url(self) -> str:
        """The STS token endpoint (``token_url`` of a credential)."""
        return f"{self.url}/v1/token"

    @property
    def iam_endpoint(self) -> str:
        """The IAM Credentials base URL (``iam_endpoint`` of a credential)."""
        return self.url

    def impersonation_url(self, email: str) -> str:
        """google-auth's ``service_account_impersonation_url`` for an account."""
        return f"{self.url}/v1/projects/-/serviceAccounts/{email}:generateAccessToken"


StartGcpSts = Callable[..., Awaitable[RunningGcpSts]]


@pytest.fixture
def gcp_sts(aiohttp_server: AiohttpServer) -> StartGcpSts:
    """Start the stand-in with a config (and optionally a clock) for this test."""

    async def start(config: GcpStsConfig, clock: Clock | None = None) -> RunningGcpSts:
        server = GcpStsServer(config, clock=clock)
        running = await aiohttp_server(server.app())
        return RunningGcpSts(server=server, url=str(running.make_url("")).rstrip("/"))

    return start


@dataclass(frozen=True)
class GoogleReply:
    """One scripted answer: a status and JSON body, or a hang past the client's timeout."""

    status: int = 200
    body: Mapping[str, object] = field(default_factory=dict)
    hang: bool = False


@dataclass
class ScriptedGoogle:
    """A fake STS + IAM Credentials answering from scripts; records each request it gets.

    With an empty script, STS answers a federated token and IAM a token expiring at
    ``expire_time``, so a test scripts only the answers it is about.
    """

    sts_replies: list[GoogleReply] = field(default_factory=list)
    iam_replies: list[GoogleReply] = field(default_factory=list)
    sts_requests: list[dict[str, str]] = field(default_factory=list)
    iam_requests: list[tuple[str, dict[str, str], object]] = field(default_factory=list)
    expire_time: str = "2030-01-01T00:00:00Z"
    url: str = ""
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        """The aiohttp application: ``/v1/token`` and ``generateAccessToken``."""
        app = web.Application()
        app.router.add_post("/v1/token", self._token)
        app.router.add_post("/v1/projects/{project}/serviceAccounts/{target}", self._generate)
        return app

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.sts_requests.append({key: str(value) for key, value in form.items()})
        default = GoogleReply(
            body={
                "access_token": "federated-access-token-value",
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer",
                "expires_in": 3600,
            }
        )
        return await self._answer(self.sts_replies, default)

    async def _generate(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.iam_requests.append((request.match_info["target"], dict(request.headers), body))
        default = GoogleReply(
            body={"accessToken": "service-account-token-value", "expireTime": self.expire_time}
        )
        return await self._answer(self.iam_replies, default)

    async def _answer(self, script: list[GoogleReply], default: GoogleReply) -> web.Response:
        reply = script.pop(0) if script else default
        if reply.hang:
            # Never answer in time: the client's timeout must fire first.
            await self.release.wait()
        return web.json_response(dict(reply.body), status=reply.status)


@pytest.fixture
async def scripted_google(aiohttp_server: AiohttpServer) -> AsyncIterator[ScriptedGoogle]:
    """A running ``ScriptedGoogle`` on loopback; hung requests are released at teardown."""
    fake = ScriptedGoogle()
    server = await aiohttp_server(fake.app())
    fake.url = str(server.make_url("")).rstrip("/")
    yield fake
    fake.release.set()
