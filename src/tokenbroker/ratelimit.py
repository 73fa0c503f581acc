"""Rate limits of exchanges: a token bucket per organization, project or subject.

The bucket itself is a pure function (:func:`take`). :class:`MemoryRateLimiter` keeps buckets
in this process; :class:`RedisRateLimiter` keeps them in Redis, so that every instance sharing
it counts against the same bucket (DESIGN "Scale out"). ``redis`` is an optional dependency and
is only imported when a Redis URL is configured.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

from tokenbroker.batching import Batched
from tokenbroker.clock import Clock
from tokenbroker.config.models import RateLimitSettings
from tokenbroker.errors import ConfigError, TemporarilyUnavailable
from tokenbroker.identity.models import Identity

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

KEY_PREFIX = "tokenbroker:rl:"
# Buckets one process keeps at most; a bucket is a digest and two floats: ~30 MB in all.
MAX_MEMORY_BUCKETS = 100_000
# A request this early counts as on time. Unix time as a double resolves only ~0.25 µs today
# (~1 µs by 2106), so a caller waiting exactly the time it was told could otherwise fall a
# rounding error short of a whole token.
TIME_TOLERANCE_SECONDS = 1e-5
_REDIS_WARNING_INTERVAL_SECONDS = 60.0
DEFAULT_REDIS_TIMEOUT_SECONDS = 0.05


class RateLimiter(Protocol):
    """Decides whether one more request of a bucket may go ahead now."""

    async def acquire(self, key: str) -> float | None:
        """Take one request from ``key``'s bucket: None when allowed, else seconds to wait."""
        ...

    async def close(self) -> None:
        """Release connections; the limiter is not used afterwards."""
        ...


@dataclass(frozen=True, slots=True)
class BucketLimits:
    """The shape of every bucket: ``capacity`` requests at once, refilled at ``rate`` per second."""

    capacity: float
    rate: float

    @classmethod
    def from_settings(cls, settings: RateLimitSettings) -> BucketLimits:
        """Limits from ``[rate_limit]``: ``burst`` at once, ``requests_per_minute`` steadily."""
        return cls(capacity=float(settings.burst), rate=settings.requests_per_minute / 60.0)

    @classmethod
    def per_client(cls, settings: RateLimitSettings) -> BucketLimits:
        """Limits of one client address before validation: ``per_client_burst`` at once,
        ``per_client_per_minute`` steadily."""
        return cls(
            capacity=float(settings.per_client_burst), rate=settings.per_client_per_minute / 60.0
        )


@dataclass(frozen=True, slots=True)
class Bucket:
    """What a bucket held (``tokens``) when it was last updated (``updated``, Unix seconds)."""

    tokens: float
    updated: float

    def is_full(self, limits: BucketLimits, now: float) -> bool:
        """Tell whether the bucket has refilled by ``now``, i.e. is as good as no bucket."""
        return self.tokens + max(0.0, now - self.updated) * limits.rate >= limits.capacity


def take(bucket: Bucket | None, limits: BucketLimits, now: float) -> tuple[Bucket, float | None]:
    """Take one token at ``now``: the new bucket, and None (allowed) or seconds to wait.

    No bucket means a full one. Time only moves forward: a clock that went back (or another
    instance's clock that lags) refills nothing, so no stretch of time is counted twice.
    """
    if bucket is None:
        tokens, updated = limits.capacity, now
    else:
        elapsed = max(0.0, now - bucket.updated)
        tokens = min(limits.capacity, bucket.tokens + elapsed * limits.rate)
        updated = max(now, bucket.updated)
    # A request let in early leaves a tiny debt (tokens below 0), so early grants never add up.
    if tokens >= 1.0 - limits.rate * TIME_TOLERANCE_SECONDS:
        return Bucket(tokens - 1.0, updated), None
    return Bucket(tokens, updated), (1.0 - tokens) / limits.rate


def retry_after_seconds(wait: float) -> int:
    """The ``Retry-After`` value for a wait: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(wait))


def bucket_key(settings: RateLimitSettings, identity: Identity) -> str:
    """The bucket an identity counts against, per ``settings.key``.

    JSON keeps the parts apart, so no org id containing a separator can collide with another.
    """
    parts: list[str | None]
    if settings.key == "organization":
        parts = [settings.key, identity.issuer, identity.org]
    elif settings.key == "project":
        parts = [settings.key, identity.issuer, identity.org, identity.project]
    else:
        parts = [settings.key, identity.issuer, identity.subject]
    return json.dumps(parts, separators=(",", ":"), ensure_ascii=False)


def _digest(key: str) -> str:
    # Buckets are stored under a hash of their key: subjects never reach Redis, and a long key
    # costs no more memory than a short one.
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class MemoryRateLimiter:
    """Buckets in this process: an LRU of at most ``max_buckets``, full buckets dropped first."""

    def __init__(
        self,
        limits: BucketLimits,
        clock: Clock,
        *,
        max_buckets: int = MAX_MEMORY_BUCKETS,
    ) -> None:
        self._limits = limits
        self._clock = clock
        self._max_buckets = max_buckets
        # After a sweep the map is cut to this, so the next sweep is max_buckets/10 inserts
        # away and its cost spreads over them.
        self._low_water = max_buckets - max(1, max_buckets // 10)
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def __len__(self) -> int:
        """The number of buckets held."""
        return len(self._buckets)

    async def acquire(self, key: str) -> float | None:
        """Take one request from ``key``'s bucket: None when allowed, else seconds to wait."""
        now = self._clock.now()
        digest = _digest(key)
        bucket, wait = take(self._buckets.get(digest), self._limits, now)
        self._buckets[digest] = bucket
        self._buckets.move_to_end(digest)
        self._prune(now)
        return wait

    async def close(self) -> None:
        """Forget every bucket."""
        self._buckets.clear()

    def _prune(self, now: float) -> None:
        # A full bucket is the same as none, so dropping it loses nothing. The least recently
        # used ones are the likeliest to be full: drop those as long as they are.
        while self._buckets:
            oldest = next(iter(self._buckets.values()))
            if not oldest.is_full(self._limits, now):
                break
            self._buckets.popitem(last=False)
        if len(self._buckets) <= self._max_buckets:
            return
        for digest, bucket in list(self._buckets.items()):
            if bucket.is_full(self._limits, now):
                del self._buckets[digest]
        # Still too many callers are limited at once: the least recently seen lose their state
        # (they start again with a full bucket); memory stays bounded.
        while len(self._buckets) > self._low_water:
            self._buckets.popitem(last=False)


@dataclass(slots=True)
class CircuitBreaker:
    """Skips a failing dependency instead of waiting on it for every request.

    ``threshold`` failures in a row open the circuit for ``cooldown`` seconds; then one call
    (the probe) goes through while the others keep skipping, and its outcome closes the
    circuit or opens it for another cooldown.
    """

    threshold: int
    cooldown: float
    failures: int = 0
    opened_at: float = -math.inf
    probing: bool = False

    def allows(self, now: float) -> bool:
        """Tell whether a call may go to the dependency now (True may make it the probe)."""
        if self.failures < self.threshold:
            return True
        # Compared both ways so that a wall clock stepping back cannot stretch the pause.
        if self.probing or 0.0 <= now - self.opened_at < self.cooldown:
            return False
        self.probing = True
        return True

    def succeeded(self) -> None:
        """A call answered: the circuit closes."""
        self.failures = 0
        self.probing = False

    def failed(self, now: float) -> None:
        """A call failed: count it; at the threshold (or a failed probe) the circuit opens."""
        self.failures += 1
        self.probing = False
        if self.failures >= self.threshold:
            self.opened_at = now

    def abandoned(self) -> None:
        """A call was cancelled before it ended: it proves nothing, and is no longer a probe."""
        self.probing = False

    def seconds_until_probe(self, now: float) -> float:
        """How long until a call may go through again (0 when it may now)."""
        if self.failures < self.threshold:
            return 0.0
        return max(0.0, self.opened_at + self.cooldown - now)


# The same bucket as `take`, run atomically in Redis, for ``count`` requests at once: the first
# ``granted`` of them are allowed, the others wait the time it names. The wait travels as a
# string written with %.17g: Lua would truncate a returned number to an integer, and 17 digits
# round-trip a double.
# The key expires when its bucket would be full again (+1 s for clock skew between instances).
_TAKE_SCRIPT = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local tolerance = tonumber(ARGV[4])
local count = tonumber(ARGV[5])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(state[1])
local updated = tonumber(state[2])
if tokens == nil or updated == nil then
  tokens = capacity
  updated = now
elseif now > updated then
  tokens = math.min(capacity, tokens + (now - updated) * rate)
  updated = now
end
local granted = 0
while granted < count and tokens >= 1 - rate * tolerance do
  tokens = tokens - 1
  granted = granted + 1
end
local wait = -1
if granted < count then
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
  'updated', string.format('%.17g', updated))
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate * 1000) + 1000)
return {granted, string.format('%.17g', wait)}
"""


class RedisRateLimiter:
    """Buckets in Redis, shared by every instance using it.

    Each call is bounded by ``redis_timeout_ms``, and a circuit breaker stops asking a Redis
    that keeps failing. While Redis fails, ``on_redis_error`` decides: "allow" (the default)
    lets exchanges through unlimited, because a broker that stops issuing credentials when the
    cache behind its rate limiter is down takes every pipeline down with it, while a few
    minutes without a rate limit cost little; "deny" refuses them with a retryable 503. The
    outage is logged, at most once a minute.
    """

    def __init__(
        self,
        settings: RateLimitSettings,
        clock: Clock,
        client: Redis,
        *,
        prefix: str = KEY_PREFIX,
    ) -> None:
        from redis.exceptions import RedisError

        self._limits = BucketLimits.from_settings(settings)
        self._clock = clock
        self._client = client
        self._prefix = prefix
        self._script = client.register_script(_TAKE_SCRIPT)
        self._timeout = settings.redis_timeout_ms / 1000
        self._deny_on_error = settings.on_redis_error == "deny"
        self._breaker = CircuitBreaker(
            settings.redis_breaker_failures, settings.redis_breaker_cooldown_seconds
        )
        self._failures: tuple[type[Exception], ...] = (RedisError, OSError, TimeoutError)
        self._warned_at = -math.inf
        self._down = False
        self._takes: Batched[str, float | TemporarilyUnavailable | None] = Batched(self._take_all)

    def redis_key(self, key: str) -> str:
        """The Redis key of a bucket: the prefix and a SHA-256 of the bucket key."""
        return self._prefix + _digest(key)

    async def acquire(self, key: str) -> float | None:
        """Take one request from ``key``'s bucket: None when allowed, else seconds to wait.

        Requests taken while a call to Redis is in flight share the next call, one per bucket.
        Raises TemporarilyUnavailable while Redis fails when ``on_redis_error = "deny"``.
        """
        now = self._clock.now()
        if not self._breaker.allows(now):
            return self._unanswered(now)
        answer = await self._takes(key)
        if isinstance(answer, TemporarilyUnavailable):
            raise answer
        return answer

    async def _take_all(self, keys: Sequence[str]) -> list[float | TemporarilyUnavailable | None]:
        """The answers of one round of takes: one Redis call per bucket, the buckets at once."""
        now = self._clock.now()
        counts = Counter(keys)
        limits = (self._limits.capacity, self._limits.rate, now, TIME_TOLERANCE_SECONDS)
        try:
            # The client's socket timeouts bound each read; this bounds the round, retry included.
            async with asyncio.timeout(self._timeout):
                replies: list[object] = await asyncio.gather(
                    *(
                        self._script(keys=[self.redis_key(key)], args=(*limits, count))
                        for key, count in counts.items()
                    )
                )
        except self._failures as exc:
            for _ in keys:  # as many failed calls as callers, as when each made its own
                self._breaker.failed(now)
            self._failed(exc, now)
            return [self._unanswered_error(now) for _ in keys]
        except BaseException:
            self._breaker.abandoned()
            raise
        self._breaker.succeeded()
        if self._down:
            self._down = False
            log.warning("rate limiter: Redis answers again; exchanges are rate limited again")
        granted: dict[str, int] = {}
        waits: dict[str, float] = {}
        for key, reply in zip(counts, replies, strict=True):
            allowed, wait = cast("list[object]", reply)
            granted[key] = int(cast(int, allowed))
            waits[key] = float(wait.decode() if isinstance(wait, bytes) else str(wait))
        answers: list[float | TemporarilyUnavailable | None] = []
        for key in keys:
            # Callers in arrival order: the first ``granted`` of a bucket's are allowed.
            if granted[key] > 0:
                granted[key] -= 1
                answers.append(None)
            else:
                answers.append(waits[key])
        return answers

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    def _unanswered(self, now: float) -> float | None:
        error = self._unanswered_error(now)
        if error is not None:
            raise error
        return None

    def _unanswered_error(self, now: float) -> TemporarilyUnavailable | None:
        """While Redis fails: None (let the request through) or the refusal to raise."""
        if not self._deny_on_error:
            return None
        return TemporarilyUnavailable(
            "rate_limit_unavailable",
            "the rate limit store cannot be reached; retry later",
            retry_after=retry_after_seconds(self._breaker.seconds_until_probe(now)),
        )

    def _failed(self, exc: Exception, now: float) -> None:
        self._down = True
        if 0.0 <= now - self._warned_at < _REDIS_WARNING_INTERVAL_SECONDS:
            return
        self._warned_at = now
        # The exception's text names host and port at most; the URL (and its password) never.
        log.warning(
            "rate limiter: Redis failed (%s: %s); exchanges are %s until it answers again",
            type(exc).__name__,
            exc,
            "refused" if self._deny_on_error else "not rate limited",
        )


def open_redis_client(url: str, *, timeout_seconds: float = DEFAULT_REDIS_TIMEOUT_SECONDS) -> Redis:
    """A Redis client for rate limits: short timeouts and one retry, so an outage fails fast."""
    try:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
    except ImportError as exc:
        hint = "rate_limit.redis_url: needs the redis package; install 'tokenbroker[redis]'"
        raise ConfigError([hint]) from exc
    # One retry without waiting covers a pooled connection the server closed while idle.
    return Redis.from_url(
        url,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        retry=Retry(NoBackoff(), 1),
    )


def open_rate_limiter(settings: RateLimitSettings, clock: Clock) -> RateLimiter | None:
    """The configured limiter: None when disabled, Redis when ``redis_url`` is set, else memory.

    Nothing connects here; a Redis client connects on first use.
    """
    if not settings.enabled:
        return None
    if settings.redis_url is None:
        return MemoryRateLimiter(BucketLimits.from_settings(settings), clock)
    client = open_redis_client(settings.redis_url, timeout_seconds=settings.redis_timeout_ms / 1000)
    return RedisRateLimiter(settings, clock, client)
