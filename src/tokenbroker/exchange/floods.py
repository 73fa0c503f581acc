"""Floods from one client address: refused before any token is read, audited in summary.

Each client address (an IPv6 client by its /64) has a token bucket, checked before the request's
body or token is read. A refused request costs no signature check and no audit row of its own:
the refusals of one address are counted, and written as one ``kind="flood"`` event per address
and interval, once the interval has ended (found by the periodic sweep, or by that address's
next refusal) and at shutdown.

The buckets live in this process's memory even when exchanges share theirs through Redis: they
guard this process, which no other instance's count says anything about, and a refusal must
not wait on another server.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from tokenbroker.clock import Clock
from tokenbroker.config.models import RateLimitSettings
from tokenbroker.policy.models import AuditEvent
from tokenbroker.ratelimit import BucketLimits, MemoryRateLimiter

log = logging.getLogger(__name__)

FLOOD_REASON = "client_rate_limited"
FLOOD_INTERVAL_SECONDS = 60.0
# Open floods kept at most; refusals from further addresses share one overflow summary, so an
# attacker with many addresses cannot grow this without bound.
MAX_OPEN_FLOODS = 10_000
OVERFLOW_CLIENT = "*"

RecordEvent = Callable[[AuditEvent], Awaitable[None]]


def client_key(address: str | None) -> str:
    """The bucket a client address counts against: the address, an IPv6 address's /64.

    One host usually holds a whole /64, so counting each of its addresses apart would let it
    multiply its limit by 2**64. An IPv4 address mapped into IPv6 counts as itself.
    """
    if not address or ":" not in address:
        return address or ""
    try:
        ip = ipaddress.IPv6Address(address.split("%", 1)[0])
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))


@dataclass(slots=True)
class Flood:
    """The refusals of one client in one interval: how many, the first and the last."""

    client: str
    first: float
    last: float
    count: int
    # The first refused request's id, so the summary joins up with the log.
    request_id: str

    def event(self, interval_seconds: float) -> AuditEvent:
        """The flood's one audit event (``kind="flood"``; the counts in ``detail``)."""
        first, last = _at(self.first), _at(self.last)
        return AuditEvent(
            time=last,
            request_id=self.request_id,
            outcome="denied",
            reason=FLOOD_REASON,
            latency_ms=0.0,
            client_address=None if self.client == OVERFLOW_CLIENT else self.client,
            kind="flood",
            detail={
                "count": self.count,
                "first": first.isoformat(),
                "last": last.isoformat(),
                "reason": FLOOD_REASON,
                "interval_seconds": interval_seconds,
                "client": self.client,
            },
        )


class FloodLedger:
    """The open flood of each refused client; a flood ends ``interval`` after its first refusal."""

    def __init__(
        self, interval: float = FLOOD_INTERVAL_SECONDS, *, max_open: int = MAX_OPEN_FLOODS
    ) -> None:
        self.interval = interval
        self._max_open = max_open
        self._open: dict[str, Flood] = {}

    def __len__(self) -> int:
        """How many floods are open."""
        return len(self._open)

    def note(self, client: str, now: float, request_id: str) -> Flood | None:
        """Count one refusal of ``client``; return its previous flood when that one has ended."""
        if client not in self._open and len(self._open) >= self._max_open:
            client = OVERFLOW_CLIENT
        flood = self._open.get(client)
        if flood is not None and not self._has_ended(flood, now):
            flood.count += 1
            flood.last = max(flood.last, now)
            return None
        self._open[client] = Flood(client, now, now, 1, request_id)
        return flood

    def ended(self, now: float) -> list[Flood]:
        """Remove and return every flood whose interval has ended by ``now``."""
        done = [flood for flood in self._open.values() if self._has_ended(flood, now)]
        for flood in done:
            del self._open[flood.client]
        return done

    def drain(self) -> list[Flood]:
        """Remove and return every open flood, ended or not (at shutdown)."""
        floods = list(self._open.values())
        self._open.clear()
        return floods

    def _has_ended(self, flood: Flood, now: float) -> bool:
        return now - flood.first >= self.interval


class ClientGate:
    """The per-client-address limit in front of the runner's routes, and its flood audit."""

    def __init__(
        self,
        settings: RateLimitSettings,
        clock: Clock,
        record: RecordEvent,
        *,
        interval: float = FLOOD_INTERVAL_SECONDS,
    ) -> None:
        self._limiter = (
            MemoryRateLimiter(BucketLimits.per_client(settings), clock)
            if settings.enabled
            else None
        )
        self._clock = clock
        self._record = record
        self._ledger = FloodLedger(interval)
        self._writes: set[asyncio.Task[None]] = set()

    async def admit(self, address: str | None, request_id: str) -> float | None:
        """Take one request of ``address``: None when it may go on, else seconds to wait."""
        if self._limiter is None:
            return None
        client = client_key(address)
        wait = await self._limiter.acquire(client)
        if wait is None:
            return None
        ended = self._ledger.note(client, self._clock.now(), request_id)
        if ended is not None:
            # Written behind the refusal: a refused request never waits for the store.
            self._write_later([ended])
        return wait

    def write_ended(self) -> None:
        """Start writing the summary of every flood whose interval has ended."""
        self._write_later(self._ledger.ended(self._clock.now()))

    async def sweep_forever(self) -> None:
        """Write ended floods' summaries once an interval, so a flood that stops is audited."""
        while True:
            await asyncio.sleep(self._ledger.interval)
            self.write_ended()

    async def aclose(self) -> None:
        """Write every open flood's summary and wait for all writes (at shutdown)."""
        self._write_later(self._ledger.drain())
        while self._writes:
            await asyncio.gather(*self._writes)

    def _write_later(self, floods: list[Flood]) -> None:
        for flood in floods:
            task = asyncio.create_task(self._write(flood))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def _write(self, flood: Flood) -> None:
        try:
            await self._record(flood.event(self._ledger.interval))
        except Exception as exc:
            # The requests were refused either way; the summary is lost, and said to be.
            log.warning(
                "the audit summary of a refused flood could not be written",
                extra={"exception": type(exc).__name__, "count": flood.count},
            )


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
