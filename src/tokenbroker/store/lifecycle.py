"""``Store``: the broker's database behind one object that owns the engine and its lifecycle.

Its aggregates each live in their own module with their own SQL: ``store.policy``
(policy.py), ``store.audit`` (audit.py), ``store.leases`` (leases.py) and ``store.keys``
(signing_keys.py). A call on them
is its own transaction; :meth:`Store.transaction` gives the same aggregates on one connection.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokenbroker.store import engine as engines
from tokenbroker.store.audit import AuditLog
from tokenbroker.store.engine import Connections
from tokenbroker.store.group_commit import GroupCommit
from tokenbroker.store.leases import Leases
from tokenbroker.store.policy import Policy, bump_revision
from tokenbroker.store.policy_cache import PolicyCache
from tokenbroker.store.signing_keys import SigningKeys
from tokenbroker.store.tables import metadata
from tokenbroker.store.validation import CredentialTypes

# Held for the length of an upgrade on PostgreSQL, so instances starting together migrate once.
_MIGRATION_LOCK_ID = 0x746F6B656E62726B  # "tokenbrk"


class UnitOfWork:
    """The store's policy and signing keys on one connection, in its owner's transaction."""

    def __init__(
        self,
        connection: AsyncConnection,
        types: CredentialTypes,
        *,
        allow_private_backends: bool,
    ) -> None:
        self.connection = connection
        """The connection every statement runs on (for the store's own plumbing and tests)."""
        joined = Connections.joined(connection)
        self.policy = Policy(joined, types, allow_private_backends=allow_private_backends)
        self.keys = SigningKeys(joined)

    async def count(self, table: str) -> int:
        """Rows in one of the store's tables (for tests, benchmarks and diagnostics)."""
        query = select(func.count()).select_from(metadata.tables[table])
        return int((await self.connection.execute(query)).scalar_one())


class Store:
    """Organizations, credentials, assignments, audit events and signing keys; SQLite or
    PostgreSQL.

    Every mutation runs in one transaction: when it raises, nothing of it was written. With a
    ``policy_cache`` the exchange's lookup is answered from memory (see policy_cache.py for
    why that stays correct); the server runs ``store.policy.watch_revision()`` beside it.
    ``credential_types`` are the types its credentials may have (the store imports no
    backends: its builder passes ``backends.registry.INSTALLED``).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        credential_types: CredentialTypes,
        policy_cache: PolicyCache | None = None,
        allow_private_backends: bool = False,
    ) -> None:
        self._engine = engine
        self._policy_cache = policy_cache
        self._allow_private_backends = allow_private_backends
        self.credential_types = credential_types
        """What the store knows of credential types (settings schemas, traits)."""
        per_call = Connections(
            writing=self._policy_write, reading=functools.partial(engines.read_connection, engine)
        )
        self.policy = Policy(
            per_call,
            credential_types,
            cache=policy_cache,
            allow_private_backends=allow_private_backends,
        )
        """Organizations, credentials, assignments and the exchange's lookup."""
        self.keys = SigningKeys(per_call)
        """The issuer's signing keys, sealed (keystore.py unseals them)."""
        self._commits = commits = GroupCommit(engine)
        self.audit = AuditLog(engine, commits)
        """The audit trail: appended by group commit, read newest first."""
        self.leases = Leases(engine, commits)
        """Every credential issued, from its claim to its end."""

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        credential_types: CredentialTypes,
        policy_cache: PolicyCache | None = None,
        allow_private_backends: bool = False,
    ) -> Store:
        """Connect lazily to the database at ``url`` (see ``engine.create_engine``).

        ``allow_private_backends`` is ``[security]``'s, applied to the credentials it is given.
        """
        return cls(
            engines.create_engine(url),
            credential_types=credential_types,
            policy_cache=policy_cache,
            allow_private_backends=allow_private_backends,
        )

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._engine.dialect.name

    @property
    def display_url(self) -> str:
        """The database URL with any password masked, for messages."""
        return self._engine.url.render_as_string(hide_password=True)

    async def close(self) -> None:
        """Write the audit events still pending, then close every connection."""
        await self._commits.close()
        await self.leases.close()
        await self._engine.dispose()

    async def upgrade(self) -> None:
        """Apply every migration not applied yet (Alembic, in one transaction)."""
        # Not through transaction(): before the migrations there is no revision row to bump.
        try:
            async with engines.write_connection(self._engine) as connection:
                if self.dialect == "postgresql":
                    await connection.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK_ID)))
                await connection.run_sync(engines.run_upgrade)
        finally:
            self._invalidate_policy()

    async def revision(self) -> str | None:
        """The migration the database is at (None before the first)."""
        async with self._engine.connect() as connection:
            return await connection.run_sync(engines.current_revision)

    async def ping(self) -> None:
        """Readiness: the database answers a trivial query."""
        async with self._engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[UnitOfWork]:
        """The aggregates in one write transaction: committed on exit, rolled back on error.

        It increments the policy revision (other instances' caches notice) and, however it
        ends, empties this store's policy cache before the caller goes on.
        """
        async with self._policy_write() as connection:
            yield self._unit(connection)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[UnitOfWork]:
        """The aggregates for reads on one connection (each statement sees what was committed
        before it)."""
        async with self._engine.connect() as connection:
            yield self._unit(connection)

    def _unit(self, connection: AsyncConnection) -> UnitOfWork:
        return UnitOfWork(
            connection, self.credential_types, allow_private_backends=self._allow_private_backends
        )

    @asynccontextmanager
    async def _policy_write(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with engines.write_connection(self._engine) as connection:
                yield connection
                await bump_revision(connection)
        finally:
            # Also after a failure: a commit that raised may still have been applied.
            self._invalidate_policy()

    def _invalidate_policy(self) -> None:
        if self._policy_cache is not None:
            self._policy_cache.invalidate()
