"""``POST /v1/leases/revoke``: the runner gives back what its job was issued."""

from __future__ import annotations

from aiohttp import web

from tokenbroker.logs import request_id_var
from tokenbroker.web import keys
from tokenbroker.web.client_limit import limits_clients
from tokenbroker.web.parsing import MalformedRequest, loads_json
from tokenbroker.web.refused import audits_refusals
from tokenbroker.web.routes.exchange import platform_token

_BODY_HINT = 'send {"job": true} for every lease of the job, or {"lease": "<id>"} for one'


async def _lease_asked_for(request: web.Request) -> str | None:
    """``{"job": true}`` (None: every lease of the job) or ``{"lease": "<id>"}``."""
    body = loads_json(await request.read())
    if body == {"job": True}:
        return None
    if isinstance(body, dict) and set(body) == {"lease"}:
        lease = body["lease"]
        if isinstance(lease, str) and 0 < len(lease) <= 64 and lease.isascii():
            return lease
    raise MalformedRequest("body_malformed", _BODY_HINT)


async def revoke(request: web.Request) -> web.Response:
    """Revoke the job's leases (or one); list those whose credentials can only expire."""
    token = platform_token(request)
    lease = await _lease_asked_for(request)
    result = await request.app[keys.SERVICE].revoke_for_job(
        token, request_id_var.get(), request.remote, lease_id=lease
    )
    return web.json_response({"revoked": result.revoked, "not_revocable": result.not_revocable})


def add_routes(app: web.Application) -> None:
    """Register the runner's revoke route."""
    app.router.add_post("/v1/leases/revoke", limits_clients(audits_refusals(revoke)))
