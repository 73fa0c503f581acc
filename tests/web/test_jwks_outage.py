"""Exchanges while the issuer's JWKS endpoint hangs or is down, and what /readyz says.

A real dev platform issuer signs the tokens; a scriptable aiohttp server publishes its keys and
can be made to hang (hold every request) or go down (stop listening).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient, AiohttpServer
from tests.identity.conftest import FakeJwksServer, publish_env0_keys
from tests.support.broker import ID_TOKEN, one_org_settings
from tests.support.platform import ServedDevIssuer

from tokenbroker.clock import FrozenClock
from tokenbroker.web.app import create_app

ORG = "org-1"
PROJECT = "project-1"
NOW = 1_750_000_000.0
CACHE_SECONDS = 300


@dataclass
class Broker:
    """A broker trusting the dev issuer's env0 keys as published by ``keys``."""

    client: TestClient[web.Request, web.Application]
    issuer: ServedDevIssuer
    keys: FakeJwksServer
    clock: FrozenClock

    async def exchange(self) -> aiohttp.ClientResponse:
        token = self.issuer.mint("env0", org=ORG, project=PROJECT)
        return await self.client.post(
            "/v1/exchange",
            json={"credential": "id-token"},
            headers={"Authorization": f"Bearer {token}"},
        )


@pytest.fixture
async def broker(
    tmp_path: Path,
    dev_issuer: ServedDevIssuer,
    aiohttp_server: AiohttpServer,
    aiohttp_client: AiohttpClient,
) -> Broker:
    clock = FrozenClock(NOW)
    dev_issuer.clock = clock
    published = await publish_env0_keys(dev_issuer, aiohttp_server, CACHE_SECONDS)
    issuer = dev_issuer.issuer_settings(
        "env0", jwks_uri=published.jwks_uri, jwks_cache_seconds=CACHE_SECONDS
    )
    settings = one_org_settings(tmp_path / "data", issuer, [ID_TOKEN], org=ORG, project=PROJECT)
    client = await aiohttp_client(create_app(settings, clock=clock))
    return Broker(client, dev_issuer, published, clock)


async def test_an_exchange_with_a_cached_kid_answers_while_the_jwks_endpoint_hangs(
    broker: Broker,
) -> None:
    assert (await broker.exchange()).status == 200
    broker.keys.gate = asyncio.Event()
    broker.keys.arrived.clear()
    broker.clock.advance(CACHE_SECONDS)  # the cached set is stale: it is refreshed behind
    # Well below the 10 s the shared session would wait on the hanging endpoint.
    async with asyncio.timeout(3):
        for _ in range(3):
            assert (await broker.exchange()).status == 200
        await broker.keys.arrived.wait()
    assert broker.keys.count() == 2  # one refresh in flight, however many exchanges
    broker.keys.gate.set()


async def test_an_unknown_kid_while_the_jwks_endpoint_is_down_is_a_retryable_503(
    broker: Broker,
) -> None:
    assert (await broker.exchange()).status == 200
    assert broker.keys.server is not None
    await broker.keys.server.close()
    broker.issuer.rotate("env0")  # tokens now carry a kid the broker has not seen
    broker.clock.advance(60)
    response = await broker.exchange()
    assert response.status == 503
    body = await response.json()
    assert (body["error"], body["reason"]) == ("temporarily_unavailable", "jwks_unavailable")
    assert int(response.headers["Retry-After"]) >= 1


async def test_readiness_names_an_issuer_whose_jwks_was_never_fetched(
    broker: Broker,
) -> None:
    assert broker.keys.server is not None
    await broker.keys.server.close()
    response = await broker.client.get("/readyz")
    assert response.status == 503
    checks = (await response.json())["checks"]
    assert checks["jwks:dev-env0"].startswith("failing")


async def test_readiness_is_ok_once_the_jwks_was_fetched(broker: Broker) -> None:
    response = await broker.client.get("/readyz")
    assert response.status == 200
    assert (await response.json())["checks"]["jwks:dev-env0"] == "ok"
