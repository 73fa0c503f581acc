"""The client's retry policy against a real broker stand-in that fails, then succeeds.

Time is a FrozenClock that the recorded sleep moves forward, so backoff and deadlines are
checked exactly and without waiting.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from tests.client.fakes import PLATFORM_TOKEN, BrokerStandIn, Scripted, refusal
from tokenbroker.client.exchange import ClientRuntime, ExchangeOptions, run_exchange
from tokenbroker.client.failures import EXIT_OK, Denied, Unavailable
from tokenbroker.client.retry import (
    CLIENT_RETRY_POLICY,
    Deadline,
    HttpReply,
    is_retryable_status,
    parse_retry_after,
    send_with_retries,
)
from tokenbroker.clock import FrozenClock

NOW = 1_800_000_000.0


class Timeline:
    """A frozen clock and a sleep that records each wait and moves the clock by it."""

    def __init__(self) -> None:
        self.clock = FrozenClock(NOW)
        self.sleeps: list[float] = []
        self.notes: list[str] = []
        self.stdout = io.StringIO()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.advance(seconds)

    def runtime(self) -> ClientRuntime:
        return ClientRuntime(
            clock=self.clock, stdout=self.stdout, notify=self.notes.append, sleep=self.sleep
        )


@pytest.fixture
def timeline() -> Timeline:
    return Timeline()


async def exchange(stand_in: BrokerStandIn, timeline: Timeline, deadline: float = 60) -> int:
    options = ExchangeOptions(broker_url=stand_in.url, credential="prod-aws", timeout=deadline)
    env = {"ENV0_OIDC_TOKEN": PLATFORM_TOKEN}
    return await run_exchange(options, env, timeline.runtime())


# --- pure parts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        (" 0 ", 0.0),
        (format_datetime(datetime.fromtimestamp(NOW + 30, UTC), usegmt=True), 30.0),
        (format_datetime(datetime.fromtimestamp(NOW - 30, UTC), usegmt=True), 0.0),
        ("soon", None),
        ("-5", None),
        (None, None),
    ],
)
def test_retry_after_is_read_as_seconds_or_an_http_date(
    value: str | None, expected: float | None
) -> None:
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize(
    ("status", "retry"),
    [(429, True), (500, True), (503, True), (599, True), (400, False), (401, False),
     (403, False), (404, False), (409, False), (200, False)],
)  # fmt: skip
def test_only_429_and_5xx_are_retried(status: int, retry: bool) -> None:
    assert is_retryable_status(status) is retry


# --- against the stand-in -----------------------------------------------------------------------


async def test_429_waits_the_retry_after_seconds_then_succeeds(
    broker_stand_in: BrokerStandIn, timeline: Timeline
) -> None:
    broker_stand_in.then(refusal(429, "rate_limited", "rate_limited", "slow down", retry_after="7"))
    assert await exchange(broker_stand_in, timeline) == EXIT_OK
    assert len(broker_stand_in.requests) == 2
    assert timeline.sleeps == [7.0]
    assert json.loads(timeline.stdout.getvalue())["values"]["AWS_ACCESS_KEY_ID"]


async def test_429_with_an_http_date_waits_until_that_date(
    broker_stand_in: BrokerStandIn, timeline: Timeline
) -> None:
    when = format_datetime(datetime.fromtimestamp(NOW + 12, UTC), usegmt=True)
    broker_stand_in.then(refusal(429, "rate_limited", "rate_limited", "x", retry_after=when))
    assert await exchange(broker_stand_in, timeline) == EXIT_OK
    assert timeline.sleeps == [pytest.approx(12.0)]


async def test_503_and_a_dropped_connection_are_retried_with_growing_jittered_backoff(
    broker_stand_in: BrokerStandIn, timeline: Timeline
) -> None:
    broker_stand_in.then(
        refusal(503, "upstream_error", "backend_unreachable", "Vault is down"),
        Scripted(drop=True),
        refusal(502, "upstream_error", "backend_unreachable", "Vault is down"),
    )
    assert await exchange(broker_stand_in, timeline) == EXIT_OK
    assert len(broker_stand_in.requests) == 4
    # Equal jitter: retry n waits between half and all of base * 2^(n-1).
    for number, slept in enumerate(timeline.sleeps, start=1):
        step = min(
            CLIENT_RETRY_POLICY.max_delay, CLIENT_RETRY_POLICY.base_delay * 2 ** (number - 1)
        )
        assert step / 2 <= slept <= step
    assert any("connection was closed" in note for note in timeline.notes)


async def test_every_retry_presents_the_same_token_and_credential(
    broker_stand_in: BrokerStandIn, timeline: Timeline
) -> None:
    broker_stand_in.then(Scripted(drop=True), Scripted(500, "oops"))
    await exchange(broker_stand_in, timeline)
    assert {r.authorization for r in broker_stand_in.requests} == {f"Bearer {PLATFORM_TOKEN}"}
    assert [broker_stand_in.credential_requested(i) for i in range(3)] == ["prod-aws"] * 3


@pytest.mark.parametrize(
    ("status", "error", "reason"),
    [
        (403, "access_denied", "bound_claims_mismatch"),
        (401, "invalid_token", "token_expired"),
        (400, "invalid_request", "credential_required"),
        (404, "not_found", "organization_not_found"),
    ],
)
async def test_a_4xx_refusal_is_never_retried(
    broker_stand_in: BrokerStandIn, timeline: Timeline, status: int, error: str, reason: str
) -> None:
    broker_stand_in.then(refusal(status, error, reason, "no"))
    with pytest.raises(Denied):
        await exchange(broker_stand_in, timeline)
    assert len(broker_stand_in.requests) == 1
    assert timeline.sleeps == []


async def test_failures_until_the_deadline_give_up_before_it_as_unavailable(
    broker_stand_in: BrokerStandIn, timeline: Timeline
) -> None:
    broker_stand_in.then(*[refusal(503, "upstream_error", "backend_unreachable", "down")] * 50)
    with pytest.raises(Unavailable) as caught:
        await exchange(broker_stand_in, timeline, deadline=20)
    assert sum(timeline.sleeps) < 20
    assert timeline.clock.now() - NOW < 20
    assert "HTTP 503" in caught.value.message
    assert "down" in caught.value.message
    assert "giving up" in timeline.notes[-1]


async def test_a_retry_after_past_the_deadline_gives_up_at_once(
    broker_stand_in: BrokerStandIn, timeline: Timeline
) -> None:
    broker_stand_in.then(refusal(429, "rate_limited", "rate_limited", "x", retry_after="120"))
    with pytest.raises(Unavailable, match="rate_limited"):
        await exchange(broker_stand_in, timeline, deadline=60)
    assert timeline.sleeps == []
    assert "asked to retry in 120s, past the deadline" in timeline.notes[-1]


async def test_retries_stop_after_the_policys_attempts(
    broker_stand_in: BrokerStandIn, timeline: Timeline
) -> None:
    broker_stand_in.then(*[Scripted(drop=True)] * 50)
    with pytest.raises(Unavailable, match="connection was closed"):
        await exchange(broker_stand_in, timeline, deadline=3600)
    assert len(broker_stand_in.requests) == CLIENT_RETRY_POLICY.attempts


async def test_no_request_is_started_once_the_deadline_has_passed(timeline: Timeline) -> None:
    async def never(_: float) -> HttpReply:
        raise AssertionError("a request was started after the deadline")

    deadline = Deadline(timeline.clock, 5)
    timeline.clock.advance(5)
    with pytest.raises(Unavailable, match="ran out before the broker could be asked"):
        await send_with_retries(never, what="the broker", deadline=deadline, clock=timeline.clock)
