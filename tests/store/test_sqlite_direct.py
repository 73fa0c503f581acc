"""The store's hot statements on the sqlite3 connection itself: the same answers as SQLAlchemy's,
errors as SQLAlchemy's, and the connection given back when the store closes."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import bindparam, event, insert, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.store.helpers import wal_bytes
from tests.store.test_audit_log import EVENT
from tokenbroker.backends.registry import INSTALLED
from tokenbroker.store import Store
from tokenbroker.store.audit import audit_row
from tokenbroker.store.engine import create_engine, read_connection, write_connection
from tokenbroker.store.sqlite_direct import SqliteReader
from tokenbroker.store.tables import audit_events

# Datetime and literal parameters: the column types' bind processors and a constant in WHERE.
SINCE = select(audit_events.c.request_id, audit_events.c.time).where(
    audit_events.c.time >= bindparam("since"), audit_events.c.outcome == "denied"
)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A migrated SQLite store's engine, with three events of different times and outcomes."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    store = await Store.open(url, credential_types=INSTALLED)
    await store.upgrade()
    await store.close()
    engine = create_engine(url)
    async with write_connection(engine) as connection:
        for hour, outcome in ((10, "denied"), (12, "denied"), (13, "success")):
            moment = datetime(2026, 1, 1, hour, 0, 0, 250000, tzinfo=UTC)
            row = audit_row(replace(EVENT, request_id=f"r{hour}", time=moment, outcome=outcome))
            await connection.execute(insert(audit_events), row)
    yield engine
    await engine.dispose()


async def test_a_read_on_sqlite3_answers_what_sqlalchemy_reads(engine: AsyncEngine) -> None:
    since = {"since": datetime(2026, 1, 1, 11, 0, tzinfo=UTC)}
    async with read_connection(engine) as connection:
        expected = [tuple(row) for row in await connection.execute(SINCE, since)]
    statements: list[str] = []
    event.listen(engine.sync_engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    reader = SqliteReader(engine)
    try:
        got = await reader.rows(SINCE, since)
    finally:
        await reader.close()
    assert statements == []  # not through SQLAlchemy
    assert [request_id for request_id, _ in got] == ["r12"]
    # The same row, as stored: SQLAlchemy's own processing of the time on the way in.
    async with read_connection(engine) as connection:
        stored = (
            await connection.execute(
                text("SELECT request_id, time FROM audit_events WHERE request_id = 'r12'")
            )
        ).one()
    assert got == [tuple(stored)]
    assert [request_id for request_id, _ in expected] == ["r12"]


async def test_a_read_on_sqlite3_raises_sqlalchemys_error(engine: AsyncEngine) -> None:
    reader = SqliteReader(engine)
    broken = select(audit_events.c.id).where(text("no_such_column = :value"))
    try:
        with pytest.raises(OperationalError) as raised:
            await reader.rows(broken, {"value": 1})
    finally:
        await reader.close()
    assert isinstance(raised.value.orig, sqlite3.OperationalError)


async def test_closing_the_store_gives_back_the_connection_of_its_lease_reads(
    tmp_path: Path,
) -> None:
    database = tmp_path / "store.db"
    store = await Store.open(f"sqlite+aiosqlite:///{database}", credential_types=INSTALLED)
    await store.upgrade()
    assert await store.leases.is_active("no-such-lease") is False
    assert wal_bytes(database) is not None
    await store.close()
    # SQLite removes the WAL file when its last connection closes.
    assert wal_bytes(database) is None
