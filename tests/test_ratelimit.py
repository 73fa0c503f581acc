"""Rate limits: the pure token bucket, the in-process limiter, and the Redis one on a real Redis.

The shared-Redis tests use the local Redis when it answers at 127.0.0.1:6379, or the one
``TOKENBROKER_TEST_REDIS_URL`` names (tests/support/services.py); each uses a fresh key prefix
and deletes its keys afterwards. A named but unreachable server fails, never skips. The outage
tests start and stop their own ``redis-server``, or use a closed port.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from bench.procs import free_port
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.support import services
from tokenbroker.clock import FrozenClock
from tokenbroker.config.models import RateLimitSettings
from tokenbroker.errors import TemporarilyUnavailable
from tokenbroker.identity.models import Identity
from tokenbroker.ratelimit import (
    KEY_PREFIX,
    TIME_TOLERANCE_SECONDS,
    Bucket,
    BucketLimits,
    CircuitBreaker,
    MemoryRateLimiter,
    RedisRateLimiter,
    bucket_key,
    open_rate_limiter,
    open_redis_client,
    retry_after_seconds,
    take,
)

T0 = 1_700_000_000.0
SUBJECT = "org/6f1a3d2e/project/9b1c/user/secret-looking-subject"
IDENTITY = Identity(issuer="env0", org="org-1", project="proj-1", subject=SUBJECT)

RedisLimiterFactory = Callable[..., RedisRateLimiter]


def limits(capacity: float = 3, rate: float = 1.0) -> BucketLimits:
    return BucketLimits(capacity=capacity, rate=rate)


def rate_limit(**values: object) -> RateLimitSettings:
    return RateLimitSettings.model_validate(values)


def drain(bucket: Bucket | None, limit: BucketLimits, now: float) -> Bucket:
    """Take until the bucket refuses; return the empty bucket."""
    while True:
        bucket, wait = take(bucket, limit, now)
        if wait is not None:
            return bucket


# --- the pure bucket --------------------------------------------------------------------------


def test_a_new_bucket_allows_its_burst_at_once_then_asks_to_wait() -> None:
    bucket = None
    decisions = []
    for _ in range(4):
        bucket, wait = take(bucket, limits(capacity=3, rate=2.0), T0)
        decisions.append(wait)
    assert decisions == [None, None, None, 0.5]


def test_an_empty_bucket_refills_at_the_rate() -> None:
    limit = limits(capacity=3, rate=1.0)
    empty = drain(None, limit, T0)
    assert take(empty, limit, T0 + 0.25)[1] == pytest.approx(0.75)
    assert take(empty, limit, T0 + 1.0)[1] is None


def test_a_bucket_never_refills_beyond_its_capacity() -> None:
    limit = limits(capacity=3, rate=1.0)
    bucket = drain(None, limit, T0)
    now = T0 + 10_000
    allowed = 0
    while take(bucket, limit, now)[1] is None:
        bucket, _ = take(bucket, limit, now)
        allowed += 1
    assert allowed == 3


def test_a_clock_going_back_refills_nothing() -> None:
    limit = limits(capacity=2, rate=1.0)
    empty = drain(None, limit, T0)
    bucket, wait = take(empty, limit, T0 - 100)
    assert wait == pytest.approx(1.0)
    assert bucket.updated == T0


@pytest.mark.parametrize(
    ("wait", "header"), [(0.0, 1), (0.001, 1), (1.0, 1), (1.0001, 2), (59.2, 60)]
)
def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one(wait: float, header: int) -> None:
    assert retry_after_seconds(wait) == header


@settings(max_examples=300, deadline=None)
@given(
    capacity=st.integers(min_value=1, max_value=20),
    rate=st.floats(min_value=0.01, max_value=50.0),
    gaps=st.lists(st.floats(min_value=0.0, max_value=3.0), min_size=1, max_size=80),
)
def test_no_window_ever_allows_more_than_burst_plus_rate_times_its_length(
    capacity: int, rate: float, gaps: list[float]
) -> None:
    limit = limits(capacity=capacity, rate=rate)
    bucket: Bucket | None = None
    now = T0
    allowed_at: list[float] = []
    for gap in gaps:
        now += gap
        bucket, wait = take(bucket, limit, now)
        if wait is None:
            allowed_at.append(now)
    for first, start in enumerate(allowed_at):
        for last in range(first, len(allowed_at)):
            count = last - first + 1
            elapsed = allowed_at[last] - start + TIME_TOLERANCE_SECONDS
            assert count <= capacity + rate * elapsed + 1e-9


@settings(max_examples=300, deadline=None)
@given(
    capacity=st.integers(min_value=1, max_value=20),
    rate=st.floats(min_value=0.01, max_value=50.0),
    taken=st.integers(min_value=0, max_value=40),
    gap=st.floats(min_value=0.0, max_value=5.0),
)
def test_waiting_the_time_a_refusal_names_is_enough_and_no_less(
    capacity: int, rate: float, taken: int, gap: float
) -> None:
    limit = limits(capacity=capacity, rate=rate)
    bucket = drain(None, limit, T0)
    for _ in range(taken):
        bucket, _ = take(bucket, limit, T0 + gap)
    bucket, wait = take(bucket, limit, T0 + gap)
    assume(wait is not None)
    assert wait is not None
    assert take(bucket, limit, bucket.updated + wait)[1] is None
    assume(wait > 0.05)
    assert take(bucket, limit, bucket.updated + wait * (1 - 1e-3))[1] is not None


# --- bucket keys ------------------------------------------------------------------------------


def test_an_organization_bucket_is_shared_by_its_projects_and_subjects() -> None:
    other = Identity(issuer="env0", org="org-1", project="proj-2", subject="someone-else")
    scope = rate_limit(key="organization")
    assert bucket_key(scope, IDENTITY) == bucket_key(scope, other)


def test_a_project_bucket_separates_projects_of_one_organization() -> None:
    other = Identity(issuer="env0", org="org-1", project="proj-2", subject=SUBJECT)
    no_project = Identity(issuer="env0", org="org-1", project=None, subject=SUBJECT)
    scope = rate_limit(key="project")
    keys = {bucket_key(scope, i) for i in (IDENTITY, other, no_project)}
    assert len(keys) == 3


def test_a_subject_bucket_follows_the_subject_across_projects() -> None:
    moved = Identity(issuer="env0", org="org-1", project="proj-2", subject=SUBJECT)
    someone = Identity(issuer="env0", org="org-1", project="proj-1", subject="other")
    scope = rate_limit(key="subject")
    assert bucket_key(scope, IDENTITY) == bucket_key(scope, moved)
    assert bucket_key(scope, IDENTITY) != bucket_key(scope, someone)


def test_the_same_org_id_under_two_issuers_gets_two_buckets() -> None:
    other = Identity(issuer="circleci-acme", org="org-1", project="proj-1", subject=SUBJECT)
    assert bucket_key(rate_limit(), IDENTITY) != bucket_key(rate_limit(), other)


def test_separators_in_ids_cannot_make_two_keys_collide() -> None:
    a = Identity(issuer="env0", org="a,b", project="c", subject="s")
    b = Identity(issuer="env0", org="a", project="b,c", subject="s")
    assert bucket_key(rate_limit(key="project"), a) != bucket_key(rate_limit(key="project"), b)


# --- the in-process limiter -------------------------------------------------------------------


async def test_the_memory_limiter_limits_one_key_and_leaves_others_alone() -> None:
    clock = FrozenClock(T0)
    limiter = MemoryRateLimiter(limits(capacity=2), clock)
    assert [await limiter.acquire("a") for _ in range(3)] == [None, None, pytest.approx(1.0)]
    assert await limiter.acquire("b") is None
    clock.advance(1.0)
    assert await limiter.acquire("a") is None


async def test_the_memory_limiter_holds_at_most_its_maximum_of_buckets() -> None:
    limiter = MemoryRateLimiter(limits(), FrozenClock(T0), max_buckets=10)
    for index in range(1000):
        await limiter.acquire(f"caller-{index}")
        assert len(limiter) <= 10


async def test_idle_buckets_are_dropped_once_they_are_full_again() -> None:
    clock = FrozenClock(T0)
    limiter = MemoryRateLimiter(limits(capacity=5), clock)
    for index in range(50):
        await limiter.acquire(f"caller-{index}")
    clock.advance(1.0)
    await limiter.acquire("latest")
    assert len(limiter) == 1


async def test_a_limited_bucket_outlives_full_ones_when_the_limiter_is_full() -> None:
    clock = FrozenClock(T0)
    limiter = MemoryRateLimiter(limits(capacity=5), clock, max_buckets=10)
    # The oldest bucket is drained (5 s to refill); the nine after it took one token each.
    for _ in range(6):
        await limiter.acquire("busy")
    for index in range(9):
        await limiter.acquire(f"idle-{index}")
    clock.advance(1.0)
    await limiter.acquire("newcomer")
    # Still known: one token refilled, not a fresh bucket of five.
    assert [await limiter.acquire("busy"), await limiter.acquire("busy")] == [None, 1.0]


# --- choosing a limiter -----------------------------------------------------------------------


def test_no_limiter_when_rate_limits_are_disabled() -> None:
    assert open_rate_limiter(rate_limit(enabled=False), FrozenClock(T0)) is None


def test_an_in_process_limiter_without_a_redis_url() -> None:
    assert isinstance(open_rate_limiter(rate_limit(), FrozenClock(T0)), MemoryRateLimiter)


async def test_a_redis_limiter_with_a_redis_url_connects_only_when_used() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    limiter = open_rate_limiter(rate_limit(redis_url=url), FrozenClock(T0))
    assert isinstance(limiter, RedisRateLimiter)
    await limiter.close()


# --- Redis outages (no shared Redis needed) ---------------------------------------------------


async def test_an_unreachable_redis_fails_open_with_one_warning_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FrozenClock(T0)
    url = f"redis://:hunter2-password@127.0.0.1:{free_port()}/0"
    settings = rate_limit(burst=1, redis_breaker_failures=1, redis_breaker_cooldown_seconds=1)
    limiter = RedisRateLimiter(settings, clock, open_redis_client(url))
    caplog.set_level(logging.WARNING, logger="tokenbroker.ratelimit")
    try:
        decisions = []
        for _ in range(5):
            decisions.append(await limiter.acquire("k"))
            clock.advance(2.0)  # past the breaker's cooldown: Redis is tried again
        assert decisions == [None] * 5
        assert len(limiter_warnings(caplog)) == 1
        clock.advance(60.0)
        assert await limiter.acquire("k") is None
        assert len(limiter_warnings(caplog)) == 2
    finally:
        await limiter.close()
    assert "hunter2" not in caplog.text


class RedisProcess:
    """A private redis-server on a fixed port, started and stopped by the test."""

    def __init__(self, binary: str, directory: Path) -> None:
        port = free_port()
        self.url = f"redis://127.0.0.1:{port}/0"
        self._command = [binary, "--port", str(port), "--bind", "127.0.0.1"]
        self._command += ["--save", "", "--appendonly", "no", "--dir", str(directory)]
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start the server and wait until it answers PING."""
        self._process = await asyncio.create_subprocess_exec(
            *self._command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        client = Redis.from_url(self.url)
        try:
            for _ in range(400):
                try:
                    await client.ping()
                    return
                except RedisConnectionError:
                    await asyncio.sleep(0.025)  # a readiness poll, not a race cover-up
            raise AssertionError("redis-server did not start")
        finally:
            await client.aclose()

    async def stop(self) -> None:
        """Stop the server, if it runs."""
        if self._process is not None:
            self._process.terminate()
            await asyncio.wait_for(self._process.wait(), timeout=10)
            self._process = None


@pytest.fixture
async def redis_process(tmp_path: Path) -> AsyncIterator[RedisProcess]:
    """A private redis-server, not yet started; stopped after the test."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not on PATH (apt-get install redis-server)")
    process = RedisProcess(binary, tmp_path)
    yield process
    await process.stop()


def limiter_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "tokenbroker.ratelimit"]


async def test_the_redis_limiter_limits_again_once_redis_is_back(
    redis_process: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    await redis_process.start()
    clock = FrozenClock(T0)
    settings = rate_limit(
        requests_per_minute=1, burst=1, redis_breaker_failures=1, redis_breaker_cooldown_seconds=1
    )
    limiter = RedisRateLimiter(settings, clock, open_redis_client(redis_process.url))
    try:
        assert await limiter.acquire("k") is None
        assert await limiter.acquire("k") is not None
        await redis_process.stop()
        assert await limiter.acquire("k") is None
        assert len(limiter_warnings(caplog)) == 1
        await redis_process.start()
        # For the breaker's cooldown after a failure Redis is not asked at all: nothing
        # reaches the restarted server.
        assert await limiter.acquire("k") is None
        probe = Redis.from_url(redis_process.url)
        assert await probe.dbsize() == 0
        await probe.aclose()
        clock.advance(2.0)
        # The restarted server kept nothing: a fresh bucket of one.
        assert await limiter.acquire("k") is None
        assert await limiter.acquire("k") is not None
        assert "answers again" in limiter_warnings(caplog)[-1].getMessage()
        assert len(limiter_warnings(caplog)) == 2
    finally:
        await limiter.close()


# --- a shared, real Redis (tests/support/services.py) ----------------------------------------
class HangingServer:
    """A TCP listener that accepts connections and never answers: a hung Redis."""

    def __init__(self) -> None:
        self.connections = 0
        self.accepted = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._held: list[asyncio.StreamWriter] = []

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.accepted.set()
        self._held.append(writer)

    async def close(self) -> None:
        for writer in self._held:
            writer.close()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
async def hanging_redis() -> AsyncIterator[HangingServer]:
    """A listening port that accepts and then says nothing."""
    server = HangingServer()
    await server.start()
    yield server
    await server.close()


async def test_a_hanging_redis_costs_a_request_at_most_the_redis_timeout(
    hanging_redis: HangingServer,
) -> None:
    settings = rate_limit()
    assert settings.redis_timeout_ms == 50
    limiter = open_rate_limiter(
        settings.model_copy(update={"redis_url": hanging_redis.url}), FrozenClock(T0)
    )
    assert isinstance(limiter, RedisRateLimiter)
    try:
        # Ten times the timeout, and still far below a second per call.
        async with asyncio.timeout(0.5):
            assert await limiter.acquire("k") is None
        assert hanging_redis.connections >= 1
    finally:
        await limiter.close()


async def test_the_breaker_stops_asking_a_hanging_redis_then_probes_it_once(
    hanging_redis: HangingServer,
) -> None:
    clock = FrozenClock(T0)
    settings = rate_limit(redis_breaker_failures=3, redis_breaker_cooldown_seconds=5)
    limiter = RedisRateLimiter(settings, clock, open_redis_client(hanging_redis.url))
    try:
        for _ in range(3):
            assert await limiter.acquire("k") is None
        tripped = hanging_redis.connections
        async with asyncio.timeout(0.5):  # skipped calls do not even wait for the timeout
            for _ in range(50):
                assert await limiter.acquire("k") is None
        assert hanging_redis.connections == tripped
        clock.advance(5)
        hanging_redis.accepted.clear()
        probe = asyncio.create_task(limiter.acquire("k"))
        await hanging_redis.accepted.wait()
        # While the probe waits on Redis, every other call skips it, without waiting.
        assert await limiter.acquire("k") is None
        assert not probe.done()
        assert await probe is None
        after_probe = hanging_redis.connections
        assert await limiter.acquire("k") is None  # the probe failed: open again
        assert hanging_redis.connections == after_probe
    finally:
        await limiter.close()


async def test_on_redis_error_deny_refuses_with_a_retryable_503_while_redis_is_refused() -> None:
    clock = FrozenClock(T0)
    settings = rate_limit(on_redis_error="deny", redis_breaker_failures=1)
    url = f"redis://127.0.0.1:{free_port()}/0"
    limiter = RedisRateLimiter(settings, clock, open_redis_client(url))
    try:
        for _ in range(2):  # the failed call, then the skipped one while the breaker is open
            with pytest.raises(TemporarilyUnavailable) as caught:
                await limiter.acquire("k")
            assert caught.value.reason == "rate_limit_unavailable"
            assert caught.value.status == 503
            assert caught.value.retry_after == 5
    finally:
        await limiter.close()


async def test_on_redis_error_deny_refuses_while_redis_hangs(hanging_redis: HangingServer) -> None:
    settings = rate_limit(on_redis_error="deny")
    limiter = RedisRateLimiter(settings, FrozenClock(T0), open_redis_client(hanging_redis.url))
    try:
        async with asyncio.timeout(0.5):
            with pytest.raises(TemporarilyUnavailable):
                await limiter.acquire("k")
    finally:
        await limiter.close()


def test_on_redis_error_defaults_to_allow() -> None:
    assert rate_limit().on_redis_error == "allow"


def test_the_breaker_opens_after_its_threshold_and_probes_once_after_the_cooldown() -> None:
    breaker = CircuitBreaker(threshold=2, cooldown=10)
    breaker.failed(T0)
    assert breaker.allows(T0)
    breaker.failed(T0)
    assert not breaker.allows(T0 + 9.9)
    assert breaker.seconds_until_probe(T0 + 4) == 6
    assert breaker.allows(T0 + 10)  # the probe
    assert not breaker.allows(T0 + 10)  # one at a time
    breaker.succeeded()
    assert breaker.allows(T0 + 10)
    assert breaker.seconds_until_probe(T0 + 10) == 0


def test_a_cancelled_probe_lets_the_next_call_probe() -> None:
    breaker = CircuitBreaker(threshold=1, cooldown=1)
    breaker.failed(T0)
    assert breaker.allows(T0 + 1)
    breaker.abandoned()
    assert breaker.allows(T0 + 1)


# --- a shared, real Redis (TOKENBROKER_TEST_REDIS_URL) ----------------------------------------


@pytest.fixture
async def redis_url() -> str:
    """The shared test Redis, from the environment."""
    return services.redis_url()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A plain client of the shared Redis, for looking at what the limiter wrote."""
    client = Redis.from_url(redis_url)
    # No try/except: a set but unreachable server must fail the test, not skip it.
    await client.ping()
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis: Redis) -> AsyncIterator[str]:
    """A key prefix of this test alone; its keys are deleted afterwards."""
    fresh = f"{KEY_PREFIX}test-{secrets.token_hex(8)}:"
    yield fresh
    keys = [key async for key in redis.scan_iter(match=fresh + "*")]
    if keys:
        await redis.delete(*keys)


@pytest.fixture
async def redis_limiter(redis_url: str, prefix: str) -> AsyncIterator[RedisLimiterFactory]:
    """Builds limiters on the shared Redis under the test's prefix; closes them afterwards."""
    opened: list[RedisRateLimiter] = []

    def build(settings: RateLimitSettings, clock: FrozenClock) -> RedisRateLimiter:
        limiter = RedisRateLimiter(settings, clock, open_redis_client(redis_url), prefix=prefix)
        opened.append(limiter)
        return limiter

    yield build
    for limiter in opened:
        await limiter.close()


async def test_two_instances_sharing_redis_share_one_bucket(
    redis_limiter: RedisLimiterFactory,
) -> None:
    clock = FrozenClock(T0)
    settings = rate_limit(requests_per_minute=60, burst=3)
    first, second = redis_limiter(settings, clock), redis_limiter(settings, clock)
    decisions = [await limiter.acquire("acme") for limiter in (first, second, first, second)]
    assert decisions == [None, None, None, pytest.approx(1.0)]
    clock.advance(1.0)
    assert await first.acquire("acme") is None
    assert await second.acquire("acme") is not None


async def test_the_redis_limiter_decides_exactly_like_the_pure_bucket(
    redis_limiter: RedisLimiterFactory,
) -> None:
    settings = rate_limit(requests_per_minute=90, burst=4)
    clock = FrozenClock(T0)
    limiter = redis_limiter(settings, clock)
    limit = BucketLimits.from_settings(settings)
    bucket: Bucket | None = None
    gaps = [0, 0, 0, 0, 0, 0.1, 0.3, 0.25, 0, 1.7, 0.01, 0, 0, 0, 5, 0, 0.66, 0.67, -3, 0.2]
    for gap in gaps:
        clock.advance(gap)
        bucket, expected = take(bucket, limit, clock.now())
        assert await limiter.acquire("acme") == expected


async def test_a_redis_bucket_expires_once_it_would_be_full_again(
    redis_limiter: RedisLimiterFactory, redis: Redis, prefix: str
) -> None:
    limiter = redis_limiter(rate_limit(requests_per_minute=60, burst=10), FrozenClock(T0))
    for _ in range(4):
        await limiter.acquire("acme")
    # Four tokens short at one a second: full again in 4 s, plus 1 s for clock skew.
    ttl = await redis.pttl(limiter.redis_key("acme"))
    assert 4000 < ttl <= 5000


async def test_redis_keys_hold_a_hash_of_the_bucket_never_the_subject(
    redis_limiter: RedisLimiterFactory, redis: Redis, prefix: str
) -> None:
    settings = rate_limit(key="subject")
    limiter = redis_limiter(settings, FrozenClock(T0))
    key = bucket_key(settings, IDENTITY)
    await limiter.acquire(key)
    stored = [k.decode() async for k in redis.scan_iter(match=prefix + "*")]
    assert stored == [prefix + hashlib.sha256(key.encode()).hexdigest()]
    fields = await redis.hgetall(stored[0])
    assert SUBJECT not in repr(stored) + repr(fields)
    assert "org/" not in stored[0]


async def test_the_script_is_loaded_again_after_redis_forgets_it(
    redis_limiter: RedisLimiterFactory, redis: Redis
) -> None:
    limiter = redis_limiter(rate_limit(requests_per_minute=60, burst=1), FrozenClock(T0))
    assert await limiter.acquire("acme") is None
    await redis.script_flush()
    assert await limiter.acquire("acme") == pytest.approx(1.0)


async def test_takes_of_one_bucket_made_at_once_share_one_redis_call_and_grant_exactly_its_burst(
    redis_process: RedisProcess,
) -> None:
    await redis_process.start()
    settings = rate_limit(requests_per_minute=1, burst=5)
    limiter = RedisRateLimiter(settings, FrozenClock(T0), open_redis_client(redis_process.url))
    admin = Redis.from_url(redis_process.url)
    try:
        before = await _script_calls(admin)
        answers = await asyncio.gather(*(limiter.acquire("k") for _ in range(20)))
        calls = await _script_calls(admin) - before
        other = await limiter.acquire("another bucket")
    finally:
        await limiter.close()
        await admin.aclose()
    # The first take goes alone; the 19 made while it ran share the next call.
    assert calls == 2
    assert answers[:5] == [None] * 5
    assert all(wait is not None and wait > 0 for wait in answers[5:])
    assert other is None


async def test_a_round_that_redis_fails_answers_each_of_its_takes(
    redis_process: RedisProcess,
) -> None:
    # Not started: every call is refused. "deny": each take of the round gets the 503.
    settings = rate_limit(on_redis_error="deny", redis_breaker_failures=100)
    limiter = RedisRateLimiter(settings, FrozenClock(T0), open_redis_client(redis_process.url))
    try:
        answers = await asyncio.gather(
            *(limiter.acquire(f"k{n % 2}") for n in range(6)), return_exceptions=True
        )
    finally:
        await limiter.close()
    assert all(isinstance(answer, TemporarilyUnavailable) for answer in answers)


async def _script_calls(client: Redis) -> int:
    """How many EVAL/EVALSHA calls the server has run."""
    stats = await client.info("commandstats")
    return sum(
        int(value["calls"])
        for name, value in stats.items()
        if name in ("cmdstat_evalsha", "cmdstat_eval")
    )
