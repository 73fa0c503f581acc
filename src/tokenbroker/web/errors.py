"""The one place errors become responses: OAuth-style JSON, never a stack trace."""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable

from aiohttp import web

from tokenbroker.errors import BrokerError, RetryLater
from tokenbroker.logs import request_id_var

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_ERRORS = {
    400: "invalid_request",
    401: "invalid_token",
    403: "access_denied",
    404: "not_found",
    405: "invalid_request",
    413: "payload_too_large",
    415: "invalid_request",
    429: "rate_limited",
    503: "temporarily_unavailable",
}


def error_response(
    status: int,
    error: str,
    description: str,
    *,
    reason: str | None = None,
    extra: dict[str, object] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """Build the OAuth-style error body every failure uses."""
    body: dict[str, object] = {
        "error": error,
        "error_description": description,
        "request_id": request_id_var.get(),
    }
    if reason is not None:
        body["reason"] = reason
    if extra:
        body.update(extra)
    return web.json_response(body, status=status, headers=headers)


# RFC 6750 section 3.1: a request that carried no credentials gets the bare challenge.
_NO_CREDENTIALS = frozenset({"token_missing", "admin_token_required"})


def _bearer_challenge(exc: BrokerError) -> str:
    # RFC 6750 section 3: every 401 names the scheme, and the error when a token was refused.
    return "Bearer" if exc.reason in _NO_CREDENTIALS else 'Bearer error="invalid_token"'


def broker_error_response(exc: BrokerError) -> web.Response:
    """Map a domain error to its response."""
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RetryLater) else None
    if exc.status == 401:
        headers = {"WWW-Authenticate": _bearer_challenge(exc)}
    extra = dict(exc.details) if exc.details else None
    return error_response(
        exc.status, exc.error, exc.description, reason=exc.reason, extra=extra, headers=headers
    )


def _new_request_id(request: web.Request) -> str:
    # A caller-supplied id is kept when it is short and printable, so traces join up.
    supplied = request.headers.get(REQUEST_ID_HEADER, "")
    if 0 < len(supplied) <= 64 and supplied.isascii() and supplied.isprintable():
        return supplied
    # A correlation id, not a secret: a PRNG draw, not a getrandom() system call per request.
    return f"{random.getrandbits(64):016x}"


@web.middleware
async def request_context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the request an id, map every error to JSON, and stamp the id on the response."""
    request_id = _new_request_id(request)
    token = request_id_var.set(request_id)
    try:
        try:
            response = await handler(request)
        except BrokerError as exc:
            if not exc.logged:
                log.info("request refused", extra={"reason": exc.reason, "status": exc.status})
            response = broker_error_response(exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = error_response(
                exc.status,
                _HTTP_ERRORS.get(exc.status, "invalid_request"),
                exc.reason,
                headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"},
            )
        except Exception:
            log.exception("unhandled error")
            response = error_response(500, "server_error", "internal error; see the broker log")
        response.headers[REQUEST_ID_HEADER] = request_id
        return response
    finally:
        request_id_var.reset(token)
