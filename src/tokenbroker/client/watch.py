"""``tokenbroker exchange --watch --output FILE``: keep a credential file valid for a long job.

Each round reads the platform token afresh from its source (a token file the platform rewrites
is read again, GitHub's ID-token endpoint is asked again, a variable is what it was), exchanges
it, and replaces FILE at once (a reader sees the old credential or the new, never a part). The
next round starts at two thirds of the time the answer had left. The broker names every answer's
lease and expiry in headers, whatever the format, so FILE gets the body exactly as a one-shot
exchange writes it and the client renders nothing itself.

How it ends:
- SIGTERM or SIGINT: the job's leases are revoked at the broker (``--keep``: left to expire),
  then exit 0;
- a refresh the broker refuses (an expired platform token, a revoked assignment): exit with the
  refusal's code, FILE left as it is (valid until its expiry), nothing revoked;
- a broker that stays unreachable: each failed round is tried again at two thirds of what is
  left, until FILE's credential has expired; then exit 5.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import signal
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TypeVar

import aiohttp

from tokenbroker.client.broker import exchange_url, failure_for_reply
from tokenbroker.client.discovery import TokenSource, choose_token_source
from tokenbroker.client.envfiles import DEFAULT_FORMAT
from tokenbroker.client.exchange import (
    ClientRuntime,
    ExchangeOptions,
    ask_broker,
    broker_url_from,
    check_timeout,
    credential_text,
    revocation_lines,
    revoke_at_broker,
    ssl_context,
    write_credential_file,
)
from tokenbroker.client.failures import EXIT_OK, ClientFailure, Unavailable, UsageFailure
from tokenbroker.client.retry import HttpReply
from tokenbroker.clock import isoformat_utc
from tokenbroker.protocol import EXPIRES_AT_HEADER, LEASE_ID_HEADER

# Re-exchange with a third of the lifetime left: time for a slow broker's retries, while the
# credential the job holds is still good.
REFRESH_FRACTION = 2 / 3
# A reused answer (the broker's reuse window) has less time left each round: never ask more
# often than this.
MIN_REFRESH_SECONDS = 1.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class WatchedAnswer:
    """A successful answer: its body, its lease, and when it expires on the runner's clock."""

    body: str = field(repr=False)
    lease_id: str | None
    expires_at: float


def read_answer(reply: HttpReply, fmt: str, now: float) -> WatchedAnswer:
    """The body, lease and expiry of a 200 answer.

    The expiry is moved onto the runner's clock by the broker's ``Date``: a runner whose clock
    is off still refreshes at two thirds of the time the broker gave.
    """
    raw = reply.headers.get(EXPIRES_AT_HEADER)
    if raw is None:
        raise UsageFailure(
            f"--watch: the broker's {fmt} answer names no expiry ({EXPIRES_AT_HEADER}): it is "
            "a document holding no token, or the broker predates --watch; write it once, "
            "without --watch"
        )
    try:
        expires_at = datetime.fromisoformat(raw).timestamp()
    except ValueError:
        raise Unavailable(f"the broker's {EXPIRES_AT_HEADER} is not a time: {raw[:40]!r}") from None
    return WatchedAnswer(
        credential_text(reply),
        reply.headers.get(LEASE_ID_HEADER),
        now + (expires_at - _broker_now(reply, now)),
    )


def _broker_now(reply: HttpReply, now: float) -> float:
    try:
        moment = parsedate_to_datetime(reply.headers.get("Date", ""))
    except (TypeError, ValueError, IndexError):
        return now
    return now if moment.tzinfo is None else moment.timestamp()


def refresh_delay(expires_at: float, now: float) -> float:
    """Seconds until the next round: two thirds of what is left, at least a second."""
    return max(MIN_REFRESH_SECONDS, (expires_at - now) * REFRESH_FRACTION)


class _Stop(enum.Enum):
    STOPPED = "stopped"


STOPPED = _Stop.STOPPED


async def _until_stopped(work: Awaitable[_T], stop: asyncio.Event) -> _T | _Stop:
    """``work``'s result, or ``STOPPED`` once ``stop`` is set: the stop wins, and ``work`` is
    cancelled (an exchange the broker answered after the client went is revoked by the broker,
    and the job's leases are revoked on the way out anyway)."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if stop.is_set():
            task.cancel()
            # Awaited, so whatever it ended with (cancelled, or a failure it met at the same
            # moment) is retrieved and not reported as lost.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    return STOPPED if stop.is_set() else task.result()


@dataclass
class _Watch:
    """One watch: where it writes and what it asks for, over one HTTP session."""

    options: ExchangeOptions
    env: Mapping[str, str]
    runtime: ClientRuntime
    http: aiohttp.ClientSession
    url: str
    source: TokenSource
    fmt: str
    path: Path

    async def exchange(self) -> WatchedAnswer:
        reply = await ask_broker(
            self.http,
            self.url,
            self.source,
            self.options,
            self.env,
            self.runtime,
            query={"format": self.fmt},
        )
        if reply.status != 200:
            raise failure_for_reply(reply)
        return read_answer(reply, self.fmt, self.runtime.clock.now())

    def write(self, answer: WatchedAnswer) -> float:
        """Replace FILE with ``answer``; return the seconds until the next round."""
        write_credential_file(self.path, answer.body, replace=True)
        now = self.runtime.clock.now()
        delay = refresh_delay(answer.expires_at, now)
        lease = f"lease {answer.lease_id}, " if answer.lease_id else ""
        self.runtime.notify(
            f"wrote the credential to {self.path} ({self.fmt}; {lease}expires "
            f"{isoformat_utc(datetime.fromtimestamp(answer.expires_at, UTC))}); "
            f"next exchange in {delay:.0f}s"
        )
        return delay

    async def run(self, stop: asyncio.Event) -> None:
        """Keep FILE valid until ``stop``; a refusal ends it by raising its failure."""
        answer = await _until_stopped(self.exchange(), stop)
        if answer is STOPPED:
            return
        delay = self.write(answer)
        expires_at = answer.expires_at
        while await _until_stopped(self.runtime.sleep(delay), stop) is not STOPPED:
            try:
                answer = await _until_stopped(self.exchange(), stop)
            except Unavailable as exc:
                now = self.runtime.clock.now()
                if now >= expires_at:
                    raise Unavailable(
                        f"{exc.message}\n--watch: the credential in {self.path} has expired "
                        "and no new one could be had"
                    ) from None
                delay = refresh_delay(expires_at, now)
                self.runtime.notify(
                    f"could not refresh {self.path}; trying again in {delay:.0f}s "
                    "(the credential it holds is still valid)"
                )
                continue
            if answer is STOPPED:
                return
            delay = self.write(answer)
            expires_at = answer.expires_at

    async def end(self) -> None:
        """Revoke the job's leases at the broker, unless ``--keep``."""
        if self.options.keep:
            self.runtime.notify("--keep: the job's leases are left to expire")
            return
        try:
            answer = await revoke_at_broker(self.options, self.env, self.runtime)
        except ClientFailure as exc:
            raise type(exc)(f"could not revoke the job's leases: {exc.message}") from None
        for line in revocation_lines(answer):
            self.runtime.notify(line)


async def run_watch(
    options: ExchangeOptions, env: Mapping[str, str], runtime: ClientRuntime, stop: asyncio.Event
) -> int:
    """Keep ``--output`` valid until ``stop`` is set, then end the job's leases; the exit code.

    A failure (the first exchange's, or a refused refresh) raises a ``ClientFailure``.
    """
    if options.output is None:
        raise UsageFailure(
            "--watch needs --output FILE: it keeps that file current (stdout and an appended "
            "env file cannot be replaced)"
        )
    url = exchange_url(broker_url_from(options, env))
    check_timeout(options)
    source = choose_token_source(env, token_env=options.token_env, token_file=options.token_file)
    connector = aiohttp.TCPConnector(ssl=ssl_context(options.ca_cert))
    async with aiohttp.ClientSession(connector=connector) as http:
        watch = _Watch(
            options,
            env,
            runtime,
            http,
            url,
            source,
            options.fmt or DEFAULT_FORMAT,
            options.output,
        )
        await watch.run(stop)
    runtime.notify("stopping")
    await watch.end()
    return EXIT_OK


async def watch_until_signalled(
    options: ExchangeOptions, env: Mapping[str, str], runtime: ClientRuntime
) -> int:
    """``run_watch`` until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    try:
        return await run_watch(options, env, runtime, stop)
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
