"""A flood from one client address is refused before its tokens are read, and audited once.

A real app on a real SQLite store; junk bearer tokens from 127.0.0.1, and a second client bound
to 127.0.0.2 (a loopback address of its own) to show that other addresses keep their bucket.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from tokenbroker.backends.registry import INSTALLED
from tokenbroker.clock import FrozenClock
from tokenbroker.config import Settings, parse_settings
from tokenbroker.policy.models import AuditEvent
from tokenbroker.store import Store
from tokenbroker.web import keys
from tokenbroker.web.app import create_app

Client = TestClient[web.Request, web.Application]
NOW = 1_800_000_000.0
BURST = 5
FLOOD = 50
JUNK = {"Authorization": "Bearer not-a-jwt"}


def limited_settings(tmp_path: Path) -> Settings:
    """No issuer at all: every token is junk. Five requests per address at once, 1 a second."""
    return parse_settings(
        {
            "server": {"data_dir": str(tmp_path)},
            "security": {"allow_private_backends": True},
            "rate_limit": {"per_client_burst": BURST, "per_client_per_minute": 60},
        },
        {},
    )


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
async def client(tmp_path: Path, clock: FrozenClock, aiohttp_client: AiohttpClient) -> Client:
    return await aiohttp_client(create_app(limited_settings(tmp_path), clock=clock))


@pytest.fixture
async def from_other_address() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session whose connections come from 127.0.0.2."""
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def flood(client: Client, count: int, path: str = "/v1/exchange") -> list[int]:
    statuses = []
    for _ in range(count):
        async with client.post(path, data=b"{not json", headers=JUNK) as response:
            statuses.append(response.status)
    return statuses


async def audit_events(client: Client) -> list[AuditEvent]:
    return await client.server.app[keys.STORE].audit.events(limit=1000)


async def flood_events(client: Client, *, wait_for: int) -> list[AuditEvent]:
    """The flood summaries, once at least ``wait_for`` are written (they are written behind)."""
    deadline = time.monotonic() + 10
    while True:
        found = [e for e in await audit_events(client) if e.kind == "flood"]
        if len(found) >= wait_for or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("path", ["/v1/exchange", "/oauth2/token", "/v1/leases/revoke"])
async def test_a_flood_from_one_address_gets_429_after_the_burst(client: Client, path: str) -> None:
    statuses = await flood(client, FLOOD, path)
    assert statuses[:BURST] == [400] * BURST  # the junk body is read, and refused
    assert statuses[BURST:] == [429] * (FLOOD - BURST)


async def test_a_refused_request_says_when_to_retry_and_why(client: Client) -> None:
    await flood(client, BURST)
    async with client.post("/v1/exchange", headers=JUNK) as response:
        body = await response.json()
        assert response.status == 429
        assert (body["error"], body["reason"]) == ("rate_limited", "client_rate_limited")
        assert response.headers["Retry-After"] == "1"
        assert response.headers["X-Request-Id"] == body["request_id"]


async def test_the_limit_is_checked_before_the_token_is_read(client: Client) -> None:
    await flood(client, BURST)
    before = len(await audit_events(client))
    # A junk token refused before the bucket would be a 401 with an audit row of its own.
    async with client.post("/v1/exchange", json={}, headers=JUNK) as response:
        assert response.status == 429
    assert len(await audit_events(client)) == before


async def test_another_address_keeps_its_own_bucket(
    client: Client, from_other_address: aiohttp.ClientSession
) -> None:
    assert (await flood(client, BURST + 1))[-1] == 429
    async with from_other_address.post(client.make_url("/v1/exchange"), headers=JUNK) as response:
        assert response.status == 401
        assert (await response.json())["reason"] != "client_rate_limited"


async def test_a_flood_writes_one_summary_event_not_a_row_per_request(
    client: Client, clock: FrozenClock
) -> None:
    await flood(client, FLOOD)
    clock.advance(60)  # the interval ends; the next refusal after it closes the summary
    await flood(client, BURST + 1)
    [summary] = await flood_events(client, wait_for=1)
    events = await audit_events(client)
    # The requests let through were refused and audited one by one; the 45 floods as one.
    assert len(events) == 2 * BURST + 1
    assert summary.outcome == "denied"
    assert summary.reason == "client_rate_limited"
    assert summary.client_address == "127.0.0.1"
    assert summary.detail is not None
    assert summary.detail["count"] == FLOOD - BURST
    assert summary.detail["reason"] == "client_rate_limited"
    assert summary.detail["first"] == "2027-01-15T08:00:00+00:00"
    assert summary.detail["last"] == "2027-01-15T08:00:00+00:00"
    assert summary.detail["interval_seconds"] == 60


async def test_floods_still_open_are_audited_at_shutdown(
    tmp_path: Path, clock: FrozenClock, aiohttp_client: AiohttpClient
) -> None:
    settings = limited_settings(tmp_path)
    client = await aiohttp_client(create_app(settings, clock=clock))
    await flood(client, BURST + 3)
    await client.close()
    store = await Store.open(
        settings.store.resolved_url(settings.server.data_dir), credential_types=INSTALLED
    )
    try:
        events = await store.audit.events()
    finally:
        await store.close()
    [summary] = [e for e in events if e.kind == "flood"]
    assert summary.detail is not None
    assert summary.detail["count"] == 3


async def test_the_sweep_writes_a_flood_that_stopped(client: Client, clock: FrozenClock) -> None:
    await flood(client, BURST + 2)
    gate = client.server.app[keys.CLIENT_GATE]
    gate.write_ended()
    assert await flood_events(client, wait_for=0) == []  # its interval has not ended
    clock.advance(60)
    gate.write_ended()
    [summary] = await flood_events(client, wait_for=1)
    assert summary.detail is not None
    assert summary.detail["count"] == 2
