"""Audit events for requests refused while they were read, before the exchange service ran.

The exchange service audits every decision it makes; a request it never saw (a body that is
not JSON, a form in another charset, two Authorization headers) is refused by the route, and
``audits_refusals`` gives it the same trail: one ``denied`` event with the reason, the token's
fingerprint when one bearer token was sent, the credential name when the body got that far.
"""

from __future__ import annotations

import functools
import logging
import time
from datetime import UTC, datetime

from aiohttp import web

from tokenbroker.errors import BrokerError
from tokenbroker.identity.fingerprint import token_fingerprint
from tokenbroker.logs import request_id_var
from tokenbroker.policy.models import AuditEvent
from tokenbroker.web import keys
from tokenbroker.web.bearer import bearer_token
from tokenbroker.web.errors import Handler
from tokenbroker.web.parsing import RefusedWhileReading

log = logging.getLogger(__name__)


def audits_refusals(handler: Handler) -> Handler:
    """Wrap a runner-facing handler: a ``RefusedWhileReading`` it raises is audited, then raised."""

    @functools.wraps(handler)
    async def audited(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            return await handler(request)
        except RefusedWhileReading as exc:
            await _record(request, exc, started)
            raise

    return audited


def _fingerprint(request: web.Request) -> str | None:
    try:
        token = bearer_token(request)
    except BrokerError:  # two Authorization headers: neither is the request's token
        return None
    return token_fingerprint(token) if token is not None else None


async def _record(request: web.Request, exc: RefusedWhileReading, started: float) -> None:
    app = request.config_dict
    event = AuditEvent(
        time=datetime.fromtimestamp(app[keys.CLOCK].now(), UTC),
        request_id=request_id_var.get(),
        outcome="denied",
        reason=exc.reason,
        latency_ms=round((time.perf_counter() - started) * 1000, 3),
        credential=exc.credential,
        token_fingerprint=_fingerprint(request),
        client_address=request.remote,
    )
    try:
        await app[keys.STORE].audit.record(event)
    except Exception:
        # The request is refused either way; nothing was issued that the event would account for.
        log.exception("the audit event of a refused request could not be written")
