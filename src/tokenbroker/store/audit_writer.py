"""Group commit of audit events: every exchange's event is committed before it answers, but
events recorded while a write is in flight share the next write.

Each write is one trip through the database driver (``AuditAppender``: one hand-off to
aiosqlite's thread, one asyncpg call); under concurrency one INSERT of many rows replaces many
INSERTs of one. A lone request waits for nothing extra: its event is written at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbroker.policy.models import AuditEvent
from tokenbroker.store.repository import AuditAppender

_Pending = tuple[AuditEvent, asyncio.Future[None]]
# Rows per INSERT: 13 parameters a row stays far below SQLite's bound-parameter limit.
MAX_BATCH = 50


class AuditWriter:
    """Writes audit events in arrival order, batching those that arrive during a write."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._appender = AuditAppender(engine.dialect)
        self._pending: list[_Pending] = []
        self._writer: asyncio.Task[None] | None = None
        self.writes = 0
        """How many writes (INSERT statements or executemany calls) were made; diagnostics."""

    async def record(self, event: AuditEvent) -> None:
        """Return once ``event`` is committed; raise what its write raised."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((event, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain())
        # A caller cancelled here cancels only its wait: the event is still written.
        await future

    async def flush(self) -> None:
        """Wait until every event recorded so far is written (at shutdown)."""
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
            async with self._engine.connect() as connection:
                # Atomic and committed by itself, before any caller is answered (see
                # AuditAppender); the connection goes back to the pool with nothing open.
                self.writes += 1
                await self._appender.append(connection, [event for event, _ in batch])
        except Exception as exc:
            if len(batch) > 1:
                # One event the database refuses must not fail the others' requests.
                for item in batch:
                    await self._write([item])
                return
            _settle(batch, exc)
            return
        _settle(batch, None)


def _settle(batch: Sequence[_Pending], error: Exception | None) -> None:
    for _, future in batch:
        if future.done():  # its caller was cancelled
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
