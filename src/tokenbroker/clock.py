"""An injectable clock, so tests can freeze and move time."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Something that tells the current Unix time in seconds."""

    def now(self) -> float:
        """Return the current Unix time in seconds."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> float:
        """Return ``time.time()``."""
        return time.time()


class FrozenClock:
    """A clock that only moves when told to; for tests."""

    def __init__(self, at: float) -> None:
        self._at = at

    def now(self) -> float:
        """Return the frozen time."""
        return self._at

    def advance(self, seconds: float) -> None:
        """Move the clock forward (or back, with a negative number)."""
        self._at += seconds


def isoformat_utc(moment: datetime) -> str:
    """RFC 3339 in UTC with a Z, to the second, as AWS and most clients expect."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
