"""Engines for SQLite (aiosqlite, WAL) and PostgreSQL (asyncpg) from one URL, the connections
the store's aggregates run on, and migrations."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolResetState

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# An execution option marking a connection that will write: SQLite then takes the write lock
# up front (BEGIN IMMEDIATE) instead of failing with SQLITE_BUSY when a read turns into a write.
WRITE_OPTION = "tokenbroker_write"
_SQLITE_BUSY_TIMEOUT_MS = 5000
# A steady pool, no overflow: an overflow connection is opened for one use and closed after,
# and under load that means four PRAGMAs per SQLite connection and a handshake and a backend
# process per PostgreSQL one, where waiting for a pooled connection is short: the store never
# holds one across a backend call.
_STEADY_POOL: dict[str, int] = {"pool_size": 10, "max_overflow": 0}
_T = TypeVar("_T")


def parse_url(url: str) -> URL:
    """Parse and check a store URL: only the async drivers this package ships with."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+asyncpg")
    if parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    if parsed.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        raise ValueError(
            "store.url must be sqlite+aiosqlite:///<file> or postgresql+asyncpg://...; "
            f"got driver {parsed.drivername!r}"
        )
    return parsed


def sqlite_file(url: URL) -> str | None:
    """The SQLite file ``url`` names, as the driver opens it; None for anything else.

    None for PostgreSQL, an in-memory database and a ``file:`` URI (``?uri=true``).
    """
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or "uri" in url.query:
        return None
    if database == ":memory:" or database.startswith("file:"):
        return None
    return os.path.abspath(database)  # as SQLAlchemy's pysqlite dialect does


def create_engine(url: str) -> AsyncEngine:
    """An async engine for ``url``; a SQLite file's directory is created, WAL switched on.

    A PostgreSQL URL may carry ``?search_path=<schema>`` to keep the tables in one schema.
    """
    parsed = parse_url(url)
    connect_args: dict[str, Any] = {}
    if parsed.drivername.startswith("postgresql"):
        search_path = parsed.query.get("search_path")
        if search_path is not None:
            parsed = parsed.difference_update_query(["search_path"])
            connect_args["server_settings"] = {"search_path": str(search_path)}
        engine = create_async_engine(
            parsed, connect_args=connect_args, pool_pre_ping=True, **_STEADY_POOL
        )
    else:
        database = sqlite_file(parsed)
        pool: dict[str, int] = {}
        if database is not None:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
            pool = _STEADY_POOL  # an in-memory database has a single, static connection
        # The pool's reset is the hook below: an unconditional rollback at every checkin would
        # be one more statement, usually to roll back nothing.
        engine = create_async_engine(
            parsed,
            async_creator=_sqlite_connector(parsed),
            pool_reset_on_return=None,
            **pool,
        )
        _install_sqlite_hooks(engine)
    return engine


class LoopThreadConnection(aiosqlite.Connection):
    """aiosqlite's connection, its calls made on the thread that awaits them: the event loop's,
    unless another process holds the database's lock.

    aiosqlite runs each call on a thread of the connection's own and hands the result back to
    the loop, which wakes for it: several hand-offs per statement. The store's statements are
    short (small rows, indexed lookups, pages of at most a thousand rows), and one process
    writes the file (serving several workers needs PostgreSQL), so they run where they are
    awaited, failing at once when the file is locked. A call that meets a lock (another
    process's transaction: an operator's ``tokenbroker db`` or ``keys``) waits for it on a
    thread instead, up to the busy timeout, while the loop serves everything else. It overrides
    aiosqlite's thread-facing methods; the pin on aiosqlite in pyproject.toml keeps them the
    ones it has.
    """

    async def _execute(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        if not self._running or self._connection is None:
            raise ValueError("Connection closed")
        try:
            return fn(*args, **kwargs)
        except sqlite3.OperationalError as exc:
            # A statement that found the database busy did nothing and may run again.
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                raise
        # This connection is its awaiting caller's alone until the call returns.
        return await asyncio.to_thread(self._waiting_for_lock, self._connection, fn, args, kwargs)

    @staticmethod
    def _waiting_for_lock(
        connection: sqlite3.Connection,
        fn: Callable[..., _T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> _T:
        connection.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
        try:
            return fn(*args, **kwargs)
        finally:
            connection.execute("PRAGMA busy_timeout=0")

    async def run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """``fn(the sqlite3 connection)``, where the connection's own calls run."""
        if self._connection is None:
            raise ValueError("Connection closed")
        return await self._execute(fn, self._connection)

    def __await__(self) -> Generator[Any, None, LoopThreadConnection]:
        return self._open().__await__()

    async def _open(self) -> LoopThreadConnection:
        if self._connection is None:
            self._connection = self._connector()
        return self

    def stop(self) -> None:
        self._running = False
        if self._connection is not None:
            self._connection.close()
            self._connection = None


async def sqlite_driver(connection: AsyncConnection) -> LoopThreadConnection | None:
    """The sqlite3 side of a checked-out connection; None on PostgreSQL."""
    driver = (await connection.get_raw_connection()).driver_connection
    return driver if isinstance(driver, LoopThreadConnection) else None


def _sqlite_connector(url: URL) -> Callable[[], Awaitable[LoopThreadConnection]]:
    database = url.database or ":memory:"
    uri = str(url.query.get("uri", "")).lower() in ("true", "1")

    def connect_file() -> sqlite3.Connection:
        # isolation_level None: we emit BEGIN ourselves (below), as the driver's own
        # transaction handling would leave DDL and SELECTs outside the transaction. Any thread:
        # the pool may close a connection from a finalizer; SQLite itself is serialized.
        return sqlite3.connect(database, uri=uri, isolation_level=None, check_same_thread=False)

    async def connect() -> LoopThreadConnection:
        return await LoopThreadConnection(connect_file, iter_chunk_size=64)

    return connect


def _install_sqlite_hooks(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        # Foreign keys are off by default per connection.
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            # Busy: fail at once, and wait on a thread instead (LoopThreadConnection).
            cursor.execute("PRAGMA busy_timeout=0")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "reset")
    def _on_reset(
        dbapi_connection: Any, record: ConnectionPoolEntry, reset_state: PoolResetState
    ) -> None:
        # What the pool's rollback-on-return guarded against, without its trip when there is
        # nothing to roll back: sqlite3's in_transaction is SQLite's own autocommit flag.
        if reset_state.terminate_only or not reset_state.asyncio_safe:
            return
        if record.driver_connection is not None and record.driver_connection.in_transaction:
            dbapi_connection.rollback()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # Writes take the write lock up front. Reads run without BEGIN (each statement its own
        # snapshot, like READ COMMITTED): the exchange's lookups are single statements, and
        # BEGIN/ROLLBACK would be two more.
        if connection.get_execution_options().get(WRITE_OPTION, False):
            connection.exec_driver_sql("BEGIN IMMEDIATE")


async def set_up(connection: AsyncConnection, *, write: bool) -> None:
    """Make ``connection`` one for the store's writes or for its reads.

    A write takes SQLite's write lock up front (``_on_begin``). Reads run in no transaction,
    each statement seeing what was committed before it: on PostgreSQL the connection is in
    autocommit (a BEGIN and a ROLLBACK would be two more round trips per read); SQLite's reads
    never begin one.
    """
    if write:
        await connection.execution_options(**{WRITE_OPTION: True})
    elif connection.dialect.name == "postgresql":
        await connection.execution_options(isolation_level="AUTOCOMMIT")


@asynccontextmanager
async def write_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection in a write transaction: committed on exit, rolled back on error."""
    async with engine.connect() as connection:
        await set_up(connection, write=True)
        async with connection.begin():
            yield connection


@asynccontextmanager
async def read_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for the store's reads (``set_up``), each statement seeing what was
    committed before it."""
    async with engine.connect() as connection:
        await set_up(connection, write=False)
        yield connection


ConnectionScope = Callable[[], AbstractAsyncContextManager[AsyncConnection]]
"""Opens the connection a group of statements runs on, and ends it."""


@dataclass(frozen=True, slots=True)
class Connections:
    """Where an aggregate's statements run: how it gets a connection to write and to read.

    The store's own aggregates open a transaction per call; a unit of work's share the
    caller's one connection (:meth:`joined`).
    """

    writing: ConnectionScope
    reading: ConnectionScope

    @classmethod
    def joined(cls, connection: AsyncConnection) -> Connections:
        """Every statement on ``connection``, in whatever transaction its owner holds."""

        def scope() -> AbstractAsyncContextManager[AsyncConnection]:
            return nullcontext(connection)

        return cls(writing=scope, reading=scope)


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's config for our migrations; ``connection`` is the one they run on."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def run_upgrade(connection: Connection) -> None:
    """Apply every migration not applied yet (sync: run through ``AsyncConnection.run_sync``)."""
    command.upgrade(alembic_config(connection), "head")


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at, or None before the first migration."""
    return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    """The newest revision this package ships."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
