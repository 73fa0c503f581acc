"""A steady load of exchanges from a process of its own, and what it saw, for the fleet test.

``python -m tests.support.fleet_load --url URL --tokens FILE --credential NAME --out FILE``

Each platform token (one a line in ``--tokens``) is exchanged twice: once, then again as a
retry as soon as the first answer is in, as a runner whose response was lost would. Pairs
start on a fixed schedule (``--pairs-per-second``), ``--concurrency`` at most at once, each
request on a kept-alive connection of a shared pool. Every answer, or the error in its place,
is one JSON line in ``--out``, written as it arrives; the credential appears only as its
SHA-256, never in clear. It stops starting pairs on SIGTERM, when the tokens run out or after
``--max-seconds``, lets the pairs in flight finish, and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp

_REQUEST_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Answer:
    """One request of the load: when it ran, what came back (status 0: no HTTP answer)."""

    token: int
    attempt: int
    started: float
    ended: float
    status: int
    lease: str | None
    credential_sha256: str | None
    error: str | None

    @classmethod
    def from_line(cls, line: str) -> Answer:
        """An answer read back from the load's output."""
        return cls(**json.loads(line))


def _fingerprint(body: dict[str, Any]) -> str | None:
    values = body.get("values")
    if not isinstance(values, dict):
        return None
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


async def _exchange(
    session: aiohttp.ClientSession, url: str, token: str, credential: str
) -> tuple[int, dict[str, Any], str | None]:
    try:
        async with session.post(
            f"{url}/v1/exchange",
            json={"credential": credential},
            headers={"Authorization": f"Bearer {token}"},
        ) as response:
            text = await response.text()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        return 0, {}, f"{type(exc).__name__}: {exc}"
    try:
        body = json.loads(text)
    except ValueError:
        return status, {}, f"not JSON: {text[:200]!r}"
    return status, body if isinstance(body, dict) else {}, None


async def run(
    url: str,
    tokens: Sequence[str],
    credential: str,
    *,
    pairs_per_second: float,
    concurrency: int,
    max_seconds: float,
    out: IO[str],
) -> int:
    """Drive the load until stopped; the number of requests made."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    start = time.monotonic()
    deadline = start + max_seconds
    pairs = itertools.count()
    made = 0

    def record(answer: Answer) -> None:
        out.write(json.dumps(answer.__dict__) + "\n")
        out.flush()

    async def one(session: aiohttp.ClientSession, index: int, attempt: int) -> None:
        nonlocal made
        began = time.monotonic()
        status, body, error = await _exchange(session, url, tokens[index], credential)
        lease = body.get("lease")
        made += 1
        record(
            Answer(
                token=index,
                attempt=attempt,
                started=began - start,
                ended=time.monotonic() - start,
                status=status,
                lease=lease.get("id") if isinstance(lease, dict) else None,
                credential_sha256=_fingerprint(body) if status == 200 else None,
                error=error,
            )
        )

    async def drive(session: aiohttp.ClientSession) -> None:
        while not stopping.is_set():
            index = next(pairs)
            due = start + index / pairs_per_second
            if index >= len(tokens) or due >= deadline:
                return
            # Wait for this pair's turn, or for the signal to stop starting pairs.
            try:
                await asyncio.wait_for(stopping.wait(), timeout=max(0.0, due - time.monotonic()))
                return
            except TimeoutError:
                pass
            await one(session, index, 0)
            await one(session, index, 1)

    timeout = aiohttp.ClientTimeout(total=_REQUEST_TIMEOUT_SECONDS)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await asyncio.gather(*(drive(session) for _ in range(concurrency)))
    return made


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options, run the load, exit 0."""
    parser = argparse.ArgumentParser(prog="python -m tests.support.fleet_load")
    parser.add_argument("--url", required=True, help="the base URL to send exchanges to")
    parser.add_argument("--tokens", type=Path, required=True, help="platform tokens, one a line")
    parser.add_argument("--credential", required=True)
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, one per answer")
    parser.add_argument("--pairs-per-second", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    args = parser.parse_args(argv)
    tokens = args.tokens.read_text().split()
    with args.out.open("w") as out:
        made = asyncio.run(
            run(
                args.url,
                tokens,
                args.credential,
                pairs_per_second=args.pairs_per_second,
                concurrency=args.concurrency,
                max_seconds=args.max_seconds,
                out=out,
            )
        )
    print(f"fleet load: {made} requests", file=sys.stderr)
    return 0


@dataclass(frozen=True)
class LoadFigures:
    """What the load saw, as the fleet test reports it."""

    sent: int
    failed: int
    server_errors: int
    connection_errors: int
    duplicates: int
    longest_request_seconds: float
    longest_gap_seconds: float

    @classmethod
    def of(cls, answers: Sequence[Answer]) -> LoadFigures:
        """Count failures and duplicates (a token whose two answers name different
        credentials); the longest request, and the longest time with no answer at all."""
        failed = [a for a in answers if a.status != 200]
        credentials: dict[int, set[str | None]] = {}
        for answer in answers:
            if answer.status == 200:
                credentials.setdefault(answer.token, set()).add(answer.credential_sha256)
        ended = sorted(a.ended for a in answers if a.status == 200)
        return cls(
            sent=len(answers),
            failed=len(failed),
            server_errors=sum(1 for a in failed if a.status >= 500),
            connection_errors=sum(1 for a in failed if a.status == 0),
            duplicates=sum(len(seen) - 1 for seen in credentials.values()),
            longest_request_seconds=max((a.ended - a.started for a in answers), default=0.0),
            longest_gap_seconds=max(
                (later - earlier for earlier, later in itertools.pairwise(ended)), default=0.0
            ),
        )


if __name__ == "__main__":
    sys.exit(main())
