"""The lease aggregate: one row per credential the broker issues, from its claim to its end.

A lease is claimed ``pending`` before the backend is called, under a unique ``reuse_slot``
(the request's token fingerprint, credential and credential version): of the brokers of a
fleet that get the same request at once, one inserts the row and calls the backend, the
others find the row and wait for it. It becomes ``active`` in the same transaction as the
audit event of its issue, and ends ``revoked`` or ``expired``; an issue that failed ends
``failed``. The slot is let go when the reuse window closes, so the next identical request
is a new issue. Sealed material (what revokes or re-delivers the credential) is never
plaintext here: callers seal it, bound to the lease id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import (
    ColumnElement,
    Row,
    and_,
    bindparam,
    case,
    delete,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbroker.batching import Batched
from tokenbroker.errors import UnprocessableEntity
from tokenbroker.store.engine import read_connection, write_connection
from tokenbroker.store.group_commit import GroupCommit, Statement
from tokenbroker.store.held import HeldConnection
from tokenbroker.store.sqlite_direct import SqliteReader
from tokenbroker.store.tables import leases, token_uses

LeaseState = Literal["pending", "active", "revoked", "expired", "failed"]
LEASE_STATES: tuple[LeaseState, ...] = ("pending", "active", "revoked", "expired", "failed")
MAX_LEASE_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease row. ``sealed`` is ciphertext (issuer/sealing.py), never a credential."""

    id: str
    organization: str
    project: str | None
    credential: str
    credential_id: int
    credential_version: str
    credential_type: str
    issuer: str
    subject: str
    job: str
    state: LeaseState
    issued_at: datetime
    request_id: str
    token_fingerprint: str
    expires_at: datetime | None = None
    reuse_until: datetime | None = None
    reuse_slot: str | None = None
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    revoke_reason: str | None = None
    sealed: str | None = None
    sealed_until: datetime | None = None

    def as_public(self) -> dict[str, object]:
        """The lease as the admin API shows it: everything but the slot and the sealed data."""
        return {
            "id": self.id,
            "organization": self.organization,
            "project": self.project,
            "credential": self.credential,
            "credential_version": self.credential_version,
            "type": self.credential_type,
            "issuer": self.issuer,
            "subject": self.subject,
            "job": self.job,
            "state": self.state,
            "issued_at": _iso(self.issued_at),
            "expires_at": _iso(self.expires_at),
            "revoked_at": _iso(self.revoked_at),
            "revoked_by": self.revoked_by,
            "revoke_reason": self.revoke_reason,
            "request_id": self.request_id,
            "token_fingerprint": self.token_fingerprint,
        }


@dataclass(frozen=True, slots=True)
class Claimed:
    """The slot was free: this caller issues, under the pending lease ``lease``."""

    lease: Lease


@dataclass(frozen=True, slots=True)
class Held:
    """Another request holds the slot: its lease, pending or active."""

    lease: Lease


class _SqliteStates:
    """A retry's lease-state read on SQLite: at once, on the sqlite3 connection."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._reader = SqliteReader(engine)

    async def is_active(self, lease_id: str) -> bool:
        return bool(await self._reader.rows(_IS_ACTIVE, {"lease_id": lease_id}))

    async def close(self) -> None:
        await self._reader.close()


class _BatchedStates:
    """A retry's lease-state read on PostgreSQL: the questions asked at once share one read, on
    a connection held while they keep coming."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._batched: Batched[str, bool] = Batched(self._active_among)
        self._held = HeldConnection(engine, write=False, busy=lambda: self._batched.running)

    async def is_active(self, lease_id: str) -> bool:
        return await self._batched(lease_id)

    async def close(self) -> None:
        await self._held.release()

    async def _active_among(self, lease_ids: Sequence[str]) -> list[bool]:
        wanted = {"lease_ids": sorted(set(lease_ids))}
        try:
            active = await self._read(wanted)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            # The held connection had died (a restart, a failover): a read is safe to run
            # again, on a fresh connection the pool checks on checkout.
            active = await self._read(wanted)
        return [lease_id in active for lease_id in lease_ids]

    async def _read(self, wanted: Mapping[str, object]) -> set[str]:
        held = await self._held.get()
        try:
            rows = await held.connection.execute(_ACTIVE_AMONG, wanted)
        except BaseException as exc:
            await self._held.forget_if_broken(exc)
            raise
        self._held.used()
        return {row[0] for row in rows}


class Leases:
    """Leases in the store; every method is its own transaction, but a claim's INSERT and an
    activation go through the store's group commit (an activation with the audit event of its
    issue, ``AuditLog.record``)."""

    def __init__(self, engine: AsyncEngine, commits: GroupCommit) -> None:
        self._engine = engine
        self._commits = commits
        self._states: _SqliteStates | _BatchedStates = (
            _SqliteStates(engine) if engine.dialect.name == "sqlite" else _BatchedStates(engine)
        )

    async def close(self) -> None:
        """Give the connection of the hot reads back (before the engine's dispose)."""
        await self._states.close()

    async def claim(self, pending: Lease, now: datetime, *, stale_after: float) -> Claimed | Held:
        """Insert ``pending`` under its slot, or answer the lease that holds the slot.

        A slot whose window closed, whose lease ended, or whose pending lease is older than
        ``stale_after`` seconds (its broker died mid-issue) is let go first.
        """
        slot = pending.reuse_slot
        assert slot is not None
        try:
            # A free slot (most are): the INSERT alone, in the next group commit.
            await self._commits.write([Statement(_INSERT_LEASE, _values(pending))])
            return Claimed(pending)
        except IntegrityError:
            pass
        stale = now - timedelta(seconds=stale_after)
        abandoned = and_(leases.c.state == "pending", leases.c.issued_at < stale)
        let_go = or_(
            abandoned,
            leases.c.state.in_(("revoked", "expired", "failed")),
            and_(leases.c.state == "active", leases.c.reuse_until <= now),
        )
        try:
            # One transaction: a live holder makes the insert fail, and then the release
            # (which touched nothing of a live holder) is rolled back with it.
            async with write_connection(self._engine) as conn:
                await conn.execute(
                    update(leases)
                    .where(leases.c.reuse_slot == slot, let_go)
                    .values(
                        reuse_slot=None,
                        state=case((abandoned, "failed"), else_=leases.c.state),
                        sealed=case((abandoned, None), else_=leases.c.sealed),
                    )
                )
                await conn.execute(_INSERT_LEASE, _values(pending))
            return Claimed(pending)
        except IntegrityError:
            holder = await self.by_slot(slot)
            if holder is None:
                # The holder let go between the insert and this read: try once more.
                return await self.claim(pending, now, stale_after=stale_after)
            return Held(holder)

    def activation(
        self,
        lease_id: str,
        *,
        expires_at: datetime,
        reuse_until: datetime,
        sealed: str,
        sealed_until: datetime,
    ) -> Statement:
        """What marks the pending lease issued, to commit with the audit event of its issue."""
        return Statement(
            _ACTIVATE,
            {
                "lease_id": lease_id,
                "new_expires_at": expires_at,
                "new_reuse_until": reuse_until,
                "new_sealed": sealed,
                "new_sealed_until": sealed_until,
            },
        )

    async def fail(self, lease_id: str) -> None:
        """The issue did not happen (the backend refused, or it cannot be recorded)."""
        async with write_connection(self._engine) as conn:
            await conn.execute(
                update(leases)
                .where(leases.c.id == lease_id, leases.c.state == "pending")
                .values(state="failed", reuse_slot=None, sealed=None)
            )

    async def end(
        self,
        lease_id: str,
        *,
        state: Literal["revoked", "expired"],
        now: datetime,
        by: str | None = None,
        reason: str | None = None,
    ) -> bool:
        """End an active (or pending) lease and drop its sealed material; False if it had ended."""
        values: dict[str, object] = {"state": state, "reuse_slot": None, "sealed": None}
        if state == "revoked":
            values.update(revoked_at=now, revoked_by=by, revoke_reason=reason)
        async with write_connection(self._engine) as conn:
            result = await conn.execute(
                update(leases)
                .where(leases.c.id == lease_id, leases.c.state.in_(("active", "pending")))
                .values(**values)
            )
        return bool(result.rowcount)

    async def get(self, lease_id: str) -> Lease | None:
        """One lease by id."""
        return await self._one(leases.c.id == lease_id)

    async def is_active(self, lease_id: str) -> bool:
        """Whether a lease is active (issued, and neither revoked nor expired yet).

        Every retry asks (``_SqliteStates``, ``_BatchedStates``: how it is read).
        """
        return await self._states.is_active(lease_id)

    async def by_slot(self, slot: str) -> Lease | None:
        """The lease holding a reuse slot."""
        return await self._one(leases.c.reuse_slot == slot)

    async def of_job(self, organization: str, job: str) -> list[Lease]:
        """Every active lease of one job of an organization."""
        async with read_connection(self._engine) as conn:
            rows = await conn.execute(
                select(leases)
                .where(
                    leases.c.organization == organization,
                    leases.c.job == job,
                    leases.c.state == "active",
                )
                .order_by(leases.c.issued_at)
            )
            return [_lease(row) for row in rows]

    async def listing(
        self,
        *,
        filters: Mapping[str, str | None],
        organizations: Sequence[str] | None = None,
        limit: int = 100,
        before: str | None = None,
    ) -> list[Lease]:
        """Leases matching every filter (organization, project, credential, state, job), newest
        first; ``organizations`` bounds what a scoped admin sees; ``before`` pages."""
        if isinstance(limit, bool) or not 1 <= limit <= MAX_LEASE_PAGE:
            raise UnprocessableEntity(
                "invalid_lease_query",
                "lease query does not validate: limit",
                details={"fields": [{"field": "limit", "message": f"must be 1-{MAX_LEASE_PAGE}"}]},
            )
        state = filters.get("state")
        if state is not None and state not in LEASE_STATES:
            raise UnprocessableEntity(
                "invalid_lease_query",
                "lease query does not validate: state",
                details={
                    "fields": [
                        {"field": "state", "message": f"must be one of {', '.join(LEASE_STATES)}"}
                    ]
                },
            )
        conditions = [
            leases.c[name] == value for name, value in filters.items() if value is not None
        ]
        if organizations is not None:
            conditions.append(leases.c.organization.in_(list(organizations)))
        if before is not None:
            conditions.append(leases.c.id < before)
        async with read_connection(self._engine) as conn:
            rows = await conn.execute(
                select(leases)
                .where(and_(True, *conditions))
                .order_by(leases.c.id.desc())
                .limit(limit)
            )
            return [_lease(row) for row in rows]

    async def first_use(
        self, token_key: str, slot: str, until: datetime, *, record: bool = True
    ) -> str | None:
        """Record the first use of a replay-once token; the slot of its first use if it had one.

        None: this is its first use (recorded unless ``record`` is false, as for a dry run).
        """
        if record:
            try:
                async with write_connection(self._engine) as conn:
                    await conn.execute(
                        insert(token_uses).values(token_key=token_key, reuse_slot=slot, until=until)
                    )
                return None
            except IntegrityError:
                pass
        async with read_connection(self._engine) as conn:
            row = (
                await conn.execute(
                    select(token_uses.c.reuse_slot).where(token_uses.c.token_key == token_key)
                )
            ).first()
        return None if row is None else str(row[0])

    async def sweep(self, now: datetime) -> int:
        """Mark leases past their expiry expired and drop sealed material past its time."""
        async with write_connection(self._engine) as conn:
            expired = await conn.execute(
                update(leases)
                .where(leases.c.state == "active", leases.c.expires_at <= now)
                .values(state="expired", reuse_slot=None, sealed=None)
            )
            await conn.execute(
                update(leases)
                .where(leases.c.sealed.is_not(None), leases.c.sealed_until <= now)
                .values(sealed=None)
            )
            await conn.execute(delete(token_uses).where(token_uses.c.until <= now))
        return int(expired.rowcount)

    async def _one(self, condition: ColumnElement[bool]) -> Lease | None:
        async with read_connection(self._engine) as conn:
            row = (await conn.execute(select(leases).where(condition))).first()
        return None if row is None else _lease(row)


_INSERT_LEASE = insert(leases)
# Bound parameters may not be named after the columns they set.
_ACTIVATE = (
    update(leases)
    .where(leases.c.id == bindparam("lease_id"), leases.c.state == "pending")
    .values(
        state="active",
        expires_at=bindparam("new_expires_at"),
        reuse_until=bindparam("new_reuse_until"),
        sealed=bindparam("new_sealed"),
        sealed_until=bindparam("new_sealed_until"),
    )
)
_IS_ACTIVE = select(leases.c.id).where(
    leases.c.id == bindparam("lease_id"), leases.c.state == "active"
)
_ACTIVE_AMONG = select(leases.c.id).where(
    leases.c.id.in_(bindparam("lease_ids", expanding=True)), leases.c.state == "active"
)


def _values(lease: Lease) -> dict[str, object]:
    return {column.name: getattr(lease, column.name) for column in leases.columns}


def _lease(row: Row[tuple[object, ...]]) -> Lease:
    m = row._mapping
    return Lease(**{column.name: m[column.name] for column in leases.columns})


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")
