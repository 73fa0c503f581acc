"""The store's group commit: writes that arrive while one is in flight share the next
transaction (the lease claims and activations, the audit events).

On SQLite a round runs on the ``sqlite3`` connection itself (sqlite_direct.py says why); on
PostgreSQL through SQLAlchemy.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import Executable
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbroker.batching import Batched
from tokenbroker.store.engine import LoopThreadConnection
from tokenbroker.store.held import HeldConnection
from tokenbroker.store.sqlite_direct import run_on_sqlite3, sqlite_statement


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement of a write, with its parameters."""

    statement: Executable
    parameters: Mapping[str, object]


_Grouped = Mapping[Executable, list[Mapping[str, object]]]


class _DeadBeforeWriting(Exception):
    """The held connection was found dead at a round's first statement."""


class GroupCommit:
    """Writes batched into one transaction each round: written whole or not at all.

    The rounds run one at a time, so they share one held connection (store/held.py) while
    writes keep coming, given back once idle for ``idle_seconds``.
    """

    def __init__(self, engine: AsyncEngine, *, idle_seconds: float = 1.0) -> None:
        self._engine = engine
        self._batched: Batched[Sequence[Statement], None] = Batched(self._commit)
        self._held = HeldConnection(
            engine, write=True, busy=lambda: self._batched.running, idle_seconds=idle_seconds
        )

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
        await self._held.release()

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
        self._held.used()
        return [None] * len(writes)

    async def _transaction(self, grouped: _Grouped) -> None:
        held = await self._held.get()
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
        except BaseException as exc:
            await self._held.forget_if_broken(exc)
            if isinstance(exc, DBAPIError) and exc.connection_invalidated and not sent:
                raise _DeadBeforeWriting from exc
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
