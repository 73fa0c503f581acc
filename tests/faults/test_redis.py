"""Redis hung and down, in front of the real test Redis through a proxy that can fail it.

The rate limiter shares its buckets through Redis. With ``on_redis_error = "allow"`` (the
default) exchanges go on unlimited while Redis fails; with "deny" they are a retryable 503.
Either way an exchange waits at most the Redis timeout, and once the circuit breaker opens,
not even that. Recovery: the proxy forwards again, and the broker's bucket in Redis is
updated again.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient
from redis.asyncio import Redis
from sqlalchemy.engine import make_url

from tests.faults.conftest import (
    Answer,
    Broker,
    Figures,
    fault_settings,
    seconds_until_success,
)
from tests.faults.proxy import FaultProxy
from tests.support.broker import ID_TOKEN
from tests.support.platform import ServedDevIssuer
from tests.support.services import redis_url
from tokenbroker.ratelimit import KEY_PREFIX
from tokenbroker.web.app import create_app

# A database of its own on the shared test Redis.
REDIS_DB = 11
COOLDOWN_SECONDS = 1.0
# Enough exchanges during the fault to trip the breaker and then be skipped by it.
DURING = 6


@pytest.fixture
async def redis_proxy() -> AsyncIterator[FaultProxy]:
    upstream = make_url(redis_url())
    proxy = FaultProxy(upstream.host or "127.0.0.1", upstream.port or 6379)
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    """The real Redis behind the proxy, on this suite's own database, emptied."""
    client = Redis.from_url(str(make_url(redis_url()).set(database=str(REDIS_DB))))
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


async def bucket_updated(redis: Redis) -> float:
    """When the broker last counted in Redis (the one bucket of this suite's database)."""
    keys = await redis.keys(f"{KEY_PREFIX}*")
    if not keys:
        return 0.0
    [key] = keys
    updated = await redis.hget(key, "updated")
    return float(updated) if updated is not None else 0.0


@pytest.mark.parametrize("fault", ["hung", "down"])
@pytest.mark.parametrize("on_redis_error", ["allow", "deny"])
async def test_a_failing_redis_costs_at_most_its_timeout_and_the_limiter_comes_back(
    fault: str,
    on_redis_error: str,
    tmp_path: Path,
    dev_issuer: ServedDevIssuer,
    redis_proxy: FaultProxy,
    redis: Redis,
    aiohttp_client: AiohttpClient,
    figures: Figures,
) -> None:
    settings = fault_settings(
        tmp_path,
        dev_issuer.issuer_settings("env0"),
        [ID_TOKEN],
        rate_limit={
            "redis_url": f"redis://127.0.0.1:{redis_proxy.port}/{REDIS_DB}",
            "on_redis_error": on_redis_error,
            "redis_breaker_cooldown_seconds": COOLDOWN_SECONDS,
        },
    )
    broker = Broker(await aiohttp_client(create_app(settings)), dev_issuer)
    assert (await broker.exchange("id-token")).status == 200
    assert await bucket_updated(redis) > 0  # the bucket is in Redis

    if fault == "hung":
        redis_proxy.hang()
    else:
        await redis_proxy.down()
    during = [await broker.exchange("id-token") for _ in range(DURING)]
    if on_redis_error == "allow":
        assert [answer.status for answer in during] == [200] * DURING
    else:
        assert {(a.status, a.reason) for a in during} == {(503, "rate_limit_unavailable")}
        assert all(answer.retry_after for answer in during)
        assert not any(answer.issued_anything for answer in during)
    # The first calls wait for the 50 ms Redis timeout; once the breaker is open, none does.
    slowest: Answer = max(during, key=lambda answer: answer.seconds)
    assert slowest.seconds < 1.0

    await redis_proxy.restore()

    async def counted_in_redis() -> Answer:
        asked_at = time.time()
        answer = await broker.exchange("id-token")
        if await bucket_updated(redis) < asked_at:  # answered without Redis: not back yet
            return Answer(599, {"reason": "redis_not_asked"}, answer.seconds, None)
        return answer

    recovery = await seconds_until_success(counted_in_redis)
    figures.record(
        f"Redis {fault}, on_redis_error = {on_redis_error}",
        slowest,
        recovery,
        "exchanges issued, not rate limited" if on_redis_error == "allow" else "nothing",
    )
