"""Batching of hot calls to another server: those that arrive while one is in flight share the
next.

Every caller returns once its own call is done, but under concurrency one round of many calls
replaces many rounds of one, and a lone call waits for nothing extra (it runs at once). The
store batches its hot writes (store/group_commit.py) and, on PostgreSQL, the one read of every
retry (a remembered lease's state, store/leases.py); the Redis rate limiter its takes
(ratelimit.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

# Calls per round: a bound on how long one round holds the other server (a database's write lock).
MAX_BATCH = 50

_Call = TypeVar("_Call")
_Answer = TypeVar("_Answer")


class Batched(Generic[_Call, _Answer]):
    """Calls in arrival order, those that arrive during a round batched into the next.

    ``run`` answers a batch of calls in one round, an answer per call, or raises. A batch that
    raised is run again call by call, so one call the database refuses (a broken row, a unique
    key taken) fails only its own caller.
    """

    def __init__(self, run: Callable[[Sequence[_Call]], Awaitable[Sequence[_Answer]]]) -> None:
        self._run = run
        self._pending: list[tuple[_Call, asyncio.Future[_Answer]]] = []
        self._runner: asyncio.Task[None] | None = None
        self.rounds = 0
        """How many rounds ran; diagnostics."""

    async def __call__(self, call: _Call) -> _Answer:
        """Return ``call``'s answer once its round ran; raise what its round raised."""
        future: asyncio.Future[_Answer] = asyncio.get_running_loop().create_future()
        self._pending.append((call, future))
        if self._runner is None:
            self._runner = asyncio.create_task(self._drain())
        # A caller cancelled here cancels only its wait: the call still runs.
        return await future

    @property
    def running(self) -> bool:
        """Whether a round is running or waiting to."""
        return self._runner is not None

    async def flush(self) -> None:
        """Wait until every call made so far has run."""
        while self._runner is not None:
            await asyncio.shield(self._runner)

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
                await self._round(batch)
        finally:
            self._runner = None

    async def _round(self, batch: Sequence[tuple[_Call, asyncio.Future[_Answer]]]) -> None:
        self.rounds += 1
        try:
            answers = await self._run([call for call, _ in batch])
        except Exception as exc:
            if len(batch) > 1:
                for item in batch:
                    await self._round([item])
                return
            _, future = batch[0]
            if not future.done():  # its caller was cancelled
                future.set_exception(exc)
            return
        for (_, future), answer in zip(batch, answers, strict=True):
            if not future.done():
                future.set_result(answer)
