"""Idempotent retries and coalescing of identical requests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from tokenbroker.backends.base import IssuedCredential
from tokenbroker.clock import FrozenClock
from tokenbroker.reuse import IssuedCredentialCache, ReuseKey

NOW = 1_800_000_000.0


def issued(lifetime: float) -> IssuedCredential:
    return IssuedCredential(
        values={"T": "x"}, expires_at=datetime.fromtimestamp(NOW + lifetime, UTC)
    )


class CountingIssuer:
    def __init__(self, lifetime: float = 3600) -> None:
        self.calls = 0
        self.lifetime = lifetime
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self) -> IssuedCredential:
        self.calls += 1
        self.started.set()
        await self.release.wait()
        return issued(self.lifetime)


KEY = ReuseKey("sha256:a", 1, "v1")


async def test_a_retry_with_the_same_token_reuses_the_issued_credential() -> None:
    cache = IssuedCredentialCache(FrozenClock(NOW))
    issue = CountingIssuer()
    first, reused_first = await cache.get_or_issue(KEY, NOW + 3600, issue)
    second, reused_second = await cache.get_or_issue(KEY, NOW + 3600, issue)
    assert issue.calls == 1
    assert second is first
    assert (reused_first, reused_second) == (False, True)


async def test_different_tokens_never_share() -> None:
    cache = IssuedCredentialCache(FrozenClock(NOW))
    issue = CountingIssuer()
    await cache.get_or_issue(KEY, NOW + 3600, issue)
    await cache.get_or_issue(ReuseKey("sha256:b", 1, "v1"), NOW + 3600, issue)
    assert issue.calls == 2


async def test_a_changed_credential_does_not_reuse() -> None:
    cache = IssuedCredentialCache(FrozenClock(NOW))
    issue = CountingIssuer()
    await cache.get_or_issue(KEY, NOW + 3600, issue)
    await cache.get_or_issue(ReuseKey("sha256:a", 1, "v2"), NOW + 3600, issue)
    assert issue.calls == 2


async def test_concurrent_identical_requests_share_one_backend_call() -> None:
    cache = IssuedCredentialCache(FrozenClock(NOW))
    issue = CountingIssuer()
    issue.release.clear()
    tasks = [asyncio.create_task(cache.get_or_issue(KEY, NOW + 3600, issue)) for _ in range(5)]
    await issue.started.wait()
    issue.release.set()
    results = await asyncio.gather(*tasks)
    assert issue.calls == 1
    assert len({id(credential) for credential, _ in results}) == 1
    assert sorted(reused for _, reused in results) == [False, True, True, True, True]


async def test_a_failure_is_shared_by_waiters_and_not_remembered() -> None:
    cache = IssuedCredentialCache(FrozenClock(NOW))
    attempts = 0

    async def failing() -> IssuedCredential:
        nonlocal attempts
        attempts += 1
        raise RuntimeError("backend down")

    with pytest.raises(RuntimeError):
        await cache.get_or_issue(KEY, NOW + 3600, failing)
    issue = CountingIssuer()
    await cache.get_or_issue(KEY, NOW + 3600, issue)
    assert (attempts, issue.calls) == (1, 1)


async def test_reuse_stops_before_the_credential_expires() -> None:
    clock = FrozenClock(NOW)
    cache = IssuedCredentialCache(clock, margin_seconds=60)
    issue = CountingIssuer(lifetime=3600)
    await cache.get_or_issue(KEY, NOW + 86400, issue)
    clock.advance(3600 - 61)
    await cache.get_or_issue(KEY, NOW + 86400, issue)
    assert issue.calls == 1
    clock.advance(2)
    await cache.get_or_issue(KEY, NOW + 86400, issue)
    assert issue.calls == 2


async def test_reuse_never_outlives_the_platform_token() -> None:
    clock = FrozenClock(NOW)
    cache = IssuedCredentialCache(clock)
    issue = CountingIssuer(lifetime=3600)
    await cache.get_or_issue(KEY, NOW + 100, issue)
    clock.advance(101)
    await cache.get_or_issue(KEY, NOW + 100, issue)
    assert issue.calls == 2


async def test_the_cache_is_bounded() -> None:
    cache = IssuedCredentialCache(FrozenClock(NOW), max_entries=3)
    issue = CountingIssuer()
    for n in range(5):
        await cache.get_or_issue(ReuseKey(f"sha256:{n}", 1, "v"), NOW + 3600, issue)
    assert len(cache) == 3
