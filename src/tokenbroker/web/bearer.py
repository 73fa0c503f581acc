"""The one reader of ``Authorization: Bearer <token>`` headers; callers raise their own error."""

from __future__ import annotations

from aiohttp import web


def bearer_token(request: web.Request) -> str | None:
    """The request's bearer token, or None when the header is absent or not a bearer token."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token
