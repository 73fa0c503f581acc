"""The issuer's JWKS endpoint hung and down: cached keys serve, a new kid waits for the keys.

The dev platform issuer signs the tokens; a scriptable server publishes its keys, and hangs
(holds every request) or goes down (stops listening) and comes back on the same port. The
broker's clock is frozen and moved on by the test, so the key set goes stale and the refetch
interval passes when the test says; the times in the figures are wall-clock times.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient, AiohttpServer

from tests.faults.conftest import (
    CLIENT_TIMEOUT_SECONDS,
    Answer,
    Broker,
    Figures,
    fault_settings,
    seconds_until_success,
)
from tests.identity.conftest import FakeJwksServer, publish_env0_keys
from tests.support.broker import ID_TOKEN
from tests.support.platform import ServedDevIssuer
from tokenbroker.clock import FrozenClock
from tokenbroker.web.app import create_app

NOW = 1_750_000_000.0
CACHE_SECONDS = 300
REFETCH_SECONDS = 1


@dataclass
class JwksFault:
    """The broker, the server publishing the issuer's keys, and the broker's clock."""

    broker: Broker
    published: FakeJwksServer
    clock: FrozenClock

    def rotate(self) -> None:
        """The issuer signs with a new key, and publishes it (once its endpoint answers)."""
        self.broker.issuer.rotate("env0")
        self.published.keys = self.broker.issuer.public_jwks("env0")["keys"]  # type: ignore[assignment]

    async def recovers(self) -> float:
        """Seconds until an exchange succeeds, the refetch interval passing between tries."""

        async def attempt() -> Answer:
            self.clock.advance(REFETCH_SECONDS)
            return await self.broker.exchange("id-token")

        return await seconds_until_success(attempt)


@pytest.fixture
async def fault(
    tmp_path: Path,
    dev_issuer: ServedDevIssuer,
    aiohttp_server: AiohttpServer,
    aiohttp_client: AiohttpClient,
) -> JwksFault:
    clock = FrozenClock(NOW)
    dev_issuer.clock = clock
    published = await publish_env0_keys(dev_issuer, aiohttp_server, CACHE_SECONDS)
    issuer = dev_issuer.issuer_settings(
        "env0",
        jwks_uri=published.jwks_uri,
        jwks_cache_seconds=CACHE_SECONDS,
        jwks_refetch_interval_seconds=REFETCH_SECONDS,
    )
    settings = fault_settings(tmp_path, issuer, [ID_TOKEN])
    broker = Broker(await aiohttp_client(create_app(settings, clock=clock)), dev_issuer)
    assert (await broker.exchange("id-token")).status == 200
    return JwksFault(broker, published, clock)


async def test_a_hung_jwks_endpoint_stalls_no_cached_kid_and_a_new_kid_for_the_timeout(
    fault: JwksFault, figures: Figures
) -> None:
    fault.published.gate = asyncio.Event()
    fault.published.arrived.clear()
    fault.clock.advance(CACHE_SECONDS)  # the key set is stale: it is refreshed behind
    cached = await fault.broker.exchange("id-token")
    assert cached.status == 200
    async with asyncio.timeout(CLIENT_TIMEOUT_SECONDS):
        await fault.published.arrived.wait()  # the refresh is in flight, and hangs
    fault.rotate()
    new_kid = await fault.broker.exchange("id-token")
    assert (new_kid.status, new_kid.reason) == (503, "jwks_unavailable")
    assert new_kid.retry_after is not None
    assert not new_kid.issued_anything
    # It waits for the fetch in flight, which the outbound timeout ends.
    assert new_kid.seconds < CLIENT_TIMEOUT_SECONDS + 2

    fault.published.gate.set()
    recovery = await fault.recovers()
    figures.record("JWKS hung, token with a cached kid", cached, None, "as usual")
    figures.record("JWKS hung, token with a new kid", new_kid, recovery, "nothing")


async def test_a_jwks_endpoint_that_is_down_serves_cached_kids_and_a_new_kid_once_it_is_back(
    fault: JwksFault, aiohttp_server: AiohttpServer, figures: Figures
) -> None:
    assert fault.published.server is not None
    port = fault.published.server.port
    await fault.published.server.close()
    fault.clock.advance(CACHE_SECONDS)
    cached = await fault.broker.exchange("id-token")
    assert cached.status == 200
    fault.rotate()
    fault.clock.advance(REFETCH_SECONDS)
    new_kid = await fault.broker.exchange("id-token")
    assert (new_kid.status, new_kid.reason) == (503, "jwks_unavailable")
    assert new_kid.retry_after is not None
    assert not new_kid.issued_anything

    fault.published.server = await aiohttp_server(fault.published.app(), port=port)
    recovery = await fault.recovers()
    figures.record("JWKS down, token with a cached kid", cached, None, "as usual")
    figures.record("JWKS down, token with a new kid", new_kid, recovery, "nothing")
