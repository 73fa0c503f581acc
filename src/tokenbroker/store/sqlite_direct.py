"""The statements every exchange runs on SQLite, run on the ``sqlite3`` connection itself.

To each statement it executes SQLAlchemy adds an execution context, events, a result, a pool
checkout and a greenlet switch, none of which these statements need. The group commit's rounds
(group_commit.py) and the one read of every retry (a remembered lease's state, leases.py) do
without them: they run the SQL SQLAlchemy compiles once per statement for the dialect, with the
values its column types' own bind processors make, and raise sqlite3's errors as SQLAlchemy's.
No SQL is written by hand. The rest of the store, and everything on PostgreSQL, goes through
SQLAlchemy.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import ClauseElement, Executable
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.compiler import SQLCompiler

from tokenbroker.store.engine import LoopThreadConnection
from tokenbroker.store.held import HeldConnection

_Processor = Callable[[Any], Any]
_T = TypeVar("_T")


class SqliteStatement:
    """A statement as ``sqlite3`` runs it: the SQL SQLAlchemy compiles for the dialect, and
    each row's values in their positions, made by the column types' own bind processors."""

    def __init__(self, statement: Executable, keys: Sequence[str], dialect: Dialect) -> None:
        assert isinstance(statement, ClauseElement)
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        assert isinstance(compiled, SQLCompiler)
        assert compiled.positiontup is not None  # the dialect's paramstyle is qmark
        self.sql = compiled.string
        # Per position: the parameter's name and its processor, or a value the statement
        # itself carries (a literal in a WHERE or SET clause), already processed.
        self._positions: list[tuple[str | None, _Processor | None, object]] = []
        for name in compiled.positiontup:
            bind = compiled.binds[name]
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if name in keys:
                self._positions.append((name, process, None))
            else:
                value = bind.effective_value
                self._positions.append((None, None, process(value) if process else value))

    def row(self, parameters: Mapping[str, object]) -> tuple[object, ...]:
        """The positional values of one row."""
        values: list[object] = []
        for name, process, constant in self._positions:
            if name is None:
                values.append(constant)
            else:
                value = parameters[name]
                values.append(process(value) if process else value)
        return tuple(values)


@functools.lru_cache(maxsize=256)
def sqlite_statement(
    statement: Executable, keys: tuple[str, ...], dialect: Dialect
) -> SqliteStatement:
    """``statement`` compiled once for ``dialect`` and the parameter names ``keys``."""
    return SqliteStatement(statement, keys, dialect)


async def run_on_sqlite3(
    driver: LoopThreadConnection, fn: Callable[[sqlite3.Connection], _T]
) -> _T:
    """``fn(the sqlite3 connection)``, its sqlite3 errors raised as SQLAlchemy's (IntegrityError,
    OperationalError), as the store's callers expect from every statement."""
    try:
        return await driver.run(fn)
    except sqlite3.Error as exc:
        raise DBAPIError.instance(None, None, exc, sqlite3.Error) from None


class SqliteReader:
    """The store's hot reads on SQLite, on one held connection (store/held.py).

    A read runs in the turn that awaits it (no round to wait for, no pool checkout); reads
    take turns on the connection, so one that meets a lock (and waits for it on a thread)
    holds the others until it is done. Each read is its own statement, outside any
    transaction: it sees what was committed before it.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._turn = asyncio.Lock()
        self._held = HeldConnection(engine, write=False, busy=self._turn.locked)

    async def rows(
        self, statement: Executable, parameters: Mapping[str, object]
    ) -> list[tuple[Any, ...]]:
        """Every row ``statement`` selects with ``parameters``."""
        compiled = sqlite_statement(statement, tuple(parameters), self._engine.dialect)
        values = compiled.row(parameters)

        def read(connection: sqlite3.Connection) -> list[tuple[Any, ...]]:
            # fetchall: the statement runs to its end, so it holds no read snapshot after.
            return connection.execute(compiled.sql, values).fetchall()

        async with self._turn:
            driver = (await self._held.get()).sqlite
            if driver is None:
                raise TypeError("SqliteReader needs a SQLite engine")
            found = await run_on_sqlite3(driver, read)
            self._held.used()
            return found

    async def close(self) -> None:
        """Give the connection back (before the engine's dispose)."""
        async with self._turn:
            await self._held.release()
