"""Idempotent retries: one backend call per (platform token, credential) while its result is valid.

A runner that retries after a dropped connection gets the credential it was already issued, and
concurrent identical requests share one backend call. The key holds the token's SHA-256, so
different tokens never share; entries live only in this process's memory.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from tokenbroker.backends.base import IssuedCredential
from tokenbroker.clock import Clock


@dataclass(frozen=True, slots=True)
class ReuseKey:
    """What must be equal for two requests to share a result."""

    token_fingerprint: str
    credential_id: int
    credential_version: str


@dataclass(slots=True)
class _Entry:
    issued: IssuedCredential
    reuse_until: float


class IssuedCredentialCache:
    """A bounded LRU of issued credentials plus the calls in flight."""

    def __init__(
        self, clock: Clock, *, max_entries: int = 10_000, margin_seconds: int = 60
    ) -> None:
        self._clock = clock
        self._max_entries = max_entries
        self._margin = margin_seconds
        self._entries: OrderedDict[ReuseKey, _Entry] = OrderedDict()
        self._in_flight: dict[ReuseKey, asyncio.Future[IssuedCredential]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def get_or_issue(
        self,
        key: ReuseKey,
        token_expires_at: float,
        issue: Callable[[], Awaitable[IssuedCredential]],
    ) -> tuple[IssuedCredential, bool]:
        """Return (credential, reused): a valid cached one, a shared in-flight one, or a new one."""
        now = self._clock.now()
        entry = self._entries.get(key)
        if entry is not None:
            if entry.reuse_until > now:
                self._entries.move_to_end(key)
                return entry.issued, True
            del self._entries[key]
        pending = self._in_flight.get(key)
        if pending is not None:
            # shield: a waiter that is cancelled must not cancel the shared call.
            return await asyncio.shield(pending), True
        future: asyncio.Future[IssuedCredential] = asyncio.get_running_loop().create_future()
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

    def _remember(
        self, key: ReuseKey, issued: IssuedCredential, token_expires_at: float, now: float
    ) -> None:
        credential_until = _timestamp(issued.expires_at)
        lifetime = credential_until - now
        # Stop handing a credential out well before it expires, and never past the platform
        # token's own expiry: a retry after that must be refused like any expired token.
        margin = min(self._margin, max(lifetime * 0.1, 0))
        reuse_until = min(credential_until - margin, token_expires_at)
        if reuse_until <= now:
            return
        self._entries[key] = _Entry(issued, reuse_until)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)


def _timestamp(moment: datetime) -> float:
    return moment.timestamp()
