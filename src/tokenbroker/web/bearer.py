"""The one reader of ``Authorization: Bearer <token>`` headers; callers raise their own error."""

from __future__ import annotations

from aiohttp import web

from tokenbroker.web.parsing import single_header


def bearer_token(request: web.Request) -> str | None:
    """The request's bearer token, or None when the header is absent or not a bearer token.

    Two Authorization headers are a 400 (``MalformedRequest``), not a choice between them.
    """
    scheme, _, token = (single_header(request, "Authorization") or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token
