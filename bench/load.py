"""The load generator: an aiohttp client in its own process, bounded in time and in count.

The parent hands the worker a token pool once, then jobs. A job names its targets (a URL and
how a request is built from a token); with several targets the worker alternates between them
request by request, so every target sees the same moment of a shared, noisy machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Literal, Self

import aiohttp

TOKEN_PLACEHOLDER = "@TOKEN@"
TokenUse = Literal["fresh", "cycle", "fixed", "none"]


@dataclass(frozen=True)
class Tokens:
    """Which tokens of the pool a target sends (see Target)."""

    use: TokenUse = "none"
    start: int = 0
    stop: int | None = None

    def shifted(self, by: int) -> Tokens:
        """The same plan starting ``by`` tokens later (fresh tokens only)."""
        if self.use != "fresh":
            return self
        return Tokens(self.use, self.start + by, self.stop)


NO_TOKEN = Tokens()


@dataclass(frozen=True)
class Target:
    """One kind of request: where it goes and how a token goes into it.

    ``Tokens("fresh", start, stop)`` takes the next unused token of the pool for every request
    (so a broker cannot answer from its idempotent-retry cache); ``"cycle"`` goes round
    ``start:stop`` again and again (retries of earlier exchanges); ``"fixed"`` always sends
    token ``start``; ``"none"`` sends no token. ``TOKEN_PLACEHOLDER`` in ``body``
    is replaced by the token; with ``bearer`` it also goes into ``Authorization``.
    """

    label: str
    url: str
    body: str = ""
    content_type: str = "application/json"
    bearer: bool = False
    tokens: Tokens = NO_TOKEN
    expect_status: int = 200


@dataclass(frozen=True)
class Job:
    """Requests to make: until every target made ``max_count`` or ``max_seconds`` passed."""

    targets: tuple[Target, ...]
    concurrency: int
    max_count: int
    max_seconds: float
    warmup: int = 0


@dataclass
class TargetResult:
    """What one target's requests measured (latencies in nanoseconds, successes only)."""

    label: str
    latencies_ns: list[int] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""

    @property
    def count(self) -> int:
        """Successful requests."""
        return len(self.latencies_ns)


@dataclass
class JobResult:
    """The results of one job; ``elapsed_seconds`` covers the timed part only."""

    targets: dict[str, TargetResult]
    elapsed_seconds: float
    concurrency: int

    def rate(self, label: str) -> float:
        """Successful requests per second of a target over the whole job."""
        return self.targets[label].count / self.elapsed_seconds if self.elapsed_seconds else 0.0


class _Cursor:
    """Hands out (target, token) pairs round-robin until the job's bounds are reached."""

    def __init__(self, job: Job, tokens: Sequence[str], count: int) -> None:
        self._job = job
        self._tokens = tokens
        self._count = count
        self._made = [0] * len(job.targets)
        self._next_token = [t.tokens.start for t in job.targets]
        self._order = itertools.cycle(range(len(job.targets)))

    def take(self) -> tuple[Target, str] | None:
        for _ in range(len(self._job.targets)):
            index = next(self._order)
            target = self._job.targets[index]
            if self._made[index] >= self._count:
                continue
            plan, token = target.tokens, ""
            stop = len(self._tokens) if plan.stop is None else plan.stop
            if plan.use == "fixed":
                token = self._tokens[plan.start]
            elif plan.use == "cycle":
                if self._next_token[index] >= stop:
                    self._next_token[index] = plan.start
                token = self._tokens[self._next_token[index]]
                self._next_token[index] += 1
            elif plan.use == "fresh":
                if self._next_token[index] >= stop:
                    continue
                token = self._tokens[self._next_token[index]]
                self._next_token[index] += 1
            self._made[index] += 1
            return target, token
        return None


def _request(target: Target, token: str) -> tuple[dict[str, str], bytes]:
    headers = {"Content-Type": target.content_type}
    if target.bearer:
        headers["Authorization"] = f"Bearer {token}"
    return headers, target.body.replace(TOKEN_PLACEHOLDER, token).encode()


async def _run(job: Job, tokens: Sequence[str]) -> JobResult:
    results = {t.label: TargetResult(t.label) for t in job.targets}
    connector = aiohttp.TCPConnector(limit=job.concurrency, limit_per_host=job.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def drive(cursor: _Cursor, deadline: float, record: bool) -> None:
            while time.monotonic() < deadline:
                taken = cursor.take()
                if taken is None:
                    return
                target, token = taken
                headers, body = _request(target, token)
                started = time.perf_counter_ns()
                try:
                    async with session.post(target.url, data=body, headers=headers) as response:
                        text = await response.read()
                        status = response.status
                except aiohttp.ClientError as exc:
                    status, text = 0, repr(exc).encode()
                elapsed = time.perf_counter_ns() - started
                if not record:
                    continue
                result = results[target.label]
                if status == target.expect_status:
                    result.latencies_ns.append(elapsed)
                else:
                    result.errors += 1
                    if not result.first_error:
                        result.first_error = f"HTTP {status}: {text[:300]!r}"

        async def phase(count: int, seconds: float, record: bool) -> float:
            cursor = _Cursor(job, tokens, count)
            deadline = time.monotonic() + seconds
            started = time.perf_counter()
            await asyncio.gather(*(drive(cursor, deadline, record) for _ in range(job.concurrency)))
            return time.perf_counter() - started

        if job.warmup:
            # Warm-up takes its own tokens: shift fresh targets past the ones it used.
            await phase(job.warmup, job.max_seconds, record=False)
            job = Job(
                tuple(replace(t, tokens=t.tokens.shifted(job.warmup)) for t in job.targets),
                job.concurrency,
                job.max_count,
                job.max_seconds,
            )
        elapsed = await phase(job.max_count, job.max_seconds, record=True)
    return JobResult(results, elapsed, job.concurrency)


def _serve(connection: Connection) -> None:
    tokens: list[str] = []
    while True:
        message = connection.recv()
        kind = message[0]
        if kind == "stop":
            return
        if kind == "tokens":
            tokens = message[1]
            connection.send(len(tokens))
        elif kind == "job":
            connection.send(asyncio.run(_run(message[1], tokens)))


class LoadWorker:
    """The load generator process; ``run(job)`` blocks until the job's results are back."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child,), daemon=True, name="load")

    def start(self) -> None:
        """Start the process."""
        self._process.start()

    def set_tokens(self, tokens: Sequence[str]) -> None:
        """Give the worker the token pool jobs index into."""
        self._connection.send(("tokens", list(tokens)))
        self._connection.recv()

    def run(self, job: Job) -> JobResult:
        """Run a job in the worker process and return its results."""
        self.submit(job)
        return self.collect()

    def submit(self, job: Job) -> None:
        """Start a job in the worker process; ``collect`` waits for its results."""
        self._connection.send(("job", job))

    def collect(self) -> JobResult:
        """The results of the job ``submit`` started, once it is done."""
        result: JobResult = self._connection.recv()
        return result

    def stop(self) -> None:
        """Ask the worker to exit and wait for it."""
        if self._process.is_alive():
            with contextlib.suppress(OSError):
                self._connection.send(("stop",))
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class LoadPool:
    """Several load generator processes that run each job together, their results merged: one
    process's client saturates before many broker workers do."""

    def __init__(self, size: int) -> None:
        self.workers = [LoadWorker() for _ in range(size)]

    def set_tokens(self, tokens: Sequence[str]) -> None:
        """Give every process the token pool."""
        for worker in self.workers:
            worker.set_tokens(tokens)

    def run(self, job: Job) -> JobResult:
        """Run ``job`` in every process at once; counts add up, the elapsed time is the longest."""
        for worker in self.workers:
            worker.submit(job)
        results = [worker.collect() for worker in self.workers]
        merged = {label: TargetResult(label) for label in results[0].targets}
        for result in results:
            for label, target in result.targets.items():
                total = merged[label]
                total.latencies_ns += target.latencies_ns
                total.errors += target.errors
                total.first_error = total.first_error or target.first_error
        return JobResult(
            merged,
            max(result.elapsed_seconds for result in results),
            sum(result.concurrency for result in results),
        )

    def __enter__(self) -> Self:
        for worker in self.workers:
            worker.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for worker in self.workers:
            worker.stop()
