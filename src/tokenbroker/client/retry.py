"""When the client retries a request, and for how long: 429, 5xx and lost connections only.

The backoff itself is the one the backends use (``tokenbroker/retry.py``: equal-jitter
exponential); this module adds what a client needs on top: an overall deadline, and the
server's ``Retry-After``.
Other 4xx answers are never retried: the same token would be refused the same way.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

import aiohttp

from tokenbroker.client.failures import Unavailable
from tokenbroker.clock import Clock
from tokenbroker.retry import RetryPolicy, Sleep, backoff_delay

# Patient enough for a broker restarting behind a load balancer, short enough for a CI step.
CLIENT_RETRY_POLICY = RetryPolicy(retries=8, base_delay=0.5, max_delay=10.0)
# One hung broker instance should not eat the whole deadline: a retry may reach another.
MAX_ATTEMPT_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class HttpReply:
    """One HTTP answer, read whole (bodies are small and capped)."""

    status: int
    body: bytes = field(repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)


Attempt = Callable[[float], Awaitable[HttpReply]]
Notify = Callable[[str], None]


def post_attempt(
    http: aiohttp.ClientSession,
    url: str,
    *,
    headers: Mapping[str, str],
    body: Mapping[str, object] | None = None,
    query: Mapping[str, str] | None = None,
    max_bytes: int,
    too_large: str,
) -> Attempt:
    """One POST, its answer read whole up to ``max_bytes``, as an attempt for ``send_with_retries``.

    An answer over the cap is ``Unavailable(too_large)``: no server of ours talks that much.
    """

    async def attempt(budget: float) -> HttpReply:
        # Redirects are not followed: a redirect would carry the token to another place.
        async with http.post(
            url,
            params=query,
            json=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=budget),
            allow_redirects=False,
        ) as response:
            data = await response.content.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise Unavailable(too_large)
            return HttpReply(response.status, data, dict(response.headers))

    return attempt


class Deadline:
    """A point in time after which no request is started and no retry is waited for."""

    def __init__(self, clock: Clock, seconds: float) -> None:
        self._clock = clock
        self.seconds = seconds
        self._at = clock.now() + seconds

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self._at - self._clock.now())


def is_retryable_status(status: int) -> bool:
    """429 and every 5xx are worth another try; nothing else is."""
    return status == 429 or 500 <= status <= 599


def is_retryable_error(exc: BaseException) -> bool:
    """A lost or refused connection is worth another try; a TLS failure is configuration."""
    if isinstance(exc, aiohttp.ClientSSLError | aiohttp.ServerFingerprintMismatch):
        return False
    return isinstance(
        exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError | TimeoutError
    )


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP date (RFC 9110).

    ``None`` when absent or unreadable; a date in the past means no wait.
    """
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - now)


def describe_error(exc: BaseException, private_ca: str = "pass --ca-cert") -> str:
    """A short, token-free description of a transport failure (``private_ca``: how to trust one)."""
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS verification failed (for a private CA, {private_ca})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the connection was closed before an answer"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.strerror or type(exc.os_error).__name__})"
    return type(exc).__name__


async def send_with_retries(
    attempt: Attempt,
    *,
    what: str,
    deadline: Deadline,
    clock: Clock,
    policy: RetryPolicy = CLIENT_RETRY_POLICY,
    rng: random.Random | None = None,
    sleep: Sleep = asyncio.sleep,
    notify: Notify | None = None,
    private_ca: str = "pass --ca-cert",
) -> HttpReply:
    """Call ``attempt(timeout)`` until an answer is not worth retrying, or time or tries run out.

    Returns the last answer (the caller maps its status); raises ``Unavailable`` when the last
    try failed without an answer. ``what`` names the server in messages ("the broker"),
    ``private_ca`` how to trust a server behind a private CA.
    """
    rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter, not a secret
    last_reply: HttpReply | None = None
    last_error = ""
    attempts = 0
    give_up = ""
    while True:
        timeout = min(deadline.remaining(), MAX_ATTEMPT_SECONDS)
        if timeout <= 0:
            # Never start a request with no time left (aiohttp reads a 0 timeout as "none").
            if attempts == 0:
                raise Unavailable(
                    f"the deadline (--timeout {deadline.seconds:g}) ran out before {what} "
                    "could be asked; raise --timeout"
                )
            give_up = f"the deadline ran out after {attempts} attempt(s)"
            give_up += f" (--timeout {deadline.seconds:g})"
            break
        attempts += 1
        server_wait: float | None = None
        try:
            reply = await attempt(timeout)
        except (aiohttp.ClientError, TimeoutError) as exc:
            if not is_retryable_error(exc):
                raise Unavailable(
                    f"cannot reach {what}: {describe_error(exc, private_ca)}"
                ) from None
            last_reply, last_error = None, describe_error(exc, private_ca)
            cause = last_error
        else:
            if not is_retryable_status(reply.status):
                return reply
            last_reply = reply
            server_wait = parse_retry_after(reply.headers.get("Retry-After"), clock.now())
            cause = f"HTTP {reply.status}"
        if attempts > policy.retries:
            give_up = f"after {attempts} attempts"
            break
        delay = backoff_delay(attempts, policy, rng)
        if server_wait is not None:
            delay = max(delay, server_wait)
        if delay >= deadline.remaining():
            if server_wait is not None and server_wait >= deadline.remaining():
                give_up = f"it asked to retry in {server_wait:g}s, past the deadline"
            else:
                give_up = f"the deadline ran out after {attempts} attempt(s)"
            give_up += f" (--timeout {deadline.seconds:g})"
            break
        if notify is not None:
            notify(f"{what}: {cause}; retrying in {delay:.1f}s (attempt {attempts + 1})")
        await sleep(delay)
    if last_reply is not None:
        if notify is not None:
            notify(f"{what}: giving up, {give_up}")
        return last_reply
    raise Unavailable(
        f"cannot reach {what}: {last_error}; {give_up}. "
        "Check the URL and that the service is up, or raise --timeout"
    )
