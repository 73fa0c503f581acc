"""The audit log's group commit: concurrent events share a write; each is committed on return."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import event, insert, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from tests.store.helpers import (
    PoolCheckouts,
    backend_ended,
    postgresql,
    terminate_backend,
    wal_bytes,
    watch_checkouts,
)
from tokenbroker.backends.registry import INSTALLED
from tokenbroker.policy.models import AuditEvent
from tokenbroker.store import Store
from tokenbroker.store.audit import AuditLog, audit_row
from tokenbroker.store.engine import create_engine, write_connection
from tokenbroker.store.group_commit import GroupCommit
from tokenbroker.store.tables import audit_events

EVENT = AuditEvent(
    time=datetime(2026, 1, 1, 12, 0, tzinfo=UTC),
    request_id="req-0",
    outcome="success",
    reason="issued",
    latency_ms=1.0,
)
sqlite_file = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)


@pytest.fixture
async def engine(store: Store, store_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine of its own on the migrated store's database."""
    engine = create_engine(store_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def writer(engine: AsyncEngine) -> AsyncIterator[AuditLog]:
    """An audit log on ``engine``; flushed afterwards."""
    commits = GroupCommit(engine)
    yield AuditLog(engine, commits)
    await commits.close()


@pytest.fixture
def checkouts(engine: AsyncEngine) -> PoolCheckouts:
    """Counts checkouts and checkins on ``engine``'s pool (a PostgreSQL one: asyncpg's pids)."""
    return watch_checkouts(engine)


def _checked_out(engine: AsyncEngine) -> int:
    pool = engine.sync_engine.pool
    assert isinstance(pool, QueuePool)
    return pool.checkedout()


def _database(engine: AsyncEngine) -> Path:
    assert engine.url.database is not None
    return Path(engine.url.database)


async def test_events_recorded_together_share_one_insert_and_are_all_committed(
    writer: AuditLog, store: Store
) -> None:
    events = [replace(EVENT, request_id=f"req-{i}") for i in range(20)]
    await asyncio.gather(*(writer.record(e) for e in events))
    assert 0 < writer.writes < 20
    seen = await store.audit.events(limit=100)
    assert sorted(e.request_id for e in seen) == sorted(e.request_id for e in events)


async def test_a_lone_event_is_committed_before_record_returns(
    writer: AuditLog, store: Store
) -> None:
    await writer.record(EVENT)
    (seen,) = await store.audit.events()
    assert seen.request_id == "req-0"


async def record_first_refused_last(writer: AuditLog) -> BaseException:
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
    writer: AuditLog, store: Store
) -> None:
    assert isinstance(await record_first_refused_last(writer), Exception)
    # The batch, then each of its events alone.
    assert writer.writes == 4
    assert sorted(e.request_id for e in await store.audit.events()) == ["first", "last"]


async def test_a_cancelled_caller_still_has_its_event_written(
    writer: AuditLog, store: Store
) -> None:
    first = asyncio.create_task(writer.record(replace(EVENT, request_id="kept")))
    await asyncio.sleep(0)
    first.cancel()
    await writer.flush()
    assert [e.request_id for e in await store.audit.events()] == ["kept"]


async def test_events_written_by_the_writer_read_back_exactly(
    writer: AuditLog, store: Store
) -> None:
    # Text comes from tokens: NUL is replaced and text cut to its column, never refused.
    every_field = replace(
        EVENT,
        request_id="odd",
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
    await asyncio.gather(
        writer.record(every_field), writer.record(replace(EVENT, request_id="plain"))
    )
    seen = {e.request_id: e for e in await store.audit.events(since=EVENT.time)}
    odd = asdict(seen["odd"])
    assert odd.pop("id") is not None
    expected = asdict(replace(every_field, subject="a\ufffdb", project="p" * 256))
    expected.pop("id")
    assert odd == expected
    assert seen["plain"].subject is None


async def test_no_transaction_is_left_open_on_the_pooled_connection(
    engine: AsyncEngine, writer: AuditLog, store: Store
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
    await store.policy.create_organization("acme", "env0", "org-1")
    assert len(await store.audit.events()) == 3


async def test_an_in_memory_sqlite_store_records_its_audit_events() -> None:
    store = Store(create_engine("sqlite+aiosqlite://"), credential_types=INSTALLED)
    try:
        await store.upgrade()
        await store.audit.record(EVENT)
        assert [e.request_id for e in await store.audit.events()] == ["req-0"]
    finally:
        await store.close()


async def test_the_writes_connection_goes_back_to_the_pool_once_idle(engine: AsyncEngine) -> None:
    commits = GroupCommit(engine, idle_seconds=0.05)
    writer = AuditLog(engine, commits)
    await asyncio.gather(*(writer.record(replace(EVENT, request_id=f"r{i}")) for i in range(3)))
    await writer.record(replace(EVENT, request_id="alone"))
    # Held while writes keep coming, for the next round.
    assert _checked_out(engine) == 1
    deadline = asyncio.get_running_loop().time() + 5
    while _checked_out(engine) and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
        # The release is the group commit's own timer: nothing to wait on but the pool.
        await asyncio.sleep(0.01)
    assert _checked_out(engine) == 0
    await writer.record(replace(EVENT, request_id="later"))
    await commits.close()
    assert _checked_out(engine) == 0
    assert len(await writer.events()) == 5


@sqlite_file
async def test_a_write_while_another_connection_holds_the_write_lock_waits_off_the_loop(
    engine: AsyncEngine, writer: AuditLog, store: Store
) -> None:
    loop = asyncio.get_running_loop()
    # An admin transaction elsewhere: it holds SQLite's write lock until it commits.
    holder = sqlite3.connect(_database(engine), isolation_level=None, check_same_thread=False)
    try:
        holder.execute("BEGIN IMMEDIATE")
        started = loop.time()
        recording = asyncio.create_task(writer.record(EVENT))
        # While the event waits for the lock in the driver's thread, the loop serves a read.
        assert await store.audit.events() == []
        assert loop.time() - started < 1.0
        assert not recording.done()
        await asyncio.to_thread(holder.execute, "COMMIT")
        await recording
    finally:
        holder.close()
    assert [e.request_id for e in await store.audit.events()] == ["req-0"]
    assert writer.writes == 1


@sqlite_file
async def test_on_sqlite_the_group_commit_stores_through_sqlite3_what_sqlalchemy_would(
    engine: AsyncEngine, writer: AuditLog
) -> None:
    statements: list[str] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _on_execute(*args: object) -> None:
        statements.append(str(args[2]))

    detailed = replace(
        EVENT,
        time=datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC),
        kind="revocation",
        lease_id="lease-1",
        detail={"revoked": ["a", 1, None], "ok": True},
    )
    await writer.record(replace(detailed, request_id="group-commit"))
    assert statements == []  # the round ran on the sqlite3 connection itself
    async with write_connection(engine) as connection:
        await connection.execute(
            insert(audit_events), audit_row(replace(detailed, request_id="sqlalchemy"))
        )
    columns = [c.name for c in audit_events.columns if c.name not in ("id", "request_id")]
    with sqlite3.connect(_database(engine)) as reader:
        rows = reader.execute(
            f"SELECT {', '.join(columns)} FROM audit_events ORDER BY request_id"  # noqa: S608
        ).fetchall()
    assert len(rows) == 2
    assert rows[0] == rows[1]


async def test_closing_the_store_closes_its_audit_connections(tmp_path: Path) -> None:
    database = tmp_path / "store.db"
    store = await Store.open(f"sqlite+aiosqlite:///{database}", credential_types=INSTALLED)
    await store.upgrade()
    await store.audit.record(EVENT)
    assert wal_bytes(database) is not None
    await store.close()
    assert wal_bytes(database) is None


@postgresql
async def test_a_batch_after_its_pooled_connection_was_terminated_is_written_on_a_fresh_one(
    engine: AsyncEngine,
    writer: AuditLog,
    checkouts: PoolCheckouts,
    store: Store,
    store_url: str,
) -> None:
    await writer.record(replace(EVENT, request_id="before"))
    (held,) = checkouts.backends
    await terminate_backend(store_url, held)
    results = await asyncio.gather(
        *(writer.record(replace(EVENT, request_id=f"after-{i}")) for i in range(3)),
        return_exceptions=True,
    )
    assert results == [None, None, None]
    # The dead connection was found at the round's first statement and replaced before the
    # write (the pool's pre-ping checked the new one).
    assert checkouts.backends[-1] != held
    # The group commit keeps its connection while writes keep coming.
    assert _checked_out(engine) <= 1
    assert sorted(e.request_id for e in await store.audit.events()) == [
        "after-0",
        "after-1",
        "after-2",
        "before",
    ]


@postgresql
async def test_a_lone_event_after_the_server_closed_the_held_connection_is_written_on_a_fresh_one(
    writer: AuditLog, checkouts: PoolCheckouts, store: Store, store_url: str
) -> None:
    await writer.record(replace(EVENT, request_id="before"))
    (held,) = checkouts.backends
    await terminate_backend(store_url, held)
    deadline = asyncio.get_running_loop().time() + 10
    while not await backend_ended(store_url, held):
        assert asyncio.get_running_loop().time() < deadline, "the backend did not end"
    # A round of one event: no batch to fall back on, the round itself runs again.
    await writer.record(replace(EVENT, request_id="after"))
    assert checkouts.backends[-1] != held
    assert sorted(e.request_id for e in await store.audit.events()) == ["after", "before"]


@postgresql
async def test_a_refused_event_on_postgresql_leaves_no_transaction_open(
    engine: AsyncEngine, writer: AuditLog, checkouts: PoolCheckouts, store: Store
) -> None:
    assert isinstance(await record_first_refused_last(writer), Exception)
    await writer.record(replace(EVENT, request_id="next"))
    # The group commit keeps its connection while writes keep coming: idle, not in transaction.
    assert _checked_out(engine) <= 1
    async with engine.connect() as connection:
        result = await connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE pid = ANY(:pids) AND state = 'idle in transaction'"
            ),
            {"pids": sorted(set(checkouts.backends))},
        )
        assert result.scalar_one() == 0
    assert sorted(e.request_id for e in await store.audit.events()) == ["first", "last", "next"]


async def test_a_lone_surrogate_is_stored_escaped_and_spoils_no_other_event_of_its_batch(
    writer: AuditLog, store: Store
) -> None:
    # A JSON "\ud800" in a request or a claim has no UTF-8 form; neither driver can send it.
    odd = replace(EVENT, request_id="odd", credential="prod-vault\ud800", project="p\udfff")
    await asyncio.gather(writer.record(odd), writer.record(replace(EVENT, request_id="plain")))
    seen = {e.request_id: e for e in await store.audit.events(since=EVENT.time)}
    assert seen["odd"].credential == "prod-vault\\ud800"
    assert seen["odd"].project == "p\\udfff"
    assert "plain" in seen
