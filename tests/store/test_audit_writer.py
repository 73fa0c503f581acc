"""Group commit of audit events: concurrent events share a write; each is committed on return."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbroker.policy.models import AuditEvent
from tokenbroker.store import Store
from tokenbroker.store.audit_writer import AuditWriter
from tokenbroker.store.engine import create_engine

EVENT = AuditEvent(
    time=datetime(2026, 1, 1, 12, 0, tzinfo=UTC),
    request_id="req-0",
    outcome="success",
    reason="issued",
    latency_ms=1.0,
)


@pytest.fixture
async def engine(store: Store, store_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine of its own on the migrated store's database."""
    engine = create_engine(store_url)
    yield engine
    await engine.dispose()


async def test_events_recorded_together_share_one_insert_and_are_all_committed(
    engine: AsyncEngine, store: Store
) -> None:
    writer = AuditWriter(engine)
    events = [replace(EVENT, request_id=f"req-{i}") for i in range(20)]
    await asyncio.gather(*(writer.record(e) for e in events))
    assert 0 < writer.writes < 20
    seen = await store.list_audit(limit=100)
    assert sorted(e.request_id for e in seen) == sorted(e.request_id for e in events)


async def test_a_lone_event_is_committed_before_record_returns(
    engine: AsyncEngine, store: Store
) -> None:
    await AuditWriter(engine).record(EVENT)
    (seen,) = await store.list_audit()
    assert seen.request_id == "req-0"


async def test_an_event_the_database_refuses_fails_only_its_own_caller(
    engine: AsyncEngine, store: Store
) -> None:
    writer = AuditWriter(engine)
    refused = replace(EVENT, request_id="refused", time=None)  # type: ignore[arg-type]
    results = await asyncio.gather(
        writer.record(replace(EVENT, request_id="first")),
        writer.record(refused),
        writer.record(replace(EVENT, request_id="last")),
        return_exceptions=True,
    )
    assert results[0] is None
    assert isinstance(results[1], Exception)
    assert results[2] is None
    assert sorted(e.request_id for e in await store.list_audit()) == ["first", "last"]


async def test_a_cancelled_caller_still_has_its_event_written(
    engine: AsyncEngine, store: Store
) -> None:
    writer = AuditWriter(engine)
    first = asyncio.create_task(writer.record(replace(EVENT, request_id="kept")))
    await asyncio.sleep(0)
    first.cancel()
    await writer.flush()
    assert [e.request_id for e in await store.list_audit()] == ["kept"]


async def test_events_written_by_the_writer_read_back_exactly(
    engine: AsyncEngine, store: Store
) -> None:
    # The writer bypasses SQLAlchemy's statement: its values must still be stored as
    # SQLAlchemy stores them (timestamps, text fitting, NUL replacement).
    writer = AuditWriter(engine)
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


async def test_no_transaction_is_left_open_on_the_pooled_connection(
    engine: AsyncEngine, store: Store
) -> None:
    # The event is committed when record returns: another connection sees it at once, and a
    # write transaction on the same pool is not blocked by a leftover open one.
    writer = AuditWriter(engine)
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
