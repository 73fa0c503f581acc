"""``GET /metrics``: Prometheus text format from the app's own registry."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from tokenbroker.web import keys


async def metrics(request: web.Request) -> web.Response:
    """Render every metric of this application (of every worker, under ``server.workers``)."""
    body = request.app[keys.METRICS].exposition()
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def add_routes(app: web.Application) -> None:
    """Register the metrics route."""
    app.router.add_get("/metrics", metrics)
