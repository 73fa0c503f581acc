"""``Store``: the broker's database behind one object, each call its own transaction."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime

from sqlalchemy import delete, false, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokenbroker.policy.models import AuditEvent, Credential, CredentialAssignment, Organization
from tokenbroker.store import engine as engines
from tokenbroker.store.audit_writer import AuditWriter
from tokenbroker.store.policy_cache import DEFAULT_POLL_SECONDS, PolicyCache
from tokenbroker.store.repository import UNSET, Repository, Unset
from tokenbroker.store.tables import audit_events

log = logging.getLogger(__name__)

# Held for the length of an upgrade on PostgreSQL, so instances starting together migrate once.
_MIGRATION_LOCK_ID = 0x746F6B656E62726B  # "tokenbrk"


class Store:
    """Organizations, credentials, assignments, audit events; SQLite or PostgreSQL.

    Every mutation runs in one transaction: when it raises, nothing of it was written. With a
    ``policy_cache`` the exchange's lookup is answered from memory (see policy_cache.py for
    why that stays correct); the server runs :meth:`watch_policy_revision` beside it.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        policy_cache: PolicyCache | None = None,
        allow_private_backends: bool = False,
    ) -> None:
        self._engine = engine
        self._allow_private_backends = allow_private_backends
        self._audit = AuditWriter(engine)
        self._policy = policy_cache
        self._poll_failing = False

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        policy_cache: PolicyCache | None = None,
        allow_private_backends: bool = False,
    ) -> Store:
        """Connect lazily to the database at ``url`` (see ``engine.create_engine``).

        ``allow_private_backends`` is ``[security]``'s, applied to the credentials it is given.
        """
        return cls(
            engines.create_engine(url),
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
        await self._audit.close()
        await self._engine.dispose()

    async def upgrade(self) -> None:
        """Apply every migration not applied yet (Alembic, in one transaction)."""
        # Not through transaction(): before the migrations there is no revision row to bump.
        try:
            async with self._write_connection() as connection:
                if self.dialect == "postgresql":
                    await connection.execute(
                        text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID}
                    )
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

    async def check_audit_writable(self) -> None:
        """Readiness: a write to the audit table would succeed (it writes nothing).

        Exchanges fail closed when their audit event cannot be written, so a store that reads
        but cannot take audit rows (read-only, missing table, no privilege) is not ready.
        """
        async with self._write_connection() as connection:
            await connection.execute(delete(audit_events).where(false()))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Repository]:
        """A Repository in one write transaction: committed on exit, rolled back on error.

        It increments the policy revision (other instances' caches notice) and, however it
        ends, empties this store's policy cache before the caller goes on.
        """
        try:
            async with self._write_connection() as connection:
                repo = Repository(connection, allow_private_backends=self._allow_private_backends)
                yield repo
                await repo.bump_policy_revision()
        finally:
            # Also after a failure: a commit that raised may still have been applied.
            self._invalidate_policy()

    @asynccontextmanager
    async def _write_connection(self) -> AsyncIterator[AsyncConnection]:
        async with self._engine.connect() as connection:
            await connection.execution_options(**{engines.WRITE_OPTION: True})
            async with connection.begin():
                yield connection

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[Repository]:
        """A Repository for reads (each statement sees what was committed before it)."""
        async with self._engine.connect() as connection:
            yield Repository(connection, allow_private_backends=self._allow_private_backends)

    # -- organizations ---------------------------------------------------------------------

    async def create_organization(
        self, name: str, issuer: str, platform_org_id: str
    ) -> Organization:
        """Add an organization; Conflict if its name or (issuer, platform org id) is taken."""
        async with self.transaction() as repo:
            return await repo.create_organization(name, issuer, platform_org_id)

    async def get_organization(self, name: str) -> Organization:
        """The named organization, or NotFound."""
        async with self.reading() as repo:
            return await repo.get_organization(name)

    async def list_organizations(self) -> list[Organization]:
        """Every organization, by name."""
        async with self.reading() as repo:
            return await repo.list_organizations()

    async def update_organization(
        self, name: str, *, issuer: str | None = None, platform_org_id: str | None = None
    ) -> Organization:
        """Change an organization's issuer and/or platform org id."""
        async with self.transaction() as repo:
            return await repo.update_organization(
                name, issuer=issuer, platform_org_id=platform_org_id
            )

    async def delete_organization(self, name: str) -> None:
        """Remove an organization with its credentials and assignments."""
        async with self.transaction() as repo:
            await repo.delete_organization(name)

    async def find_organization(self, issuer: str, platform_org_id: str) -> Organization | None:
        """The organization of a platform token (hot path, unique index)."""
        async with self.reading() as repo:
            return await repo.find_organization(issuer, platform_org_id)

    # -- credentials -----------------------------------------------------------------------

    async def create_credential(
        self,
        organization: str,
        name: str,
        type: str,
        *,
        token: str = "passthrough",  # noqa: S107 -- a token mode, not a secret
        audience: str | None = None,
        settings: Mapping[str, object],
        bound_claims: Mapping[str, str | list[str]] | None = None,
    ) -> Credential:
        """Add a typed credential; invalid settings are a 422 naming ``settings.<field>``."""
        async with self.transaction() as repo:
            return await repo.create_credential(
                organization,
                name,
                type,
                token=token,
                audience=audience,
                settings=settings,
                bound_claims=bound_claims,
            )

    async def get_credential(self, organization: str, name: str) -> Credential:
        """The named credential of an organization, or NotFound."""
        async with self.reading() as repo:
            return await repo.get_credential(organization, name)

    async def list_credentials(self, organization: str) -> list[Credential]:
        """Every credential of an organization, by name."""
        async with self.reading() as repo:
            return await repo.list_credentials(organization)

    async def update_credential(
        self,
        organization: str,
        name: str,
        *,
        type: str | Unset = UNSET,
        token: str | Unset = UNSET,
        audience: str | Unset | None = UNSET,
        settings: Mapping[str, object] | Unset = UNSET,
        bound_claims: Mapping[str, str | list[str]] | Unset = UNSET,
    ) -> Credential:
        """Change only the given fields (``settings`` replaced whole); revalidated as a whole."""
        async with self.transaction() as repo:
            return await repo.update_credential(
                organization,
                name,
                type=type,
                token=token,
                audience=audience,
                settings=settings,
                bound_claims=bound_claims,
            )

    async def delete_credential(self, organization: str, name: str) -> None:
        """Remove a credential and its assignments."""
        async with self.transaction() as repo:
            await repo.delete_credential(organization, name)

    # -- assignments -----------------------------------------------------------------------

    async def assign(
        self, organization: str, project: str, credential: str
    ) -> CredentialAssignment:
        """Make a credential available to a project (idempotent)."""
        async with self.transaction() as repo:
            return await repo.assign(organization, project, credential)

    async def assign_many(self, organization: str, pairs: Iterable[tuple[str, str]]) -> int:
        """Assign many ``(project, credential)`` pairs at once; how many were new."""
        async with self.transaction() as repo:
            return await repo.assign_many(organization, pairs)

    async def unassign(self, organization: str, project: str, credential: str) -> None:
        """Take a credential away from a project; NotFound if it was not assigned."""
        async with self.transaction() as repo:
            await repo.unassign(organization, project, credential)

    async def list_assignments(
        self, organization: str, project: str | None = None
    ) -> list[CredentialAssignment]:
        """Assignments of an organization, optionally of one project."""
        async with self.reading() as repo:
            return await repo.list_assignments(organization, project)

    async def assigned_credentials(self, organization_id: int, project: str) -> list[Credential]:
        """Credentials assigned to a project, by name (hot path: one indexed query)."""
        async with self.reading() as repo:
            return await repo.assigned_credentials(organization_id, project)

    async def find_organization_assignments(
        self, issuer: str, platform_org_id: str, project: str | None
    ) -> tuple[Organization | None, list[Credential]]:
        """A token's organization and its project's credentials (the exchange's one query).

        From the policy cache when it has a verified answer; else one query, remembered.
        """
        cache = self._policy
        if cache is None:
            async with self.reading() as repo:
                return await repo.find_organization_assignments(issuer, platform_org_id, project)
        key = (issuer, platform_org_id, project)
        hit = cache.get(key)
        if hit is not None:
            return hit[0], list(hit[1])
        generation = cache.generation
        async with self.reading() as repo:
            organization, assigned = await repo.find_organization_assignments(
                issuer, platform_org_id, project
            )
        cache.put(key, (organization, tuple(assigned)), generation)
        return organization, assigned

    # -- policy revision -------------------------------------------------------------------

    async def policy_revision(self) -> int | None:
        """The shared policy revision (None if its row is missing)."""
        async with self.reading() as repo:
            return await repo.policy_revision()

    async def check_policy_revision(self) -> None:
        """Poll the revision once: a change empties the policy cache; success keeps it fresh."""
        cache = self._policy
        if cache is None:
            return
        # Taken before the query: the answer reflects every commit made before this moment.
        started = cache.now()
        revision = await self.policy_revision()
        if revision is not None:
            cache.observe_revision(revision, started)

    async def watch_policy_revision(self, interval_seconds: float = DEFAULT_POLL_SECONDS) -> None:
        """Poll the revision forever (a task beside the server); failures are logged, retried.

        While polls fail the cache goes stale and answers nothing: lookups go to the database.
        """
        while True:
            try:
                await self.check_policy_revision()
            except Exception as exc:
                if not self._poll_failing:
                    # The exception's type only: its text may hold the database URL.
                    log.warning(
                        "policy revision poll failed; policy lookups go to the database",
                        extra={"error": type(exc).__name__},
                    )
                self._poll_failing = True
            else:
                if self._poll_failing:
                    log.info("policy revision poll recovered")
                self._poll_failing = False
            await asyncio.sleep(interval_seconds)

    def _invalidate_policy(self) -> None:
        if self._policy is not None:
            self._policy.invalidate()

    # -- audit -----------------------------------------------------------------------------

    async def record_audit(self, event: AuditEvent) -> None:
        """Append an audit event; committed before this returns.

        Events recorded at the same moment share one INSERT and commit (``AuditWriter``).
        """
        await self._audit.record(event)

    async def list_audit(
        self,
        *,
        organization: str | None = None,
        project: str | None = None,
        credential: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[AuditEvent]:
        """Audit events newest first; ``before_id`` is the last id of the previous page."""
        async with self.reading() as repo:
            return await repo.list_audit(
                organization=organization,
                project=project,
                credential=credential,
                outcome=outcome,
                since=since,
                until=until,
                limit=limit,
                before_id=before_id,
            )
