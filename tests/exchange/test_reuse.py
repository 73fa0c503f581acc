"""The reuse window: idempotent retries and coalescing of identical requests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from tokenbroker.backends.base import IssuedCredential
from tokenbroker.clock import FrozenClock
from tokenbroker.exchange.reuse import InMemoryReuseWindow, Issue, ReuseKey
from tokenbroker.policy.models import Credential

NOW = 1_800_000_000.0
KEY = ReuseKey("sha256:a", 1, "v1")
CREDENTIAL = Credential(1, "acme", "prod-vault", "vault_oidc", "passthrough", None, {})


def issued(lifetime: float, key: ReuseKey = KEY) -> Issue:
    return Issue(
        key,
        CREDENTIAL,
        IssuedCredential(values={"T": "x"}, expires_at=datetime.fromtimestamp(NOW + lifetime, UTC)),
    )


class CountingIssuer:
    def __init__(self, lifetime: float = 3600) -> None:
        self.calls = 0
        self.lifetime = lifetime
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self) -> Issue:
        self.calls += 1
        self.started.set()
        await self.release.wait()
        return issued(self.lifetime)


async def test_a_retry_with_the_same_token_reuses_the_issued_credential() -> None:
    cache = InMemoryReuseWindow(FrozenClock(NOW))
    issue = CountingIssuer()
    first, reused_first = await cache.get_or_issue(KEY, NOW + 3600, issue)
    second, reused_second = await cache.get_or_issue(KEY, NOW + 3600, issue)
    assert issue.calls == 1
    assert second is first
    assert (reused_first, reused_second) == (False, True)


async def test_different_tokens_never_share() -> None:
    cache = InMemoryReuseWindow(FrozenClock(NOW))
    issue = CountingIssuer()
    await cache.get_or_issue(KEY, NOW + 3600, issue)
    await cache.get_or_issue(ReuseKey("sha256:b", 1, "v1"), NOW + 3600, issue)
    assert issue.calls == 2


async def test_a_changed_credential_does_not_reuse() -> None:
    cache = InMemoryReuseWindow(FrozenClock(NOW))
    issue = CountingIssuer()
    await cache.get_or_issue(KEY, NOW + 3600, issue)
    await cache.get_or_issue(ReuseKey("sha256:a", 1, "v2"), NOW + 3600, issue)
    assert issue.calls == 2


async def test_concurrent_identical_requests_share_one_backend_call() -> None:
    cache = InMemoryReuseWindow(FrozenClock(NOW))
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
    cache = InMemoryReuseWindow(FrozenClock(NOW))
    attempts = 0

    async def failing() -> Issue:
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
    cache = InMemoryReuseWindow(clock, reuse_seconds=7200, margin_seconds=60)
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
    cache = InMemoryReuseWindow(clock)
    issue = CountingIssuer(lifetime=3600)
    await cache.get_or_issue(KEY, NOW + 100, issue)
    clock.advance(101)
    await cache.get_or_issue(KEY, NOW + 100, issue)
    assert issue.calls == 2


async def test_the_cache_is_bounded() -> None:
    cache = InMemoryReuseWindow(FrozenClock(NOW), max_entries=3)
    issue = CountingIssuer()
    for n in range(5):
        await cache.get_or_issue(ReuseKey(f"sha256:{n}", 1, "v"), NOW + 3600, issue)
    assert len(cache) == 3


async def test_a_repeat_after_the_reuse_window_gets_a_new_credential() -> None:
    clock = FrozenClock(NOW)
    cache = InMemoryReuseWindow(clock, reuse_seconds=60)
    issue = CountingIssuer(lifetime=3600)
    first, _ = await cache.get_or_issue(KEY, NOW + 86400, issue)
    clock.advance(59)
    retry, reused = await cache.get_or_issue(KEY, NOW + 86400, issue)
    assert (retry is first, reused, issue.calls) == (True, True, 1)
    clock.advance(2)
    later, reused_later = await cache.get_or_issue(KEY, NOW + 86400, issue)
    assert (later is first, reused_later, issue.calls) == (False, False, 2)


async def test_a_zero_window_never_reuses_but_still_coalesces() -> None:
    cache = InMemoryReuseWindow(FrozenClock(NOW), reuse_seconds=0)
    issue = CountingIssuer()
    issue.release.clear()
    tasks = [asyncio.create_task(cache.get_or_issue(KEY, NOW + 3600, issue)) for _ in range(3)]
    await issue.started.wait()
    issue.release.set()
    await asyncio.gather(*tasks)
    await cache.get_or_issue(KEY, NOW + 3600, issue)
    assert issue.calls == 2


async def test_a_forgotten_credential_is_never_handed_out_again() -> None:
    cache = InMemoryReuseWindow(FrozenClock(NOW))
    issue = CountingIssuer()
    first, _ = await cache.get_or_issue(KEY, NOW + 3600, issue)
    assert cache.held_for_token(KEY.token_fingerprint) == [first]
    cache.forget(first)
    second, reused = await cache.get_or_issue(KEY, NOW + 3600, issue)
    assert (second is first, reused, issue.calls) == (False, False, 2)
    assert cache.held_for_token(KEY.token_fingerprint) == [second]
