"""The store's group commit: writes that arrive while one is in flight share the next
transaction (the lease claims and activations, the audit events).

On SQLite a round runs on the ``sqlite3`` connection itself (sqlite_direct.py says why); on
PostgreSQL through SQLAlchemy.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import Executable
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokenbroker.batching import Batched
from tokenbroker.store.engine import WRITE_OPTION, LoopThreadConnection
from tokenbroker.store.sqlite_direct import run_on_sqlite3, sqlite_driver, sqlite_statement


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement of a write, with its parameters."""

    statement: Executable
    parameters: Mapping[str, object]


_Grouped = Mapping[Executable, list[Mapping[str, object]]]


@dataclass(frozen=True, slots=True)
class _Held:
    """The connection the rounds share, and on SQLite its driver's side (found once)."""

    connection: AsyncConnection
    sqlite: LoopThreadConnection | None


class _DeadBeforeWriting(Exception):
    """The held connection was found dead at a round's first statement."""


class GroupCommit:
    """Writes batched into one transaction each round: written whole or not at all.

    The rounds run one at a time, so they share one connection while writes keep coming,
    rather than taking one from the pool and giving it back for every round. The connection
    goes back to the pool once idle for ``idle_seconds`` (so the pool's check on checkout finds
    one a PostgreSQL server dropped while the broker was quiet), and is dropped when it failed.
    """

    def __init__(self, engine: AsyncEngine, *, idle_seconds: float = 1.0) -> None:
        self._engine = engine
        self._batched: Batched[Sequence[Statement], None] = Batched(self._commit)
        self._idle_seconds = idle_seconds
        self._held: _Held | None = None
        self._used_at = 0.0
        self._release_check: asyncio.TimerHandle | None = None
        self._releasing: asyncio.Task[None] | None = None

    @property
    def transactions(self) -> int:
        """How many transactions were written; diagnostics."""
        return self._batched.rounds

    async def write(self, statements: Sequence[Statement]) -> None:
        """Return once ``statements`` are committed, in one transaction; raise what it raised."""
        await self._batched(statements)

    async def flush(self) -> None:
        """Wait until every write made so far is written."""
        await self._batched.flush()

    async def close(self) -> None:
        """Write what is pending, then give the connection back (before the engine's dispose)."""
        await self.flush()
        await self._release()

    async def _commit(self, writes: Sequence[Sequence[Statement]]) -> list[None]:
        # Each statement once, with every write's parameters (an executemany), in the order
        # the statements first appear: the writes of a batch are independent of each other.
        grouped: dict[Executable, list[Mapping[str, object]]] = {}
        for statements in writes:
            for item in statements:
                grouped.setdefault(item.statement, []).append(item.parameters)
        try:
            await self._transaction(grouped)
        except _DeadBeforeWriting:
            # Nothing of the round reached the database: its one retry, on a fresh connection
            # (which the pool checks on checkout), is not a second write.
            await self._transaction(grouped)
        self._used_at = time.monotonic()
        if self._release_check is None:
            self._release_check = asyncio.get_running_loop().call_later(
                self._idle_seconds, self._release_when_idle
            )
        return [None] * len(writes)

    async def _transaction(self, grouped: _Grouped) -> None:
        held = await self._connection()
        if held.sqlite is not None:
            await self._sqlite_transaction(held.sqlite, grouped)
            return
        conn = held.connection
        sent = False
        try:
            async with conn.begin():
                for statement, parameters in grouped.items():
                    await conn.execute(statement, parameters)
                    sent = True
        except DBAPIError as exc:
            # A refused write (a unique key taken) leaves the connection as good as before.
            if not exc.connection_invalidated:
                raise
            await self._release()
            if not sent:
                raise _DeadBeforeWriting from exc
            raise
        except BaseException:
            await self._release()
            raise

    async def _sqlite_transaction(self, driver: LoopThreadConnection, grouped: _Grouped) -> None:
        """The round on the sqlite3 connection; its errors as SQLAlchemy's (IntegrityError)."""
        batches: list[tuple[str, list[tuple[object, ...]]]] = []
        for statement, parameters in grouped.items():
            compiled = sqlite_statement(statement, tuple(parameters[0]), self._engine.dialect)
            batches.append((compiled.sql, [compiled.row(p) for p in parameters]))

        def write(connection: sqlite3.Connection) -> None:
            # Rolled back on any error: run again on a thread when the file was locked.
            try:
                connection.execute("BEGIN IMMEDIATE")
                for sql, rows in batches:
                    connection.executemany(sql, rows)
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise

        await run_on_sqlite3(driver, write)

    def _release_when_idle(self) -> None:
        self._release_check = None
        if self._held is None:
            return
        idle = time.monotonic() - self._used_at
        if idle < self._idle_seconds or self._batched.running:
            self._release_check = asyncio.get_running_loop().call_later(
                max(self._idle_seconds - idle, 0), self._release_when_idle
            )
            return
        # Taken here, not in the task: a round that starts meanwhile opens another.
        held, self._held = self._held, None
        self._releasing = asyncio.create_task(held.connection.close())

    async def _connection(self) -> _Held:
        if self._held is None:
            connection = await self._engine.connect()
            await connection.execution_options(**{WRITE_OPTION: True})
            self._held = _Held(connection, await sqlite_driver(connection))
        return self._held

    async def _release(self) -> None:
        if self._release_check is not None:
            self._release_check.cancel()
            self._release_check = None
        held, self._held = self._held, None
        if held is not None:
            await held.connection.close()
        releasing, self._releasing = self._releasing, None
        if releasing is not None:
            await releasing
