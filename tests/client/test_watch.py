"""``exchange --watch`` against the broker and GitHub stand-ins, on a frozen clock.

The runtime's sleep moves the clock instead of waiting, so rounds hours apart run at once, and
the stand-ins' real ``Date`` headers sit far from the runner's clock: the watcher must
schedule by the time the broker gave, not by the two clocks' difference. The watch is stopped
(as SIGTERM would) once the stand-in has answered a given number of exchanges. The real
process, its signals and OpenBao are in ``tests/cli/test_exchange_watch.py``.
"""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest

from tests.client.fakes import (
    PLATFORM_TOKEN,
    BrokerStandIn,
    GitHubStandIn,
    Scripted,
    lease_of,
    refusal,
)
from tokenbroker.cli.main import main
from tokenbroker.client.envfiles import parse_values
from tokenbroker.client.exchange import ClientRuntime, ExchangeOptions
from tokenbroker.client.failures import EXIT_OK, Denied, Unavailable, UsageFailure
from tokenbroker.client.retry import HttpReply
from tokenbroker.client.watch import MIN_REFRESH_SECONDS, read_answer, refresh_delay, run_watch
from tokenbroker.clock import FrozenClock
from tokenbroker.protocol import EXPIRES_AT_HEADER, LEASE_ID_HEADER

NOW = 1_800_000_000.0


# --- when to ask again ------------------------------------------------------------------------


def test_the_next_round_comes_at_two_thirds_of_the_time_left() -> None:
    assert refresh_delay(NOW + 3600, NOW) == pytest.approx(2400)
    assert refresh_delay(NOW + 3600, NOW + 2400) == pytest.approx(800)


def test_rounds_are_never_closer_than_a_second() -> None:
    assert refresh_delay(NOW + 0.3, NOW) == MIN_REFRESH_SECONDS
    assert refresh_delay(NOW - 10, NOW) == MIN_REFRESH_SECONDS


def answer_at(broker_now: float, expires_at: str, **headers: str) -> HttpReply:
    moment = datetime.fromtimestamp(broker_now, UTC)
    return HttpReply(
        200,
        b"A=1\n",
        {"Date": format_datetime(moment, usegmt=True), EXPIRES_AT_HEADER: expires_at, **headers},
    )


def test_the_expiry_is_read_on_the_brokers_clock_and_moved_onto_the_runners() -> None:
    # The broker's clock is an hour ahead: its credential still has 15 minutes, not 75.
    broker_now = NOW + 3600
    reply = answer_at(broker_now, "2027-01-15T08:15:00Z", **{LEASE_ID_HEADER: "lse_1"})
    expires = datetime(2027, 1, 15, 8, 15, tzinfo=UTC).timestamp()
    answer = read_answer(reply, "env", NOW)
    assert answer.expires_at == pytest.approx(NOW + (expires - broker_now))
    assert (answer.body, answer.lease_id) == ("A=1\n", "lse_1")


def test_an_answer_naming_no_expiry_cannot_be_watched() -> None:
    with pytest.raises(UsageFailure, match=r"names no expiry .*without --watch"):
        read_answer(HttpReply(200, b"{}", {}), "gcp-external-account", NOW)


# --- rounds against the stand-ins -------------------------------------------------------------


class Rounds:
    """A frozen clock whose sleep moves it, and the stop the watch is given."""

    def __init__(self, stand_in: BrokerStandIn, stop_after: int) -> None:
        self.clock = FrozenClock(NOW)
        self.stand_in = stand_in
        self.stop_after = stop_after
        self.stop = asyncio.Event()
        self.notes: list[str] = []
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.advance(seconds)
        if len(self.stand_in.exchanges()) >= self.stop_after:
            self.stop.set()
        await asyncio.sleep(0)

    def runtime(self) -> ClientRuntime:
        return ClientRuntime(
            clock=self.clock, stdout=io.StringIO(), notify=self.notes.append, sleep=self.sleep
        )


async def watch(
    stand_in: BrokerStandIn,
    rounds: Rounds,
    output: Path,
    env: dict[str, str] | None = None,
    **options: object,
) -> int:
    stand_in.lease_in_body = True
    settings: dict[str, object] = {"credential": "prod-aws", "fmt": "env", **options}
    watched = ExchangeOptions(broker_url=stand_in.url, output=output, **settings)  # type: ignore[arg-type]
    env = env if env is not None else {"ENV0_OIDC_TOKEN": PLATFORM_TOKEN}
    return await run_watch(watched, env, rounds.runtime(), rounds.stop)


def lease_in(path: Path) -> str:
    return parse_values(path.read_text())["TOKENBROKER_LEASE_ID"]


async def test_each_round_asks_githubs_endpoint_for_a_fresh_token(
    broker_stand_in: BrokerStandIn, github_stand_in: GitHubStandIn, tmp_path: Path
) -> None:
    env = {
        "ACTIONS_ID_TOKEN_REQUEST_URL": github_stand_in.url,
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": github_stand_in.request_token,
    }
    rounds = Rounds(broker_stand_in, stop_after=3)
    output = tmp_path / "aws.env"

    assert await watch(broker_stand_in, rounds, output, env) == EXIT_OK

    exchanges = broker_stand_in.exchanges()
    assert len(exchanges) == 3
    # One token per round, and one more to revoke the job's leases on the way out.
    assert len(github_stand_in.requests) == 4
    assert {r.authorization for r in exchanges} == {f"Bearer {PLATFORM_TOKEN}"}
    assert broker_stand_in.requests[-1].path == "/v1/leases/revoke"
    assert lease_in(output) == lease_of(2)
    assert rounds.sleeps == [pytest.approx(2400, abs=1)] * 3
    assert f"left to expire: prod-aws (lease {lease_of(2)})" in rounds.notes


async def test_a_broker_down_at_refresh_time_is_asked_again_while_the_file_is_valid(
    broker_stand_in: BrokerStandIn, tmp_path: Path
) -> None:
    rounds = Rounds(broker_stand_in, stop_after=3)
    output = tmp_path / "aws.env"
    # Round two meets a 503 (its deadline allows no retry); round three gets through.
    broker_stand_in.then(Scripted(succeed=True), Scripted(503, {}))

    assert await watch(broker_stand_in, rounds, output, timeout=0.2) == EXIT_OK

    assert lease_in(output) == lease_of(2)
    assert any(note.startswith(f"could not refresh {output}") for note in rounds.notes)
    # Asked again at two thirds of the 20 minutes the first credential had left.
    assert rounds.sleeps[:2] == [pytest.approx(2400, abs=1), pytest.approx(800, abs=1)]


async def test_a_broker_down_until_the_credential_expires_ends_the_watch_unavailable(
    broker_stand_in: BrokerStandIn, tmp_path: Path
) -> None:
    rounds = Rounds(broker_stand_in, stop_after=100)
    output = tmp_path / "aws.env"
    broker_stand_in.then(Scripted(succeed=True), *[Scripted(503, {})] * 30)

    with pytest.raises(Unavailable, match="has expired and no new one could be had"):
        await watch(broker_stand_in, rounds, output, timeout=0.2)

    assert lease_in(output) == lease_of(0)
    assert all(r.path == "/v1/exchange" for r in broker_stand_in.requests)


async def test_a_refused_refresh_ends_the_watch_leaving_the_file_and_revoking_nothing(
    broker_stand_in: BrokerStandIn, tmp_path: Path
) -> None:
    rounds = Rounds(broker_stand_in, stop_after=100)
    output = tmp_path / "aws.env"
    broker_stand_in.then(
        Scripted(succeed=True),
        refusal(401, "invalid_token", "token_expired", "the token has expired"),
    )

    with pytest.raises(Denied, match="token_expired"):
        await watch(broker_stand_in, rounds, output)

    assert lease_in(output) == lease_of(0)
    assert all(r.path == "/v1/exchange" for r in broker_stand_in.requests)


async def test_keep_leaves_the_leases_to_expire(
    broker_stand_in: BrokerStandIn, tmp_path: Path
) -> None:
    rounds = Rounds(broker_stand_in, stop_after=1)

    assert await watch(broker_stand_in, rounds, tmp_path / "aws.env", keep=True) == EXIT_OK

    assert all(r.path == "/v1/exchange" for r in broker_stand_in.requests)
    assert "--keep: the job's leases are left to expire" in rounds.notes


async def test_an_answer_without_expiry_is_not_written(
    broker_stand_in: BrokerStandIn, tmp_path: Path
) -> None:
    rounds = Rounds(broker_stand_in, stop_after=100)
    output = tmp_path / "config.json"

    with pytest.raises(UsageFailure, match="names no expiry"):
        await watch(broker_stand_in, rounds, output, fmt="gcp-external-account")

    assert not output.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--watch"], "--watch needs --output FILE"),
        (["--keep", "--output", "f"], "--keep only applies to --watch"),
        (["--watch", "--append-env"], "cannot be a dry run nor --append-env"),
        (["--watch", "--output", "f", "--dry-run"], "cannot be a dry run nor --append-env"),
    ],
)
def test_watch_options_that_cannot_work_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["exchange", "--broker", "https://broker.example", *argv])
    assert code == 2
    assert message in capsys.readouterr().err
