"""Migrations, engines and transactions: the plumbing under the store."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import create_async_engine

from tokenbroker.backends.registry import INSTALLED
from tokenbroker.store import Store
from tokenbroker.store.engine import head_revision
from tokenbroker.store.policy import assigned_credentials_query
from tokenbroker.store.tables import metadata


async def test_upgrade_twice_leaves_the_database_at_head(store_url: str) -> None:
    store = await Store.open(store_url, credential_types=INSTALLED)
    try:
        assert await store.revision() is None
        await store.upgrade()
        await store.policy.create_organization("acme", "env0", "org-uuid-1")
        await store.upgrade()
        assert await store.revision() == head_revision() == "0003"
        assert [o.name for o in await store.policy.list_organizations()] == ["acme"]
    finally:
        await store.close()


def _schema_drift(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


async def test_migrations_build_exactly_the_tables_the_queries_expect(store: Store) -> None:
    async with store.reading() as repo:
        drift = await repo.connection.run_sync(_schema_drift)
    assert drift == []


async def _create_then_fail(store: Store) -> None:
    async with store.transaction() as repo:
        await repo.policy.create_organization("acme", "env0", "org-uuid-1")
        raise RuntimeError("boom")


async def test_a_failing_transaction_writes_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError):
        await _create_then_fail(store)
    assert await store.policy.list_organizations() == []


async def test_ping_answers_on_a_reachable_database(store: Store) -> None:
    await store.ping()


async def test_ping_fails_when_the_database_is_unreachable() -> None:
    # Port 1 on loopback: nothing listens there, so the connection is refused at once.
    store = await Store.open("postgresql+asyncpg://tb@127.0.0.1:1/none", credential_types=INSTALLED)
    try:
        with pytest.raises(ConnectionRefusedError):
            await store.ping()
    finally:
        await store.close()


async def test_sqlite_store_creates_its_directory_and_runs_in_wal_with_foreign_keys(
    tmp_path: Path,
) -> None:
    path = tmp_path / "nested" / "deeper" / "tb.db"
    store = await Store.open(f"sqlite+aiosqlite:///{path}", credential_types=INSTALLED)
    try:
        await store.upgrade()
        assert path.parent.is_dir()
        async with store.reading() as repo:
            journal = (await repo.connection.execute(text("PRAGMA journal_mode"))).scalar()
            keys = (await repo.connection.execute(text("PRAGMA foreign_keys"))).scalar()
        assert (journal, keys) == ("wal", 1)
    finally:
        await store.close()


@pytest.mark.parametrize(
    "url", ["mysql+aiomysql://h/db", "sqlite+pysqlite:///x.db", "postgresql+psycopg2://h/db"]
)
async def test_only_the_async_drivers_are_accepted(url: str) -> None:
    with pytest.raises(ValueError, match=r"store\.url"):
        await Store.open(url, credential_types=INSTALLED)


async def test_the_exchange_lookup_uses_indexes_not_scans(tmp_path: Path) -> None:
    store = await Store.open(
        f"sqlite+aiosqlite:///{tmp_path / 'tb.db'}", credential_types=INSTALLED
    )
    await store.upgrade()
    await store.close()
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'tb.db'}")
    try:
        query = assigned_credentials_query(1, "project-1").compile(
            engine.sync_engine, compile_kwargs={"literal_binds": True}
        )
        async with engine.connect() as connection:
            plan = [
                str(row[-1])
                for row in await connection.execute(text(f"EXPLAIN QUERY PLAN {query}"))
            ]
    finally:
        await engine.dispose()
    assert any("assignments USING" in step and "INDEX" in step for step in plan), plan
    assert not any(step.startswith("SCAN") and "TEMP" not in step for step in plan), plan
