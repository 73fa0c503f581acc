"""The reuse window: a retry of the same request gets the same credential, for a short while.

A runner that retries after a dropped connection gets the credential it was already issued,
and concurrent identical requests share one backend call. A request is "the same" when the
platform token (its SHA-256), the credential and the credential's version are; it is a retry
only inside ``reuse_seconds`` of the issue, never past the credential's or the token's expiry,
and never once the credential was revoked. Entries live in this process's memory.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from tokenbroker.backends.base import IssuedCredential
from tokenbroker.clock import Clock
from tokenbroker.policy.models import Credential


@dataclass(frozen=True, slots=True)
class ReuseKey:
    """What must be equal for two requests to share a result."""

    token_fingerprint: str
    credential_id: int
    credential_version: str


@dataclass(frozen=True, slots=True)
class Issue:
    """A credential issued for one request key, with the credential it was issued from."""

    key: ReuseKey
    credential: Credential
    issued: IssuedCredential


class ReuseWindow(Protocol):
    """Where the exchange asks for a retry's credential: the one interface a store backs."""

    async def get_or_issue(
        self,
        key: ReuseKey,
        token_expires_at: float,
        issue: Callable[[], Awaitable[Issue]],
    ) -> tuple[Issue, bool]:
        """(credential, reused): the one issued inside the window, a shared call, or a new one."""
        ...

    def forget(self, issue: Issue) -> None:
        """Never hand ``issue`` out again (revoked, or its issue could not be recorded)."""
        ...

    def held_for_token(self, token_fingerprint: str) -> list[Issue]:
        """What the window still holds for one platform token."""
        ...


@dataclass(slots=True)
class _Entry:
    issue: Issue
    reuse_until: float


class InMemoryReuseWindow:
    """A bounded LRU of issued credentials plus the calls in flight, in this process."""

    def __init__(
        self,
        clock: Clock,
        *,
        reuse_seconds: float = 60,
        max_entries: int = 10_000,
        margin_seconds: int = 60,
    ) -> None:
        self._clock = clock
        self._reuse_seconds = reuse_seconds
        self._max_entries = max_entries
        self._margin = margin_seconds
        self._entries: OrderedDict[ReuseKey, _Entry] = OrderedDict()
        self._in_flight: dict[ReuseKey, asyncio.Future[Issue]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def get_or_issue(
        self,
        key: ReuseKey,
        token_expires_at: float,
        issue: Callable[[], Awaitable[Issue]],
    ) -> tuple[Issue, bool]:
        """Return (credential, reused): one inside its window, a shared in-flight one, or new."""
        now = self._clock.now()
        entry = self._entries.get(key)
        if entry is not None:
            if entry.reuse_until > now:
                self._entries.move_to_end(key)
                return entry.issue, True
            del self._entries[key]
        pending = self._in_flight.get(key)
        if pending is not None:
            # shield: a waiter that is cancelled must not cancel the shared call.
            return await asyncio.shield(pending), True
        future: asyncio.Future[Issue] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            issued = await issue()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            # The failure is delivered to waiters; mark it retrieved for the lone caller case.
            future.exception()
            raise
        finally:
            del self._in_flight[key]
        future.set_result(issued)
        self._remember(key, issued, token_expires_at, now)
        return issued, False

    def forget(self, issue: Issue) -> None:
        """Drop ``issue`` from the window (only that one, not a newer issue for its key)."""
        entry = self._entries.get(issue.key)
        if entry is not None and entry.issue is issue:
            del self._entries[issue.key]

    def held_for_token(self, token_fingerprint: str) -> list[Issue]:
        """Every credential still inside its window for this platform token."""
        now = self._clock.now()
        return [
            entry.issue
            for key, entry in self._entries.items()
            if key.token_fingerprint == token_fingerprint and entry.reuse_until > now
        ]

    def _remember(self, key: ReuseKey, issue: Issue, token_expires_at: float, now: float) -> None:
        credential_until = issue.issued.expires_at.timestamp()
        lifetime = credential_until - now
        # A retry comes within seconds: past the window it is a new request. Never hand a
        # credential out close to its expiry, nor past the platform token's own expiry.
        margin = min(self._margin, max(lifetime * 0.1, 0))
        reuse_until = min(now + self._reuse_seconds, credential_until - margin, token_expires_at)
        if reuse_until <= now:
            return
        self._entries[key] = _Entry(issue, reuse_until)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
