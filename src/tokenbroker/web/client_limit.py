"""The per-client-address limit on the runner's routes, checked before the body is read."""

from __future__ import annotations

import functools

from aiohttp import web

from tokenbroker.errors import RateLimited
from tokenbroker.exchange.floods import FLOOD_REASON
from tokenbroker.logs import request_id_var
from tokenbroker.ratelimit import retry_after_seconds
from tokenbroker.web import keys
from tokenbroker.web.errors import Handler, broker_error_response


def limits_clients(handler: Handler) -> Handler:
    """Wrap a runner-facing handler: over its address's bucket, a request gets 429 at once."""

    @functools.wraps(handler)
    async def limited(request: web.Request) -> web.StreamResponse:
        gate = request.config_dict[keys.CLIENT_GATE]
        wait = await gate.admit(request.remote, request_id_var.get())
        if wait is None:
            return await handler(request)
        # Answered here rather than raised: the error middleware logs every refusal it maps,
        # and a flood's trail is its one summary event, not a log line per request.
        return broker_error_response(
            RateLimited(
                FLOOD_REASON,
                "too many requests from this address; retry later",
                retry_after=retry_after_seconds(wait),
            )
        )

    return limited
