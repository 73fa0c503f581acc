"""Fixtures for inbound trust: a frozen clock, a client session, a scriptable JWKS server."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from joserfc.jwk import ECKey, RSAKey
from pytest_aiohttp import AiohttpServer

from tests.support.platform import ServedDevIssuer
from tokenbroker.clock import FrozenClock
from tokenbroker.config.models import IssuerSettings
from tokenbroker.identity.jwks import JwksCache
from tokenbroker.identity.validator import TokenValidator
from tokenbroker.metrics import Metrics

NOW = 1_750_000_000.0


@pytest.fixture
def clock() -> FrozenClock:
    """The time every identity test runs at."""
    return FrozenClock(NOW)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session like the app's."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


@pytest.fixture
def metrics() -> Metrics:
    """A fresh metrics registry per test."""
    return Metrics()


@pytest.fixture
def jwks(http: aiohttp.ClientSession, clock: FrozenClock, metrics: Metrics) -> JwksCache:
    """A JWKS cache on the frozen clock."""
    return JwksCache(http, clock, metrics, allow_private_backends=True)


@dataclass
class Env0Trust:
    """An env0-shaped dev issuer, the settings trusting it and a validator for them."""

    issuer: ServedDevIssuer
    settings: IssuerSettings
    validator: TokenValidator
    metrics: Metrics

    def mint(
        self,
        *,
        claims: Mapping[str, object] | None = None,
        issued_at: float | None = None,
        lifetime_seconds: int | None = None,
        audience: str | None = None,
    ) -> str:
        """A signed env0 token for org-1/project-1."""
        return self.issuer.mint(
            "env0",
            org="org-1",
            project="project-1",
            claims=claims,
            issued_at=issued_at,
            lifetime_seconds=lifetime_seconds,
            audience=audience,
        )

    def claims(self, **overrides: object) -> dict[str, object]:
        """The claims of an env0 token, for crafting one by hand."""
        return self.issuer.claims_for("env0", org="org-1", project="project-1", claims=overrides)

    def fetches(self, outcome: str = "ok") -> float:
        """How many JWKS fetches for this issuer ended with ``outcome``."""
        value = self.metrics.registry.get_sample_value(
            "tokenbroker_jwks_fetches_total",
            {"issuer": self.settings.name, "outcome": outcome},
        )
        return value or 0.0


MakeEnv0 = Callable[..., Env0Trust]


@pytest.fixture
def make_env0(
    dev_issuer: ServedDevIssuer, clock: FrozenClock, jwks: JwksCache, metrics: Metrics
) -> MakeEnv0:
    """Build an Env0Trust with issuer settings overridden."""
    dev_issuer.clock = clock

    def make(**overrides: object) -> Env0Trust:
        defaults = dev_issuer.issuer_settings("env0").model_dump()
        settings = IssuerSettings.model_validate({**defaults, **overrides})
        return Env0Trust(dev_issuer, settings, TokenValidator([settings], jwks, clock), metrics)

    return make


@pytest.fixture
def env0(make_env0: MakeEnv0) -> Env0Trust:
    """An env0 dev issuer trusted with default settings."""
    return make_env0()


# -- crafting tokens by hand ---------------------------------------------------------------


def b64url(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(value: Mapping[str, object]) -> str:
    """A JSON object as a JWT segment."""
    return b64url(json.dumps(value).encode())


def compact(header: Mapping[str, object], claims: Mapping[str, object], signature: bytes) -> str:
    """A compact JWS from its parts, whatever they are."""
    return f"{segment(header)}.{segment(claims)}.{b64url(signature)}"


def signing_input(token: str) -> bytes:
    """The bytes a JWS signature covers."""
    header, payload, _ = token.split(".")
    return f"{header}.{payload}".encode("ascii")


def hs256_with_secret(
    header: Mapping[str, object], claims: Mapping[str, object], secret: bytes
) -> str:
    """An HS256 token, as an attacker holding a public key would make it."""
    unsigned = f"{segment(header)}.{segment(claims)}"
    mac = hmac.new(secret, unsigned.encode("ascii"), hashlib.sha256).digest()
    return f"{unsigned}.{b64url(mac)}"


def decode_segment(token: str, index: int) -> dict[str, object]:
    """One segment of a token as JSON."""
    part = token.split(".")[index]
    data: dict[str, object] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return data


# -- a scriptable JWKS server ----------------------------------------------------------------


@dataclass
class FakeJwksServer:
    """Serves whatever a test scripts at /jwks.json and /.well-known/openid-configuration.

    Records how many requests each path got, and can hold responses until released.
    """

    keys: Sequence[Mapping[str, object]] = field(default_factory=list)
    status: int = 200
    content_type: str = "application/json"
    cache_control: str | None = None
    body: bytes | None = None
    stream_body: bytes | None = None
    discovery: dict[str, object] | None = None
    requests: dict[str, int] = field(default_factory=dict)
    gate: asyncio.Event | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    server: TestServer | None = None

    @property
    def base_url(self) -> str:
        """Where the server listens, without a trailing slash."""
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    @property
    def jwks_uri(self) -> str:
        """The JWKS URL."""
        return f"{self.base_url}/jwks.json"

    def settings(self, **overrides: object) -> IssuerSettings:
        """IssuerSettings naming this server as issuer and JWKS."""
        values: dict[str, object] = {
            "name": "fake",
            "issuer": self.base_url,
            "jwks_uri": self.jwks_uri,
            "audiences": ["broker"],
            "profile": "generic",
            "options": {"org_pointer": "/org"},
        }
        values.update(overrides)
        return IssuerSettings.model_validate(values)

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application()
        app.router.add_get("/jwks.json", self._jwks)
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        return app

    def count(self, path: str = "/jwks.json") -> int:
        """Requests received for ``path``."""
        return self.requests.get(path, 0)

    async def _jwks(self, request: web.Request) -> web.StreamResponse:
        self.requests[request.path] = self.count(request.path) + 1
        self.arrived.set()
        if self.gate is not None:
            await self.gate.wait()
        headers = {"Content-Type": self.content_type}
        if self.cache_control is not None:
            headers["Cache-Control"] = self.cache_control
        if self.stream_body is not None:
            # No Content-Length: the cache must cap what it reads, not trust a header.
            response = web.StreamResponse(status=self.status, headers=headers)
            response.enable_chunked_encoding()
            await response.prepare(request)
            for start in range(0, len(self.stream_body), 8192):
                await response.write(self.stream_body[start : start + 8192])
            await response.write_eof()
            return response
        body = self.body if self.body is not None else json.dumps({"keys": self.keys}).encode()
        return web.Response(status=self.status, body=body, headers=headers)

    async def _discovery(self, request: web.Request) -> web.Response:
        self.requests[request.path] = self.count(request.path) + 1
        document = self.discovery or {"issuer": self.base_url, "jwks_uri": self.jwks_uri}
        return web.json_response(document)


@pytest.fixture
async def jwks_server(aiohttp_server: AiohttpServer) -> FakeJwksServer:
    """A running FakeJwksServer with no keys yet."""
    fake = FakeJwksServer()
    fake.server = await aiohttp_server(fake.app())
    return fake


async def publish_env0_keys(
    issuer: ServedDevIssuer, aiohttp_server: AiohttpServer, cache_seconds: int
) -> FakeJwksServer:
    """A running FakeJwksServer publishing the dev issuer's env0 keys, cacheable that long."""
    published = FakeJwksServer(keys=issuer.public_jwks("env0")["keys"])  # type: ignore[arg-type]
    published.cache_control = f"max-age={cache_seconds}"
    published.server = await aiohttp_server(published.app())
    return published


def rsa_key(kid: str) -> RSAKey:
    """A fresh RS256 key with the kid."""
    return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"})


def ec_key(kid: str) -> ECKey:
    """A fresh P-256 key with the kid."""
    return ECKey.generate_key("P-256", parameters={"kid": kid, "use": "sig"})
