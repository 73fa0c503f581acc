"""``POST /v1/leases/revoke``: the runner gives back what its platform token was issued."""

from __future__ import annotations

import json

from aiohttp import web

from tokenbroker.errors import InvalidRequest
from tokenbroker.logs import request_id_var
from tokenbroker.web import keys
from tokenbroker.web.routes.exchange import platform_token


async def _revoke_body(request: web.Request) -> None:
    """Only ``{"job": true}`` for now: every credential issued for this platform token."""
    raw = await request.read()
    try:
        body = json.loads(raw) if raw.strip() else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        body = None
    if body != {"job": True}:
        raise InvalidRequest("body_malformed", 'send {"job": true}')


async def revoke(request: web.Request) -> web.Response:
    """Revoke what the broker still hands out for the bearer token; list what only expires."""
    token = platform_token(request)
    await _revoke_body(request)
    result = await request.app[keys.SERVICE].revoke_for_token(
        token, request_id_var.get(), request.remote
    )
    return web.json_response({"revoked": result.revoked, "not_revocable": result.not_revocable})


def add_routes(app: web.Application) -> None:
    """Register the runner's revoke route."""
    app.router.add_post("/v1/leases/revoke", revoke)
