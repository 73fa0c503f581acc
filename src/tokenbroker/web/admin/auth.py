"""Admin authentication: a bearer token whose SHA-256 is listed in ``[admin] tokens``."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from tokenbroker.errors import Forbidden, Unauthorized
from tokenbroker.web.bearer import bearer_token


def admin_token_digest(token: str) -> str:
    """The form an admin token is configured in: ``sha256:<hex>`` of its UTF-8 bytes."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def admin_token_matches(token: str, configured: Sequence[str]) -> bool:
    """Whether the token's digest is one of the configured ones, compared in constant time.

    Every configured digest is compared, so the time taken does not say which one matched.
    """
    presented = admin_token_digest(token).encode("ascii")
    matched = False
    for digest in configured:
        matched |= hmac.compare_digest(presented, digest.encode("ascii"))
    return matched


def admin_auth_middleware(configured: Sequence[str]) -> Middleware:
    """A middleware admitting only requests that carry one of the configured admin tokens."""
    digests = tuple(configured)

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        token = bearer_token(request)
        if token is None:
            raise Unauthorized(
                "admin_token_required", "send an admin token as 'Authorization: Bearer <token>'"
            )
        if not admin_token_matches(token, digests):
            raise Forbidden("admin_token_invalid", "the admin token is not valid")
        return await handler(request)

    return authenticate
