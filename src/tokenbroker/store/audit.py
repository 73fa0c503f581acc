"""The audit aggregate: events appended by group commit (group_commit.py), and read back
newest first. Every exchange's event is committed before it answers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Final, cast

from sqlalchemy import Row, String, and_, delete, false, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbroker.policy.models import AuditEvent, Outcome
from tokenbroker.store import validation as check
from tokenbroker.store.engine import read_connection, write_connection
from tokenbroker.store.group_commit import GroupCommit, Statement
from tokenbroker.store.tables import audit_events

# Text comes from tokens: NUL replaced and cut to its column's length, so a long or odd claim
# is stored rather than refused.
_COLUMNS: Final = tuple(c.name for c in audit_events.columns if c.name != "id")
_TEXT_LENGTHS: Final = {
    c.name: c.type.length for c in audit_events.columns if isinstance(c.type, String)
}
_INSERT_EVENT = insert(audit_events)


class AuditLog:
    """Audit events, each committed through the store's group commit before its caller goes on."""

    def __init__(self, engine: AsyncEngine, commits: GroupCommit) -> None:
        self._engine = engine
        self._commits = commits

    @property
    def writes(self) -> int:
        """How many transactions the store's group commit wrote; diagnostics."""
        return self._commits.transactions

    async def record(self, event: AuditEvent, *alongside: Statement) -> None:
        """Return once ``event`` (and what goes ``alongside`` it, in its transaction) is
        committed; raise what its write raised."""
        await self._commits.write([*alongside, Statement(_INSERT_EVENT, audit_row(event))])

    async def flush(self) -> None:
        """Wait until every event recorded so far is written."""
        await self._commits.flush()

    async def events(
        self,
        *,
        organization: str | None = None,
        organizations: Sequence[str] | None = None,
        project: str | None = None,
        credential: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[AuditEvent]:
        """Events matching every given filter, newest first; ``before_id`` is the last id of the
        previous page. ``organizations`` keeps events of those organizations only (an
        org-scoped admin's view)."""
        check.check_audit_query(
            outcome=outcome,
            since=since,
            until=until,
            limit=limit,
            before_id=before_id,
            filters={"organization": organization, "project": project, "credential": credential},
        )
        conditions = []
        for column, value in (
            (audit_events.c.organization, organization),
            (audit_events.c.project, project),
            (audit_events.c.credential, credential),
            (audit_events.c.outcome, outcome),
        ):
            if value is not None:
                conditions.append(column == value)
        if organizations is not None:
            conditions.append(audit_events.c.organization.in_(list(organizations)))
        if since is not None:
            conditions.append(audit_events.c.time >= since)
        if until is not None:
            conditions.append(audit_events.c.time < until)
        if before_id is not None:
            conditions.append(audit_events.c.id < before_id)
        query = (
            select(audit_events)
            .where(and_(True, *conditions))
            .order_by(audit_events.c.id.desc())
            .limit(limit)
        )
        async with read_connection(self._engine) as conn:
            return [_audit_event(row) for row in await conn.execute(query)]

    async def check_writable(self) -> None:
        """Readiness: a write to the audit table would succeed (it writes nothing).

        Exchanges fail closed when their audit event cannot be written, so a store that reads
        but cannot take audit rows (read-only, missing table, no privilege) is not ready.
        """
        async with write_connection(self._engine) as conn:
            await conn.execute(delete(audit_events).where(false()))


def audit_row(event: AuditEvent) -> dict[str, object]:
    """The row of an event: text fitted to its column (NUL replaced, surrogates escaped)."""
    row: dict[str, object] = {}
    for name in _COLUMNS:
        value = getattr(event, name)
        if name in _TEXT_LENGTHS and value is not None:
            value = value.replace("\x00", "\ufffd")
            if not value.isascii():
                # A lone surrogate (JSON's "\ud800") has no UTF-8 form: neither driver can send
                # it, and the whole batch would fail with it. Kept visible, backslash-escaped.
                value = value.encode("utf-8", "backslashreplace").decode("utf-8")
            length = _TEXT_LENGTHS[name]
            if length is not None:
                value = value[:length]
        row[name] = value
    return row


def _audit_event(row: Row[tuple[object, ...]]) -> AuditEvent:
    m = row._mapping
    return AuditEvent(
        id=cast(int, m["id"]),
        time=cast(datetime, m["time"]),
        request_id=cast(str, m["request_id"]),
        outcome=cast(Outcome, m["outcome"]),
        reason=cast(str, m["reason"]),
        latency_ms=float(cast(float, m["latency_ms"])),
        issuer=cast(str | None, m["issuer"]),
        organization=cast(str | None, m["organization"]),
        project=cast(str | None, m["project"]),
        subject=cast(str | None, m["subject"]),
        credential=cast(str | None, m["credential"]),
        credential_type=cast(str | None, m["credential_type"]),
        token_fingerprint=cast(str | None, m["token_fingerprint"]),
        client_address=cast(str | None, m["client_address"]),
        kind=cast(str, m["kind"]),
        lease_id=cast(str | None, m["lease_id"]),
        actor=cast(str | None, m["actor"]),
        detail=cast("Mapping[str, object] | None", m["detail"]),
    )
