"""Console sessions: server-side, in this process's memory, with an idle timeout.

A session is found by the SHA-256 of its cookie value, so the map never holds a value a
browser could present. It remembers the admin's name only: the principal (and so its scope)
is looked up in the configured tokens on every request. Sessions live in the process that
made them: with several workers or instances the console needs a load balancer that keeps a
browser on one of them, and a restart signs everyone out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field

from tokenbroker.clock import Clock
from tokenbroker.config.models import AdminSettings
from tokenbroker.ratelimit import Bucket, BucketLimits, take

# However active, a session ends after this long; signing in again is cheap.
SESSION_MAX_AGE_SECONDS = 12 * 3600
# Beyond this many live sessions the least recently used is ended first.
MAX_SESSIONS = 10_000
# Client addresses whose failed sign-ins are counted at once.
MAX_THROTTLED_ADDRESSES = 10_000


def _key(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def new_secret() -> str:
    """A random value for a cookie or a CSRF token (256 bits)."""
    return secrets.token_urlsafe(32)


def same_secret(presented: str | None, expected: str) -> bool:
    """Whether a presented secret equals the expected one, compared in constant time."""
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode("utf-8", "surrogatepass"), expected.encode())


@dataclass(slots=True)
class ConsoleSession:
    """One signed-in browser: whose it is, its CSRF token, a message for the next page."""

    admin: str
    csrf: str
    created: float
    last_seen: float
    flash: str | None = field(default=None)

    def take_flash(self) -> str | None:
        """The message left by the last change (shown once)."""
        message, self.flash = self.flash, None
        return message


class ConsoleSessions:
    """The live sessions of this process, ended after ``idle_seconds`` without a request."""

    def __init__(self, clock: Clock, idle_seconds: float) -> None:
        self._clock = clock
        self._idle_seconds = idle_seconds
        self._sessions: OrderedDict[str, ConsoleSession] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def start(self, admin: str) -> tuple[str, ConsoleSession]:
        """A new session of ``admin``: the cookie value (given once) and the session."""
        now = self._clock.now()
        cookie = new_secret()
        session = ConsoleSession(admin=admin, csrf=new_secret(), created=now, last_seen=now)
        self._sessions[_key(cookie)] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return cookie, session

    def find(self, cookie: str | None) -> ConsoleSession | None:
        """The live session of a cookie, its idle time reset; None when unknown or expired."""
        if not cookie:
            return None
        key = _key(cookie)
        session = self._sessions.get(key)
        if session is None:
            return None
        now = self._clock.now()
        if (
            now - session.last_seen > self._idle_seconds
            or now - session.created > SESSION_MAX_AGE_SECONDS
        ):
            del self._sessions[key]
            return None
        session.last_seen = now
        self._sessions.move_to_end(key)
        return session

    def end(self, cookie: str | None) -> None:
        """End the session of a cookie (sign out); unknown cookies are ignored."""
        if cookie:
            self._sessions.pop(_key(cookie), None)


class SignInThrottle:
    """Failed sign-ins per client address: a token bucket each (ratelimit.take), in memory.

    Only failures take from the bucket, so an admin who types the token right is never held
    up; an empty bucket refuses every attempt until it refills, the right token included.
    """

    def __init__(self, clock: Clock, admin: AdminSettings) -> None:
        self._clock = clock
        self._limits = BucketLimits(
            capacity=float(admin.sign_in_burst), rate=admin.sign_in_failures_per_minute / 60.0
        )
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def wait(self, address: str) -> float | None:
        """Seconds until ``address`` may try again, or None when it may now."""
        bucket = self._buckets.get(address)
        if bucket is None:
            return None
        _, wait = take(bucket, self._limits, self._clock.now())
        return wait

    def failed(self, address: str) -> None:
        """Count a failed sign-in of ``address``."""
        bucket, _ = take(self._buckets.get(address), self._limits, self._clock.now())
        self._buckets[address] = bucket
        self._buckets.move_to_end(address)
        while len(self._buckets) > MAX_THROTTLED_ADDRESSES:
            self._buckets.popitem(last=False)
