"""A scripted stand-in for the broker's ``POST /v1/exchange`` and GitHub's ID-token endpoint.

Each records what it was asked (headers, query, body) so a test can assert it, and answers
from a script: a status with a body and headers, a dropped connection, or a hang.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from tokenbroker.backends.base import IssuedCredential
from tokenbroker.backends.registry import backend_class
from tokenbroker.client.discovery import GENERIC_VARIABLE, PLATFORM_VARIABLES
from tokenbroker.clock import isoformat_utc
from tokenbroker.output import parse_format, render
from tokenbroker.protocol import EXPIRES_AT_HEADER, LEASE_ID_HEADER

# Shaped like a JWT so any leak would be caught by the same patterns as a real one.
PLATFORM_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJydW5uZXItc2VjcmV0In0.c2lnbmF0dXJlLXNlY3JldA"
AWS_VALUES = {
    "AWS_ACCESS_KEY_ID": "ASIAFAKEEXAMPLE00001",
    "AWS_SECRET_ACCESS_KEY": "fake-secret-access-key-value",
    "AWS_SESSION_TOKEN": "fake-session-token-value",
    "AWS_REGION": "eu-west-1",
}
# Every variable the client reads: cleared so the CI running the tests cannot leak into them.
CLIENT_VARIABLES = (
    *(name for name, _ in PLATFORM_VARIABLES),
    "ACTIONS_ID_TOKEN_REQUEST_URL",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
    GENERIC_VARIABLE,
    "TOKENBROKER_URL",
    "TOKENBROKER_AUDIENCE",
    "ENV0_ENV",
    "GITHUB_ENV",
    "BASH_ENV",
    "VAULT_ADDR",
    "VAULT_TOKEN",
    "VAULT_NAMESPACE",
    "VAULT_CACERT",
    "VAULT_SKIP_VERIFY",
)


def clear_client_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset every variable the client reads, for this test."""
    for name in CLIENT_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@dataclass(frozen=True)
class Scripted:
    """One answer: ``status`` with a JSON ``body`` (or text), ``headers``; or drop / hang; or
    the stand-in's own success."""

    status: int = 200
    body: object = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    hang: bool = False
    # Answer as the stand-in does when nothing is scripted (its ``success``).
    succeed: bool = False


def refusal(
    status: int, error: str, reason: str, description: str, *, retry_after: str | None = None
) -> Scripted:
    """The broker's OAuth-style error answer, with a ``Retry-After`` when given."""
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    body = {
        "error": error,
        "error_description": description,
        "reason": reason,
        "request_id": "req-0123",
    }
    return Scripted(status, body, headers)


@dataclass
class Recorded:
    """What one request carried."""

    authorization: str | None
    query: dict[str, str]
    body: bytes
    path: str = ""


@dataclass
class StandIn:
    """A scripted server; answers with ``script`` in order, then with a success."""

    script: list[Scripted] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def then(self, *answers: Scripted) -> StandIn:
        """Answer the next requests with these, in order."""
        self.script.extend(answers)
        return self

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Record the request, then play the next scripted answer."""
        self.requests.append(
            Recorded(
                request.headers.get("Authorization"),
                dict(request.query),
                await request.read(),
                request.path,
            )
        )
        answer = self.script.pop(0) if self.script else None
        if answer is None or answer.succeed:
            return self.success(request)
        if answer.drop:
            # Close the socket without a word: the client sees a dropped connection.
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        if answer.hang:
            await self.release.wait()
        if isinstance(answer.body, str):
            return web.Response(status=answer.status, text=answer.body, headers=answer.headers)
        return web.json_response(answer.body, status=answer.status, headers=answer.headers)

    def success(self, request: web.Request) -> web.Response:
        """The default answer; subclasses say what success looks like."""
        raise NotImplementedError


class BrokerStandIn(StandIn):
    """``POST /v1/exchange`` answering like the broker, with AWS values in any format, each
    under a new lease (named in the headers; in the body too when ``lease_in_body``) that
    expires in ``lifetime_seconds``; ``POST /v1/leases/revoke`` lists them as not revocable."""

    lifetime_seconds: float = 3600.0
    lease_in_body: bool = False

    def success(self, request: web.Request) -> web.Response:
        """The credential in the requested format, as the broker renders it; or a dry run."""
        if request.path == "/v1/leases/revoke":
            leases = [
                {"id": lease_of(index), "credential": "prod-aws", "type": "aws_oidc"}
                for index, recorded in enumerate(self.requests)
                if recorded.path == "/v1/exchange"
            ]
            return web.json_response({"revoked": [], "not_revocable": leases})
        if request.query.get("dry_run") == "true":
            return web.json_response({"allowed": True, "checks": []})
        fmt = request.query.get("format", "json")
        if fmt.startswith("gcp-"):
            return web.json_response({"format": fmt})
        issued = IssuedCredential(
            values=AWS_VALUES,
            expires_at=datetime.now(UTC) + timedelta(seconds=self.lifetime_seconds),
        )
        lease = lease_of(len(self.requests) - 1)
        content_type, body = render(
            parse_format(fmt),
            "prod-aws",
            backend_class("aws_oidc"),
            issued,
            lease=lease if self.lease_in_body else None,
        )
        headers = {LEASE_ID_HEADER: lease, EXPIRES_AT_HEADER: isoformat_utc(issued.expires_at)}
        return web.Response(text=body, content_type=content_type, headers=headers)

    def exchanges(self) -> list[Recorded]:
        """The recorded requests of ``POST /v1/exchange``."""
        return [recorded for recorded in self.requests if recorded.path == "/v1/exchange"]

    def app(self) -> web.Application:
        """The stand-in's application."""
        app = web.Application()
        app.router.add_post("/v1/exchange", self.handle)
        app.router.add_post("/v1/leases/revoke", self.handle)
        return app

    def credential_requested(self, index: int = -1) -> object:
        """The ``credential`` of a recorded request's body (None without a body)."""
        raw = self.requests[index].body
        return json.loads(raw)["credential"] if raw else None


def lease_of(request_index: int) -> str:
    """The lease the broker stand-in issues for its request number ``request_index``."""
    return f"lse_standin{request_index:04d}"

    def credential_requested(self, index: int = -1) -> object:
        """The ``credential`` of a recorded request's body (None without a body)."""
        raw = self.requests[index].body
        return json.loads(raw)["credential"] if raw else None


class GitHubStandIn(StandIn):
    """GitHub Actions' ID-token endpoint: ``GET /token?api-version=2.0&audience=..``."""

    request_token: str = "actions-request-token-value"

    def success(self, request: web.Request) -> web.Response:
        """``{"count": .., "value": <token>}`` when the runner's request token is presented."""
        if request.headers.get("Authorization") != f"Bearer {self.request_token}":
            return web.json_response({"message": "Bad credentials"}, status=401)
        return web.json_response({"count": 1, "value": PLATFORM_TOKEN})

    def app(self) -> web.Application:
        """The stand-in's application."""
        app = web.Application()
        app.router.add_get("/token", self.handle)
        return app


async def serve_broker_stand_in(aiohttp_server: AiohttpServer) -> BrokerStandIn:
    """Start a broker stand-in on loopback (stopped with the test's servers)."""
    stand_in = BrokerStandIn()
    server = await aiohttp_server(stand_in.app())
    stand_in.url = str(server.make_url("")).rstrip("/")
    return stand_in


async def serve_github_stand_in(aiohttp_server: AiohttpServer) -> GitHubStandIn:
    """Start a GitHub ID-token endpoint stand-in on loopback."""
    stand_in = GitHubStandIn()
    server = await aiohttp_server(stand_in.app())
    stand_in.url = str(server.make_url("/token")) + "?api-version=2.0"
    return stand_in
