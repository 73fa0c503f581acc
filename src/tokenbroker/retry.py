"""Bounded retries with jittered exponential backoff, shared by the backends and the client.

Callers decide what is worth retrying (Vault: connection errors, 5xx, 412); this module only
decides when. It imports nothing of the server, so the runner's client can use it too. Jitter
keeps many broker instances from retrying against a struggling backend in lockstep.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tokenbroker.errors import BrokerError

T = TypeVar("T")

Sleep = Callable[[float], Awaitable[None]]


def _never(_: object) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry: ``retries`` after the first attempt."""

    retries: int = 2
    base_delay: float = 0.2
    max_delay: float = 2.0

    def __post_init__(self) -> None:
        if self.retries < 0 or self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError("retries >= 0 and 0 <= base_delay <= max_delay are required")

    @property
    def attempts(self) -> int:
        """Total attempts: the first one plus the retries."""
        return self.retries + 1


def backoff_delay(retry_number: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Seconds to wait before retry ``retry_number`` (1-based): "equal jitter" backoff.

    Half of the capped exponential step is fixed and half random, so retries always back off
    a little yet never line up across instances.
    """
    step = min(policy.max_delay, policy.base_delay * 2.0 ** (retry_number - 1))
    return step / 2 + rng.uniform(0, step / 2)


async def with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    retry_on_error: Callable[[Exception], bool] = _never,
    retry_on_result: Callable[[T], bool] = _never,
    rng: random.Random | None = None,
    sleep: Sleep = asyncio.sleep,
) -> T:
    """Await ``call`` until it gives a result not worth retrying, or attempts run out.

    When the last attempt still fails, its exception propagates or its result is returned, so
    the caller maps the final outcome to its own error. Exceptions ``retry_on_error`` rejects
    propagate at once; cancellation is never retried.
    """
    rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter, not a secret
    for retry_number in range(policy.attempts):
        last_attempt = retry_number == policy.retries
        try:
            result = await call()
        except Exception as exc:
            if last_attempt or not retry_on_error(exc):
                raise
        else:
            if last_attempt or not retry_on_result(result):
                return result
        await sleep(backoff_delay(retry_number + 1, policy, rng))
    raise AssertionError("unreachable: the last attempt always returns or raises")


class TransientFailure(Exception):
    """A failure worth retrying; carries the error to raise once the retries are spent."""

    def __init__(self, final: BrokerError) -> None:
        super().__init__(final.description)
        self.final = final


def _is_transient(exc: Exception) -> bool:
    return isinstance(exc, TransientFailure)


async def retry_transient(
    call: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    rng: random.Random | None = None,
    sleep: Sleep = asyncio.sleep,
) -> T:
    """``with_retries`` for calls that raise TransientFailure: retried, then its error raised."""
    try:
        return await with_retries(
            call, policy=policy, retry_on_error=_is_transient, rng=rng, sleep=sleep
        )
    except TransientFailure as exc:
        raise exc.final from None
