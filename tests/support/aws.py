"""AWS test servers: moto in server mode, and a fake STS that answers with scripted errors.

moto never checks web identity tokens, so refusals are tested against ``FakeSts``, which speaks
STS's query protocol (form-encoded ``Action=...``) and its XML ``ErrorResponse`` bodies, and
records every request so a test can count attempts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.sax.saxutils import escape

import boto3
import pytest
from aiohttp import web
from bench.procs import free_port
from moto.server import ThreadedMotoServer
from pytest_aiohttp import AiohttpServer

from tokenbroker.backends.base import IssuedCredential

STS_NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"
# moto accepts any key pair; these are placeholders, not credentials.
MOTO_ACCESS_KEY = "testing"
MOTO_SECRET_KEY = "testing"
# An issued AWS credential, made up (not a real key pair), for rendering tests.
EXPIRES = datetime(2026, 11, 22, 2, 14, tzinfo=UTC)
AWS = IssuedCredential(
    values={
        "AWS_ACCESS_KEY_ID": "ASIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "secret/key+value",
        "AWS_SESSION_TOKEN": "session-token",
        "AWS_REGION": "eu-west-1",
    },
    expires_at=EXPIRES,
)


@dataclass(frozen=True)
class MotoServer:
    """A running moto server and the URL boto3 reaches it at."""

    url: str

    def client(
        self,
        service: str,
        *,
        access_key: str = MOTO_ACCESS_KEY,
        secret_key: str = MOTO_SECRET_KEY,
        session_token: str | None = None,
    ) -> Any:
        """A boto3 client against this server; moto's placeholder keys unless others are given."""
        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            aws_session_token=session_token,
        )

    def create_role(self, name: str) -> str:
        """Create an IAM role trusting web identities and return its ARN."""
        trust = (
            '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", '
            '"Principal": {"Federated": "arn:aws:iam::123456789012:oidc-provider/broker"}, '
            '"Action": "sts:AssumeRoleWithWebIdentity"}]}'
        )
        role = self.client("iam").create_role(RoleName=name, AssumeRolePolicyDocument=trust)
        arn: str = role["Role"]["Arn"]
        return arn


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoServer]:
    """moto in server mode on a free loopback port, for one test module."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield MotoServer(url=f"http://127.0.0.1:{port}")
    finally:
        server.stop()


@dataclass(frozen=True)
class StsReply:
    """One scripted answer: an STS error (code, HTTP status) or, with ``code=None``, success."""

    code: str | None = None
    status: int = 200
    message: str = ""
    error_type: str = "Sender"
    hang: bool = False
    # A 200 whose body is not STS's XML (what a wrong sts_endpoint answers), sent as is.
    raw: str | None = None


@dataclass
class FakeSts:
    """A scripted STS endpoint; ``requests`` and ``headers`` record each request, in order."""

    replies: list[StsReply] = field(default_factory=list)
    requests: list[dict[str, str]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    # Web identity tokens this STS refuses with AccessDenied, as a role's trust policy would.
    refused_tokens: set[str] = field(default_factory=set)
    url: str = ""
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def script(self, *replies: StsReply) -> None:
        """Answer the next requests with these replies, then with success."""
        self.replies.extend(replies)

    def app(self) -> web.Application:
        """The aiohttp application serving STS's query protocol on ``/``."""
        app = web.Application()
        app.router.add_post("/", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.requests.append({key: str(value) for key, value in form.items()})
        self.headers.append(dict(request.headers))
        if form.get("WebIdentityToken") in self.refused_tokens:
            reply = StsReply(
                code="AccessDenied",
                status=403,
                message="Not authorized to perform sts:AssumeRoleWithWebIdentity",
            )
        else:
            reply = self.replies.pop(0) if self.replies else StsReply()
        if reply.hang:
            # Never answer in time: the client's read timeout must fire first.
            await self.release.wait()
        if reply.raw is not None:
            return web.Response(status=200, text=reply.raw, content_type="text/html")
        if reply.code is None:
            return web.Response(
                status=200, text=_success_body(form.get("RoleArn"), form.get("RoleSessionName"))
            )
        body = (
            f'<ErrorResponse xmlns="{STS_NAMESPACE}"><Error><Type>{reply.error_type}</Type>'
            f"<Code>{escape(reply.code)}</Code><Message>{escape(reply.message)}</Message>"
            "</Error><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ErrorResponse>"
        )
        return web.Response(status=reply.status, text=body, content_type="text/xml")


def _success_body(role_arn: object, session_name: object) -> str:
    expiration = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    role = str(role_arn).rsplit("/", 1)[-1]
    return (
        f'<AssumeRoleWithWebIdentityResponse xmlns="{STS_NAMESPACE}">'
        "<AssumeRoleWithWebIdentityResult>"
        "<SubjectFromWebIdentityToken>org/o1/project/p1/user/u1</SubjectFromWebIdentityToken>"
        "<Audience>sts.amazonaws.com</Audience>"
        "<AssumedRoleUser>"
        f"<Arn>arn:aws:sts::123456789012:assumed-role/{escape(role)}/{escape(str(session_name))}</Arn>"
        f"<AssumedRoleId>AROACLKWSDQRAOEXAMPLE:{escape(str(session_name))}</AssumedRoleId>"
        "</AssumedRoleUser>"
        "<Credentials>"
        "<SessionToken>fake-session-token-value</SessionToken>"
        "<SecretAccessKey>fake-secret-access-key-value</SecretAccessKey>"
        f"<Expiration>{expiration}</Expiration>"
        "<AccessKeyId>ASIAFAKEEXAMPLE00001</AccessKeyId>"
        "</Credentials>"
        "<Provider>www.example.com</Provider>"
        "</AssumeRoleWithWebIdentityResult>"
        "<ResponseMetadata><RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId>"
        "</ResponseMetadata>"
        "</AssumeRoleWithWebIdentityResponse>"
    )


@pytest.fixture
async def fake_sts(aiohttp_server: AiohttpServer) -> AsyncIterator[FakeSts]:
    """A running ``FakeSts`` on loopback; hung requests are released at teardown."""
    fake = FakeSts()
    server = await aiohttp_server(fake.app())
    fake.url = str(server.make_url("/")).rstrip("/")
    yield fake
    fake.release.set()
