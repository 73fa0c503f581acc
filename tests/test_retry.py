"""Bounded retries with jittered backoff: when to try again and how long to wait."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from tokenbroker.errors import UpstreamError
from tokenbroker.retry import (
    RetryPolicy,
    TransientFailure,
    backoff_delay,
    retry_transient,
    with_retries,
)


def _is_connection_error(exc: Exception) -> bool:
    return isinstance(exc, ConnectionError)


class Script:
    """Plays back outcomes: an exception is raised, anything else returned; counts calls."""

    def __init__(self, *outcomes: object) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0
        self.sleeps: list[float] = []

    async def call(self) -> object:
        outcome = self.outcomes[min(self.calls, len(self.outcomes) - 1)]
        self.calls += 1
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    async def retried(
        self, retries: int, on_error: Callable[[Exception], bool] = _is_connection_error
    ) -> object:
        """``call`` under ``with_retries``, retrying the errors ``on_error`` is true for."""
        return await with_retries(
            self.call,
            policy=RetryPolicy(retries=retries),
            retry_on_error=on_error,
            sleep=self.sleep,
        )


def _is_busy(result: object) -> bool:
    return result == "busy"


async def test_a_first_success_is_returned_without_sleeping() -> None:
    script = Script("ok")

    result = await with_retries(script.call, policy=RetryPolicy(retries=3), sleep=script.sleep)

    assert (result, script.calls, script.sleeps) == ("ok", 1, [])


async def test_retryable_errors_are_retried_until_success() -> None:
    script = Script(ConnectionError(), ConnectionError(), "ok")

    result = await script.retried(3)

    assert (result, script.calls, len(script.sleeps)) == ("ok", 3, 2)


async def test_the_last_error_propagates_when_attempts_run_out() -> None:
    script = Script(ConnectionError("down"))

    with pytest.raises(ConnectionError, match="down"):
        await script.retried(2)

    assert (script.calls, len(script.sleeps)) == (3, 2)


async def test_errors_not_worth_retrying_propagate_at_once() -> None:
    script = Script(ValueError("bad"), "ok")

    with pytest.raises(ValueError, match="bad"):
        await script.retried(3)

    assert script.calls == 1


async def test_a_retryable_result_is_retried_and_the_last_one_returned() -> None:
    script = Script("busy")

    result = await with_retries(
        script.call, policy=RetryPolicy(retries=2), retry_on_result=_is_busy, sleep=script.sleep
    )

    assert (result, script.calls) == ("busy", 3)


async def test_zero_retries_means_one_attempt() -> None:
    script = Script(ConnectionError())

    with pytest.raises(ConnectionError):
        await script.retried(0)

    assert script.calls == 1


async def test_cancellation_is_never_retried() -> None:
    script = Script(asyncio.CancelledError())

    with pytest.raises(asyncio.CancelledError):
        await script.retried(3, lambda _: True)

    assert script.calls == 1


def test_backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() -> None:
    policy = RetryPolicy(retries=6, base_delay=0.5, max_delay=3.0)
    rng = random.Random(7)

    delays = [backoff_delay(n, policy, rng) for n in range(1, 7)]

    for delay, step in zip(delays, [0.5, 1.0, 2.0, 3.0, 3.0, 3.0], strict=True):
        assert step / 2 <= delay <= step
    assert len(set(delays)) == len(delays)


@pytest.mark.parametrize(
    "policy_args",
    [{"retries": -1}, {"base_delay": -0.1}, {"base_delay": 2.0, "max_delay": 1.0}],
)
def test_nonsense_policies_are_refused(policy_args: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="retries"):
        RetryPolicy(**policy_args)  # type: ignore[arg-type]


async def test_a_transient_failure_is_retried_then_its_final_error_raised() -> None:
    final = UpstreamError("backend_unavailable", "STS answered 503")
    script = Script(TransientFailure(final), TransientFailure(final), "never reached")
    with pytest.raises(UpstreamError) as caught:
        await retry_transient(script.call, policy=RetryPolicy(retries=1), sleep=script.sleep)
    assert caught.value is final
    assert (script.calls, len(script.sleeps)) == (2, 1)


async def test_a_transient_failure_then_success_returns_the_result() -> None:
    script = Script(TransientFailure(UpstreamError("x", "y")), "ok")
    result = await retry_transient(script.call, policy=RetryPolicy(retries=2), sleep=script.sleep)
    assert (result, script.calls) == ("ok", 2)
