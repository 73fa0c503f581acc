"""The audit aggregate: events appended by group commit, and read back newest first.

Every exchange's event is committed before it answers, but events recorded while a write is in
flight share the next write: under concurrency one transaction of many rows replaces many
transactions of one, and a lone request waits for nothing extra (its event is written at once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, cast

from sqlalchemy import Executable, Row, String, and_, delete, false, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenbroker.policy.models import AuditEvent, Outcome
from tokenbroker.store import validation as check
from tokenbroker.store.engine import write_connection
from tokenbroker.store.tables import audit_events


@dataclass(frozen=True, slots=True)
class Alongside:
    """A statement that commits with an audit event, or not at all: a lease's activation."""

    statement: Executable
    parameters: Mapping[str, object]


_Pending = tuple[AuditEvent, Alongside | None, asyncio.Future[None]]
# Rows per transaction: a bound on how long one write holds the database's write lock.
MAX_BATCH = 50
_COLUMNS: Final = tuple(c.name for c in audit_events.columns if c.name != "id")
# Text comes from tokens: NUL replaced and cut to its column's length, so a long or odd claim
# is stored rather than refused.
_TEXT_LENGTHS: Final = {
    c.name: c.type.length for c in audit_events.columns if isinstance(c.type, String)
}


INSERT_EVENT = insert(audit_events)


class AuditLog:
    """Writes audit events in arrival order, batching those that arrive during a write.

    A batch is one transaction, so when the database refuses it nothing of it was written, and
    its events are retried one by one.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._pending: list[_Pending] = []
        self._writer: asyncio.Task[None] | None = None
        self.writes = 0
        """How many batches were written (one transaction each); diagnostics."""

    async def record(self, event: AuditEvent, alongside: Alongside | None = None) -> None:
        """Return once ``event`` (and ``alongside``, in its transaction) is committed; raise what
        its write raised."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((event, alongside, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain())
        # A caller cancelled here cancels only its wait: the event is still written.
        await future

    async def flush(self) -> None:
        """Wait until every event recorded so far is written."""
        while self._writer is not None:
            await asyncio.shield(self._writer)

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
        async with self._engine.connect() as conn:
            return [_audit_event(row) for row in await conn.execute(query)]

    async def check_writable(self) -> None:
        """Readiness: a write to the audit table would succeed (it writes nothing).

        Exchanges fail closed when their audit event cannot be written, so a store that reads
        but cannot take audit rows (read-only, missing table, no privilege) is not ready.
        """
        async with write_connection(self._engine) as conn:
            await conn.execute(delete(audit_events).where(false()))

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
                await self._write(batch)
        finally:
            self._writer = None

    async def _write(self, batch: Sequence[_Pending]) -> None:
        try:
            await self._insert(batch)
        except Exception as exc:
            if len(batch) > 1:
                # One event the database refuses must not fail the others' requests.
                for item in batch:
                    await self._write([item])
                return
            _settle(batch, exc)
            return
        _settle(batch, None)

    async def _insert(self, batch: Sequence[_Pending]) -> None:
        self.writes += 1
        statements: dict[Executable, list[Mapping[str, object]]] = {}
        for _, alongside, _ in batch:
            if alongside is not None:
                statements.setdefault(alongside.statement, []).append(alongside.parameters)
        # One transaction: the batch is written whole or not at all.
        async with write_connection(self._engine) as conn:
            for statement, parameters in statements.items():
                await conn.execute(statement, parameters)
            await conn.execute(INSERT_EVENT, [audit_row(event) for event, _, _ in batch])


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


def _settle(batch: Sequence[_Pending], error: Exception | None) -> None:
    for _, _, future in batch:
        if future.done():  # its caller was cancelled
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


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
