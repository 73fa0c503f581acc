"""Helpers shared by the store tests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from tokenbroker.policy.models import Credential, CredentialAssignment, Organization
from tokenbroker.store import Store
from tokenbroker.store.engine import create_engine

VAULT_SETTINGS: Mapping[str, object] = {"address": "https://vault.example.com", "role": "deploy"}
# A store test that runs on PostgreSQL only (tests/store/conftest.py's ``store_url``).
postgresql = pytest.mark.parametrize(
    "store_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


@dataclass(frozen=True)
class Snapshot:
    """Everything the store holds, for 'unchanged after a failure' checks."""

    organizations: list[Organization]
    credentials: list[Credential]
    assignments: list[CredentialAssignment]
    audit_ids: list[int | None]


async def snapshot(store: Store) -> Snapshot:
    """Read the whole store."""
    organizations = await store.policy.list_organizations()
    credentials: list[Credential] = []
    assignments: list[CredentialAssignment] = []
    for org in organizations:
        credentials += await store.policy.list_credentials(org.name)
        assignments += await store.policy.list_assignments(org.name)
    audit = await store.audit.events(limit=1000)
    return Snapshot(organizations, credentials, assignments, [e.id for e in audit])


def wal_bytes(database: Path) -> int | None:
    """The size of a SQLite ``database``'s WAL file; None when there is none (SQLite removes
    it when the last connection closes)."""
    wal = database.with_name(f"{database.name}-wal")
    return wal.stat().st_size if wal.exists() else None


async def _backend_scalar(store_url: str, sql: str, pid: int) -> object:
    """``sql`` about PostgreSQL server backend ``pid``, on a connection of another engine (so
    the engine under test sees no checkout of it); its one value."""
    other = create_engine(store_url)
    try:
        async with other.connect() as connection:
            return (await connection.execute(text(sql), {"pid": pid})).scalar_one()
    finally:
        await other.dispose()


async def terminate_backend(store_url: str, pid: int) -> None:
    """End PostgreSQL server backend ``pid`` from a connection of another engine, as an admin
    (or a failover) would."""
    assert await _backend_scalar(store_url, "SELECT pg_terminate_backend(:pid)", pid) is True


async def backend_ended(store_url: str, pid: int) -> bool:
    """Whether PostgreSQL server backend ``pid`` is gone from ``pg_stat_activity``."""
    sql = "SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"
    return await _backend_scalar(store_url, sql, pid) == 0


@dataclass
class PoolCheckouts:
    """The server backend of every connection a pool handed out, and the returns."""

    backends: list[int] = field(default_factory=list)
    checkins: int = 0


def watch_checkouts(engine: AsyncEngine) -> PoolCheckouts:
    """Count checkouts and checkins on ``engine``'s pool from now on (a PostgreSQL one:
    asyncpg's server pids)."""
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
