"""Group commit of audit events: concurrent events share a write; each is committed on return."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection, QueuePool

from tokenbroker.policy.models import AuditEvent
from tokenbroker.store import Store
from tokenbroker.store.audit_writer import AuditWriter
from tokenbroker.store.engine import create_engine
from tokenbroker.store.repository import AuditAppender

EVENT = AuditEvent(
    time=datetime(2026, 1, 1, 12, 0, tzinfo=UTC),
    request_id="req-0",
    outcome="success",
    reason="issued",
    latency_ms=1.0,
)
# The tests of the writer's own connection (a SQLite file written on the loop) run on SQLite only.
sqlite_file = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
# The tests of the connection the writer holds checked out run on PostgreSQL only.
postgresql = pytest.mark.parametrize(
    "store_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


@pytest.fixture
async def engine(store: Store, store_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine of its own on the migrated store's database."""
    engine = create_engine(store_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def make_writer(engine: AsyncEngine) -> AsyncIterator[Callable[..., AuditWriter]]:
    """Builds writers on ``engine``; each is closed afterwards."""
    made: list[AuditWriter] = []

    def make(*, checkpoint_every: int = 1000) -> AuditWriter:
        made.append(AuditWriter(engine, checkpoint_every=checkpoint_every))
        return made[-1]

    yield make
    for writer in made:
        await writer.close()


@pytest.fixture
def writer(make_writer: Callable[..., AuditWriter]) -> AuditWriter:
    """A writer with the default checkpoint interval."""
    return make_writer()


@dataclass
class PoolCheckouts:
    """The server backend of every connection ``engine``'s pool handed out, and the returns."""

    backends: list[int] = field(default_factory=list)
    checkins: int = 0


@pytest.fixture
def checkouts(engine: AsyncEngine) -> PoolCheckouts:
    """Counts checkouts and checkins on ``engine``'s pool (a PostgreSQL one: asyncpg's pids)."""
    seen = PoolCheckouts()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(
        dbapi_connection: object, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
    ) -> None:
        assert record.driver_connection is not None
        seen.backends.append(record.driver_connection.get_server_pid())

    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(dbapi_connection: object, record: ConnectionPoolEntry) -> None:
        seen.checkins += 1

    return seen


def _checked_out(engine: AsyncEngine) -> int:
    pool = engine.sync_engine.pool
    assert isinstance(pool, QueuePool)
    return pool.checkedout()


async def _terminate_backend(store_url: str, pid: int) -> None:
    """End server backend ``pid`` from a connection of another engine, as an admin would."""
    other = create_engine(store_url)
    try:
        async with other.connect() as connection:
            result = await connection.execute(
                text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}
            )
            assert result.scalar_one() is True
    finally:
        await other.dispose()


def _database(engine: AsyncEngine) -> Path:
    assert engine.url.database is not None
    return Path(engine.url.database)


def _wal_bytes(database: Path) -> int | None:
    """The size of ``database``'s WAL file; None when there is none."""
    wal = database.with_name(f"{database.name}-wal")
    return wal.stat().st_size if wal.exists() else None


async def _until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (a bounded number of turns, no timing)."""
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def test_events_recorded_together_share_one_insert_and_are_all_committed(
    writer: AuditWriter, store: Store
) -> None:
    events = [replace(EVENT, request_id=f"req-{i}") for i in range(20)]
    await asyncio.gather(*(writer.record(e) for e in events))
    assert 0 < writer.writes < 20
    seen = await store.list_audit(limit=100)
    assert sorted(e.request_id for e in seen) == sorted(e.request_id for e in events)


async def test_a_lone_event_is_committed_before_record_returns(
    writer: AuditWriter, store: Store
) -> None:
    await writer.record(EVENT)
    (seen,) = await store.list_audit()
    assert seen.request_id == "req-0"


async def record_first_refused_last(writer: AuditWriter) -> BaseException:
    """Record three events at once, the middle one refused by the database (no time); return
    what its caller got, after checking the other two callers got success."""
    refused = replace(EVENT, request_id="refused", time=None)  # type: ignore[arg-type]
    results = await asyncio.gather(
        writer.record(replace(EVENT, request_id="first")),
        writer.record(refused),
        writer.record(replace(EVENT, request_id="last")),
        return_exceptions=True,
    )
    assert (results[0], results[2]) == (None, None)
    assert isinstance(results[1], BaseException)
    return results[1]


async def test_an_event_the_database_refuses_fails_only_its_own_caller(
    writer: AuditWriter, store: Store
) -> None:
    assert isinstance(await record_first_refused_last(writer), Exception)
    assert sorted(e.request_id for e in await store.list_audit()) == ["first", "last"]


async def test_a_cancelled_caller_still_has_its_event_written(
    writer: AuditWriter, store: Store
) -> None:
    first = asyncio.create_task(writer.record(replace(EVENT, request_id="kept")))
    await asyncio.sleep(0)
    first.cancel()
    await writer.flush()
    assert [e.request_id for e in await store.list_audit()] == ["kept"]


async def test_events_written_by_the_writer_read_back_exactly(
    writer: AuditWriter, store: Store
) -> None:
    # The writer bypasses SQLAlchemy's statement: its values must still be stored as
    # SQLAlchemy stores them (timestamps, text fitting, NUL replacement).
    odd = replace(
        EVENT,
        request_id="odd",
        subject="a\x00b",
        project="p" * 300,
        latency_ms=2.5,
        issuer="env0",
        token_fingerprint="fp",
    )
    await asyncio.gather(writer.record(odd), writer.record(replace(EVENT, request_id="plain")))
    seen = {e.request_id: e for e in await store.list_audit(since=EVENT.time)}
    assert seen["odd"].time == EVENT.time
    assert seen["odd"].subject == "a\ufffdb"
    assert seen["odd"].project == "p" * 256
    assert (seen["odd"].latency_ms, seen["odd"].issuer) == (2.5, "env0")
    assert seen["plain"].subject is None


async def test_a_lone_surrogate_is_stored_escaped_and_spoils_no_other_event_of_its_batch(
    writer: AuditWriter, store: Store
) -> None:
    # A JSON "\ud800" in a request or a claim has no UTF-8 form; neither driver can send it.
    odd = replace(EVENT, request_id="odd", credential="prod-vault\ud800", project="p\udfff")
    await asyncio.gather(writer.record(odd), writer.record(replace(EVENT, request_id="plain")))
    seen = {e.request_id: e for e in await store.list_audit(since=EVENT.time)}
    assert seen["odd"].credential == "prod-vault\\ud800"
    assert seen["odd"].project == "p\\udfff"
    assert "plain" in seen


async def test_no_transaction_is_left_open_on_the_pooled_connection(
    engine: AsyncEngine, writer: AuditWriter, store: Store
) -> None:
    # The event is committed when record returns: another connection sees it at once, and a
    # write transaction on the same pool is not blocked by a leftover open one.
    for i in range(3):
        await writer.record(replace(EVENT, request_id=f"r{i}"))
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        if engine.dialect.name == "sqlite":
            assert not driver.in_transaction
        else:
            assert not driver.is_in_transaction()
    await store.create_organization("acme", "env0", "org-1")
    assert len(await store.list_audit()) == 3


async def test_only_a_sqlite_file_is_written_on_the_loops_own_connection(
    writer: AuditWriter, store: Store
) -> None:
    await asyncio.gather(*(writer.record(replace(EVENT, request_id=f"r{i}")) for i in range(3)))
    expected = writer.writes if store.dialect == "sqlite" else 0
    assert (writer.writes, writer.inline_writes) == (1, expected)


async def test_an_in_memory_sqlite_store_is_written_through_the_pool() -> None:
    engine = create_engine("sqlite+aiosqlite://")
    store = Store(engine)
    writer = AuditWriter(engine)
    try:
        await store.upgrade()
        await writer.record(EVENT)
        assert [e.request_id for e in await store.list_audit()] == ["req-0"]
        assert (writer.writes, writer.inline_writes) == (1, 0)
    finally:
        await writer.close()
        await store.close()


@sqlite_file
async def test_an_event_written_inline_reads_back_as_one_written_through_the_pool(
    engine: AsyncEngine, writer: AuditWriter, store: Store
) -> None:
    every_field = replace(
        EVENT,
        outcome="denied",
        reason="not_assigned",
        latency_ms=2.5,
        issuer="env0",
        organization="acme",
        project="p" * 300,
        subject="a\x00b",
        credential="prod-vault",
        credential_type="vault",
        token_fingerprint="fp",
        client_address="10.0.0.1",
    )
    await writer.record(replace(every_field, request_id="inline"))
    async with engine.connect() as connection:
        await AuditAppender(engine.dialect).append(
            connection, [replace(every_field, request_id="pooled")]
        )
    assert writer.inline_writes == 1
    inline, pooled = (
        asdict(e) for e in sorted(await store.list_audit(), key=lambda e: e.request_id)
    )
    assert inline.pop("request_id") == "inline"
    assert pooled.pop("request_id") == "pooled"
    assert inline.pop("id") != pooled.pop("id")
    assert inline == pooled


@sqlite_file
async def test_a_write_while_another_connection_holds_the_write_lock_waits_off_the_loop(
    engine: AsyncEngine, writer: AuditWriter, store: Store
) -> None:
    loop = asyncio.get_running_loop()
    # An admin transaction elsewhere: it holds SQLite's write lock until it commits.
    holder = sqlite3.connect(_database(engine), isolation_level=None, check_same_thread=False)
    try:
        holder.execute("BEGIN IMMEDIATE")
        started = loop.time()
        recording = asyncio.create_task(writer.record(EVENT))
        await _until(lambda: writer.lock_fallbacks == 1)
        # Waiting for the lock on the loop would have held it for a busy timeout (seconds).
        assert loop.time() - started < 1.0
        # While the event waits for the lock in aiosqlite's thread, the loop serves a read.
        assert await store.list_audit() == []
        assert not recording.done()
        await asyncio.to_thread(holder.execute, "COMMIT")
        await recording
    finally:
        holder.close()
    assert [e.request_id for e in await store.list_audit()] == ["req-0"]
    assert (writer.writes, writer.inline_writes) == (1, 0)


@sqlite_file
async def test_an_event_refused_on_the_inline_path_fails_only_its_own_caller(
    writer: AuditWriter, store: Store
) -> None:
    assert isinstance(await record_first_refused_last(writer), sqlite3.IntegrityError)
    # The batch, then each of its events alone; none of them went to the pool.
    assert (writer.writes, writer.inline_writes, writer.lock_fallbacks) == (4, 2, 0)
    assert sorted(e.request_id for e in await store.list_audit()) == ["first", "last"]


@sqlite_file
async def test_inline_writes_are_checkpointed_after_every_n_rows(
    engine: AsyncEngine, make_writer: Callable[..., AuditWriter]
) -> None:
    writer = make_writer(checkpoint_every=10)
    for i in range(10):
        await writer.record(replace(EVENT, request_id=f"r{i}"))
    await writer.flush()
    assert writer.checkpoints == 1
    size = _wal_bytes(_database(engine))
    assert size is not None
    for i in range(3):
        await writer.record(replace(EVENT, request_id=f"after-{i}"))
    # A WAL copied back whole is written again from its start; otherwise each commit appends.
    assert (_wal_bytes(_database(engine)) or 0) <= size
    assert writer.checkpoints == 1


@sqlite_file
async def test_only_one_checkpoint_runs_at_a_time(
    make_writer: Callable[..., AuditWriter], monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = make_writer(checkpoint_every=2)
    entered, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def blocked_checkpoint(path: str) -> None:
        calls.append(path)
        entered.set()
        release.wait()

    monkeypatch.setattr(writer, "_checkpoint_in_thread", blocked_checkpoint)
    try:
        for i in range(2):
            await writer.record(replace(EVENT, request_id=f"r{i}"))
        assert await asyncio.to_thread(entered.wait, 10)  # a bound for a broken writer
        for i in range(6):
            await writer.record(replace(EVENT, request_id=f"during-{i}"))
        assert len(calls) == 1
    finally:
        release.set()  # also on failure: closing the writer awaits the checkpoint
    await writer.flush()
    # The rows written meanwhile are due: the next write starts the next checkpoint.
    await writer.record(replace(EVENT, request_id="next"))
    await writer.flush()
    assert (len(calls), writer.checkpoints) == (2, 2)


@sqlite_file
async def test_a_failed_checkpoint_warns_once_and_is_retried_after_the_next_n_rows(
    make_writer: Callable[..., AuditWriter],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    writer = make_writer(checkpoint_every=2)
    calls: list[str] = []

    def failing_checkpoint(path: str) -> None:
        calls.append(path)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(writer, "_checkpoint_in_thread", failing_checkpoint)
    caplog.set_level(logging.WARNING, logger="tokenbroker.store.audit_writer")
    for i in range(5):
        await writer.record(replace(EVENT, request_id=f"secret-looking-{i}"))
        await writer.flush()
    assert (len(calls), writer.checkpoints) == (2, 0)
    (warning,) = caplog.records
    assert warning.levelno == logging.WARNING
    assert "secret-looking" not in warning.getMessage() + repr(vars(warning))


@sqlite_file
async def test_closing_the_writer_closes_its_connections(engine: AsyncEngine, store: Store) -> None:
    writer = AuditWriter(engine, checkpoint_every=1)
    await writer.record(EVENT)
    await writer.flush()
    assert writer.checkpoints == 1  # the inline and the checkpoint connection are open
    await writer.close()
    await engine.dispose()
    await store.close()
    # The last connection to close checkpoints and removes the WAL: none is left open.
    assert _wal_bytes(_database(engine)) is None


async def test_closing_the_store_closes_its_audit_connections(tmp_path: Path) -> None:
    database = tmp_path / "store.db"
    store = await Store.open(f"sqlite+aiosqlite:///{database}")
    await store.upgrade()
    await store.record_audit(EVENT)
    assert _wal_bytes(database) is not None
    await store.close()
    assert _wal_bytes(database) is None


@postgresql
async def test_consecutive_batches_on_postgresql_share_one_checked_out_connection(
    engine: AsyncEngine, writer: AuditWriter, checkouts: PoolCheckouts, store: Store
) -> None:
    for i in range(5):
        await writer.record(replace(EVENT, request_id=f"alone-{i}"))
    await asyncio.gather(*(writer.record(replace(EVENT, request_id=f"r{i}")) for i in range(10)))
    assert writer.writes >= 6
    # Checked out once, for the first batch, and kept: no pre-ping or checkin per batch.
    assert (len(checkouts.backends), checkouts.checkins) == (1, 0)
    assert _checked_out(engine) == 1
    assert len(await store.list_audit(limit=100)) == 15


@postgresql
async def test_a_batch_whose_held_connection_was_terminated_is_written_on_a_fresh_one(
    engine: AsyncEngine,
    writer: AuditWriter,
    checkouts: PoolCheckouts,
    store: Store,
    store_url: str,
) -> None:
    await writer.record(replace(EVENT, request_id="before"))
    (held,) = checkouts.backends
    await _terminate_backend(store_url, held)
    results = await asyncio.gather(
        *(writer.record(replace(EVENT, request_id=f"after-{i}")) for i in range(3)),
        return_exceptions=True,
    )
    assert results == [None, None, None]
    assert writer.reconnects == 1
    # The dead connection was discarded; the fresh one is held in its place.
    assert len(checkouts.backends) == 2
    assert checkouts.backends[1] != held
    assert _checked_out(engine) == 1
    await writer.record(replace(EVENT, request_id="later"))
    assert (len(checkouts.backends), writer.reconnects) == (2, 1)
    assert sorted(e.request_id for e in await store.list_audit()) == [
        "after-0",
        "after-1",
        "after-2",
        "before",
        "later",
    ]


@postgresql
async def test_a_refused_event_on_postgresql_leaves_the_held_connection_usable(
    engine: AsyncEngine, writer: AuditWriter, checkouts: PoolCheckouts, store: Store
) -> None:
    assert isinstance(await record_first_refused_last(writer), Exception)
    await writer.record(replace(EVENT, request_id="next"))
    # The failed executemany rolled back its own implicit transaction: the same connection
    # wrote on, with no transaction left open and nothing reconnected.
    assert (len(checkouts.backends), checkouts.checkins, writer.reconnects) == (1, 0, 0)
    async with engine.connect() as connection:
        result = await connection.execute(
            text("SELECT state FROM pg_stat_activity WHERE pid = :pid"),
            {"pid": checkouts.backends[0]},
        )
        assert result.scalar_one() == "idle"
    assert sorted(e.request_id for e in await store.list_audit()) == ["first", "last", "next"]


@postgresql
async def test_closing_the_writer_returns_its_held_connection_to_the_pool(
    engine: AsyncEngine, checkouts: PoolCheckouts, store: Store
) -> None:
    writer = AuditWriter(engine)
    await writer.record(EVENT)
    assert _checked_out(engine) == 1
    await writer.close()
    assert (len(checkouts.backends), checkouts.checkins) == (1, 1)
    assert _checked_out(engine) == 0


@postgresql
async def test_closing_the_writer_after_its_held_connection_died_discards_it_quietly(
    engine: AsyncEngine, checkouts: PoolCheckouts, store: Store, store_url: str
) -> None:
    writer = AuditWriter(engine)
    await writer.record(EVENT)
    (held,) = checkouts.backends
    await _terminate_backend(store_url, held)
    await writer.close()
    assert _checked_out(engine) == 0
    # The pool replaces the dead connection rather than hand it out again.
    async with engine.connect() as connection:
        result = await connection.execute(text("SELECT pg_backend_pid()"))
        assert result.scalar_one() != held
