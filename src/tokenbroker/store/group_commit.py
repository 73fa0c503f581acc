"""Group commit: writes that arrive while a write is in flight share the next transaction.

Every caller returns once its own statements are committed, but under concurrency one
transaction of many writes replaces many transactions of one, and a lone write waits for
nothing extra (it is written at once). The audit log's events, the leases' activations that
commit with them, and the leases' claims all go through the store's one group commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import Executable
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbroker.store.engine import write_connection

# Writes per transaction: a bound on how long one transaction holds the database's write lock.
MAX_BATCH = 50


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement of a write, with its parameters."""

    statement: Executable
    parameters: Mapping[str, object]


_Pending = tuple[Sequence[Statement], asyncio.Future[None]]


class GroupCommit:
    """Writes in arrival order, batching those that arrive during a write.

    A batch is one transaction, so when the database refuses it nothing of it was written, and
    its writes are retried one by one: one write the database refuses (a broken row, a unique
    key taken) fails only its own caller.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._pending: list[_Pending] = []
        self._writer: asyncio.Task[None] | None = None
        self.transactions = 0
        """How many transactions were written; diagnostics."""

    async def write(self, statements: Sequence[Statement]) -> None:
        """Return once ``statements`` are committed, in one transaction; raise what it raised."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((statements, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain())
        # A caller cancelled here cancels only its wait: the write still happens.
        await future

    async def flush(self) -> None:
        """Wait until every write made so far is written."""
        while self._writer is not None:
            await asyncio.shield(self._writer)

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
                await self._write(batch)
        finally:
            self._writer = None

    async def _write(self, batch: Sequence[_Pending]) -> None:
        try:
            await self._commit(batch)
        except Exception as exc:
            if len(batch) > 1:
                for item in batch:
                    await self._write([item])
                return
            _settle(batch, exc)
            return
        _settle(batch, None)

    async def _commit(self, batch: Sequence[_Pending]) -> None:
        self.transactions += 1
        # Each statement once, with every write's parameters (an executemany), in the order
        # the statements first appear: the writes of a batch are independent of each other.
        grouped: dict[Executable, list[Mapping[str, object]]] = {}
        for statements, _ in batch:
            for item in statements:
                grouped.setdefault(item.statement, []).append(item.parameters)
        async with write_connection(self._engine) as conn:
            for statement, parameters in grouped.items():
                await conn.execute(statement, parameters)


def _settle(batch: Sequence[_Pending], error: Exception | None) -> None:
    for _, future in batch:
        if future.done():  # its caller was cancelled
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
