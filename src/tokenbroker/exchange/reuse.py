"""The reuse window, held by leases: a retry of the same request gets the same credential.

A request is "the same" when the platform token (its SHA-256), the credential and the
credential's version are. Its lease claims the request's slot before the backend is called,
so of the brokers sharing a store that get it at once, one calls the backend and the others
wait for its lease, then hand out the credential sealed in it. Inside one process, identical
requests share the caller's call without asking the store. A retry is one only inside
``reuse_seconds`` of the issue, never close to the credential's expiry nor past the platform
token's, and never once the lease was revoked.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from tokenbroker.backends.base import IssuedCredential
from tokenbroker.clock import Clock
from tokenbroker.errors import TemporarilyUnavailable
from tokenbroker.issuer.sealing import SealError, seal, unseal
from tokenbroker.policy.models import AuditEvent, Credential
from tokenbroker.store.audit import AuditLog
from tokenbroker.store.leases import Claimed, Held, Lease, Leases

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# How long a runner is asked to wait when the store cannot take a lease.
_STORE_RETRY_AFTER_SECONDS = 1
# Waiting on another broker's issue: a first look soon, then less often, within the deadline.
_FIRST_POLL_SECONDS = 0.02
_MAX_POLL_SECONDS = 0.25
# Issues this process remembers for their retries (its own, and others' it served). Bounded,
# so a flood of fresh tokens costs no more memory than this; a retry of an issue forgotten here
# is served from its lease row.
_REMEMBERED_ISSUES = 4096


@dataclass(frozen=True, slots=True)
class ReuseKey:
    """What must be equal for two requests to share a result."""

    token_fingerprint: str
    credential_id: int
    credential_version: str

    @property
    def slot(self) -> str:
        """The key as the lease table's unique reuse slot."""
        return f"{self.token_fingerprint}|{self.credential_id}|{self.credential_version}"


@dataclass(frozen=True, slots=True)
class LeaseFacts:
    """What a lease records about the request, besides its key and credential."""

    organization: str
    project: str | None
    issuer: str
    subject: str
    job: str
    request_id: str
    revocable: bool


@dataclass(frozen=True, slots=True)
class Issue:
    """A credential issued for one request key, under its lease.

    ``fresh``: issued for this very request, so its lease is still pending until the audit
    event of the issue commits it (``ReuseWindow.activation``).
    """

    key: ReuseKey
    credential: Credential
    issued: IssuedCredential = field(repr=False)
    lease_id: str
    fresh: bool


@dataclass(frozen=True, slots=True)
class _Remembered:
    """An issue of this process, active since its audit event committed."""

    issued: IssuedCredential = field(repr=False)
    lease_id: str
    reuse_until: float


@dataclass(frozen=True, slots=True)
class Activation:
    """What a fresh issue's lease becomes active with, in its audit event's transaction."""

    expires_at: datetime
    reuse_until: datetime
    sealed: str = field(repr=False)
    sealed_until: datetime


class ReuseWindow:
    """The reuse window over the store's leases, and the in-process calls in flight."""

    def __init__(
        self,
        leases: Leases,
        audit: AuditLog,
        clock: Clock,
        *,
        encryption_key: str,
        reuse_seconds: float = 60,
        wait_seconds: float = 30,
        margin_seconds: int = 60,
    ) -> None:
        self._leases = leases
        self._audit = audit
        self._clock = clock
        self._key = encryption_key
        self._reuse_seconds = reuse_seconds
        # A broker waits this long for another's issue; a pending lease older than twice it
        # belongs to a broker that died mid-issue, and its slot is let go.
        self._wait_seconds = wait_seconds
        self._margin = margin_seconds
        self._in_flight: dict[ReuseKey, asyncio.Future[Issue]] = {}
        # In issue order, which is (nearly) the order their windows close in.
        self._remembered: OrderedDict[ReuseKey, _Remembered] = OrderedDict()
        self._background: set[asyncio.Future[None]] = set()

    async def get_or_issue(
        self,
        key: ReuseKey,
        credential: Credential,
        facts: LeaseFacts,
        issue: Callable[[str], Awaitable[IssuedCredential]],
        orphaned: Callable[[str, IssuedCredential], Awaitable[None]],
    ) -> tuple[Issue, bool]:
        """(issue, reused): the credential issued inside the window, or a new one.

        ``issue`` is called with the id of the lease it issues under.

        When the caller is cancelled (the runner hung up) the backend call goes on, and what it
        issues is handed to ``orphaned`` with its lease id: nobody holds it.
        """
        pending = self._in_flight.get(key)
        if pending is not None:
            # shield: a waiter that is cancelled must not cancel the shared call.
            shared = await asyncio.shield(pending)
            return Issue(key, credential, shared.issued, shared.lease_id, fresh=False), True
        future: asyncio.Future[Issue] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            result, reused = await self._claim_or_wait(key, credential, facts, issue, orphaned)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                # The failure is delivered to waiters; mark it retrieved for the lone caller.
                future.exception()
            raise
        finally:
            del self._in_flight[key]
        future.set_result(result)
        return result, reused

    async def activate(self, issue: Issue, token_expires_at: float, event: AuditEvent) -> None:
        """Make a fresh issue's lease active, in one transaction with its audit ``event``;
        from then on its retries are served."""
        activation = self.activation(issue, token_expires_at)
        await self._audit.record(
            event,
            self._leases.activation(
                issue.lease_id,
                expires_at=activation.expires_at,
                reuse_until=activation.reuse_until,
                sealed=activation.sealed,
                sealed_until=activation.sealed_until,
            ),
        )
        self._remember(issue.key, issue.issued, issue.lease_id, activation.reuse_until)

    def _remember(
        self, key: ReuseKey, issued: IssuedCredential, lease_id: str, reuse_until: datetime
    ) -> None:
        """Serve the next retries of ``key`` from memory (after one lease-state read)."""
        now = self._clock.now()
        remembered = self._remembered
        while remembered and (
            len(remembered) >= _REMEMBERED_ISSUES
            or next(iter(remembered.values())).reuse_until <= now
        ):
            remembered.popitem(last=False)
        if reuse_until.timestamp() > now:
            remembered[key] = _Remembered(issued, lease_id, reuse_until.timestamp())

    def activation(self, issue: Issue, token_expires_at: float) -> Activation:
        """How long the fresh ``issue`` may be handed to retries, and its sealed material."""
        now = self._clock.now()
        credential_until = issue.issued.expires_at.timestamp()
        margin = min(self._margin, max((credential_until - now) * 0.1, 0))
        reuse_until = max(
            now, min(now + self._reuse_seconds, credential_until - margin, token_expires_at)
        )
        return Activation(
            expires_at=issue.issued.expires_at,
            reuse_until=_at(reuse_until),
            sealed=seal(
                _sealed_bytes(issue.issued, issue.credential.settings),
                self._key,
                associated_data=issue.lease_id.encode(),
            ),
            # The handle revokes it until it expires; otherwise it only re-delivers, in the window.
            sealed_until=issue.issued.expires_at
            if issue.issued.revocation_handle
            else _at(reuse_until),
        )

    def unsealed(self, lease: Lease) -> SealedCredential | None:
        """The credential sealed in a lease (and its settings), None when it holds none."""
        if lease.sealed is None:
            return None
        try:
            # Bound to its lease: sealed material copied onto another row does not unseal.
            plaintext = unseal(lease.sealed, self._key, associated_data=lease.id.encode())
        except SealError:
            return None
        return _sealed_from(plaintext)

    async def _claim_or_wait(
        self,
        key: ReuseKey,
        credential: Credential,
        facts: LeaseFacts,
        issue: Callable[[str], Awaitable[IssuedCredential]],
        orphaned: Callable[[str, IssuedCredential], Awaitable[None]],
    ) -> tuple[Issue, bool]:
        remembered = self._remembered.get(key)
        if remembered is not None:
            # Its lease may have been revoked since, here or by another broker: ask the store.
            if remembered.reuse_until > self._clock.now() and await self._store_answer(
                self._leases.is_active(remembered.lease_id)
            ):
                return Issue(
                    key, credential, remembered.issued, remembered.lease_id, fresh=False
                ), True
            self._remembered.pop(key, None)
        deadline = self._clock.now() + self._wait_seconds
        poll = _FIRST_POLL_SECONDS
        while True:
            pending = self._pending_lease(key, credential, facts)
            claim = await self._claim(pending)
            if isinstance(claim, Claimed):
                call = asyncio.ensure_future(issue(pending.id))
                try:
                    issued = await asyncio.shield(call)
                except asyncio.CancelledError:
                    call.add_done_callback(
                        functools.partial(self._settle_orphan, pending.id, orphaned)
                    )
                    raise
                except BaseException:
                    await self.let_go(pending.id)
                    raise
                return Issue(key, credential, issued, pending.id, fresh=True), False
            holder = claim.lease
            if (
                holder.state == "active"
                and holder.reuse_until is not None
                and holder.reuse_until.timestamp() > self._clock.now()
            ):
                held = self.unsealed(holder)
                if held is not None:
                    # Issued by another broker of the fleet (or before a restart): its next
                    # retries here are served like this broker's own.
                    self._remember(key, held.issued, holder.id, holder.reuse_until)
                    return Issue(key, credential, held.issued, holder.id, fresh=False), True
            if self._clock.now() >= deadline:
                raise TemporarilyUnavailable(
                    "issue_in_progress",
                    "another broker is issuing this credential for the same token; retry",
                    retry_after=1,
                )
            # Another broker of the fleet is issuing it: look again shortly. The store has no
            # portable way to wake a waiter (SQLite has none), so the wait polls, bounded.
            await asyncio.sleep(poll)
            poll = min(poll * 2, _MAX_POLL_SECONDS)

    def _settle_orphan(
        self,
        lease_id: str,
        orphaned: Callable[[str, IssuedCredential], Awaitable[None]],
        call: asyncio.Future[IssuedCredential],
    ) -> None:
        """The backend call of a cancelled caller ended: revoke what it issued, or let go."""
        if call.cancelled() or call.exception() is not None:
            follow_up: Awaitable[None] = self.let_go(lease_id)
        else:
            follow_up = orphaned(lease_id, call.result())
        task = asyncio.ensure_future(follow_up)
        # Held until done: the loop keeps only weak references to tasks.
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for the follow-ups of cancelled callers (at shutdown)."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def let_go(self, lease_id: str) -> None:
        """Mark a lease whose issue failed; a store that cannot take it must not hide the
        failure the runner is owed (the sweeper lets a stale pending lease go later)."""
        try:
            await self._leases.fail(lease_id)
        except Exception as exc:
            log.warning("could not mark a failed lease", extra={"exception": type(exc).__name__})

    async def _claim(self, pending: Lease) -> Claimed | Held:
        return await self._store_answer(
            self._leases.claim(pending, _at(self._clock.now()), stale_after=2 * self._wait_seconds)
        )

    async def _store_answer(self, question: Awaitable[_T]) -> _T:
        try:
            return await question
        except Exception as exc:
            # A connection the database dropped (restart, failover, a killed backend) is
            # weather: the runner retries. Nothing was claimed, so nothing was issued.
            log.warning("lease lookup failed", extra={"exception": type(exc).__name__})
            raise TemporarilyUnavailable(
                "store_unavailable",
                "the broker cannot reach its store right now; nothing was issued, retry later",
                retry_after=_STORE_RETRY_AFTER_SECONDS,
            ) from None

    def _pending_lease(self, key: ReuseKey, credential: Credential, facts: LeaseFacts) -> Lease:
        now = self._clock.now()
        return Lease(
            id=new_lease_id(now),
            organization=facts.organization,
            project=facts.project,
            credential=credential.name,
            credential_id=credential.id,
            credential_version=key.credential_version,
            credential_type=credential.type,
            issuer=facts.issuer,
            subject=facts.subject[:1024],
            job=facts.job[:256],
            state="pending",
            issued_at=_at(now),
            request_id=facts.request_id,
            token_fingerprint=key.token_fingerprint,
            reuse_slot=key.slot,
        )


def new_lease_id(now: float) -> str:
    """``lse_`` + the time in milliseconds (so ids sort by issue) + 80 random bits."""
    return f"lse_{int(now * 1000):012x}{secrets.token_hex(10)}"


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@dataclass(frozen=True, slots=True)
class SealedCredential:
    """What a lease keeps sealed: the credential, and the settings it was issued with (its
    backend revokes it with those, whatever the credential says now)."""

    issued: IssuedCredential = field(repr=False)
    settings: Mapping[str, object]


def _sealed_bytes(issued: IssuedCredential, settings: Mapping[str, object]) -> bytes:
    return json.dumps(
        {
            "values": dict(issued.values),
            "expires_at": issued.expires_at.timestamp(),
            "metadata": dict(issued.metadata),
            "revocation_handle": issued.revocation_handle,
            "settings": dict(settings),
        },
        default=str,
    ).encode()


def _sealed_from(plaintext: bytes) -> SealedCredential:
    data = json.loads(plaintext)
    issued = IssuedCredential(
        values=data["values"],
        expires_at=_at(float(data["expires_at"])),
        metadata=data["metadata"],
        revocation_handle=data["revocation_handle"],
    )
    return SealedCredential(issued, data["settings"])
