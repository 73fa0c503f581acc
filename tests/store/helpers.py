"""Helpers shared by the store tests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text

from tokenbroker.policy.models import Credential, CredentialAssignment, Organization
from tokenbroker.store import Store
from tokenbroker.store.engine import create_engine

VAULT_SETTINGS: Mapping[str, object] = {"address": "https://vault.example.com", "role": "deploy"}


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


async def terminate_backend(store_url: str, pid: int) -> None:
    """End PostgreSQL server backend ``pid`` from a connection of another engine, as an admin
    (or a failover) would."""
    other = create_engine(store_url)
    try:
        async with other.connect() as connection:
            result = await connection.execute(
                text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}
            )
            assert result.scalar_one() is True
    finally:
        await other.dispose()
