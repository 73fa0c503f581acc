"""The application factory: builds the app, no I/O; resources open in cleanup contexts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web

from tokenbroker import __version__
from tokenbroker.clock import Clock, SystemClock
from tokenbroker.config.models import Settings
from tokenbroker.metrics import Metrics
from tokenbroker.web import keys
from tokenbroker.web.errors import request_context_middleware
from tokenbroker.web.routes import health


def create_app(settings: Settings, *, clock: Clock | None = None) -> web.Application:
    """Build the broker's application from validated settings."""
    app = web.Application(
        middlewares=[request_context_middleware],
        client_max_size=settings.server.max_body_bytes,
    )
    app[keys.SETTINGS] = settings
    app[keys.CLOCK] = clock or SystemClock()
    app[keys.METRICS] = Metrics()
    app[health.READINESS_CHECKS] = {}
    # Order matters: each resource may use the ones opened before it.
    app.cleanup_ctx.append(_http_client)
    health.add_routes(app)
    return app


@asynccontextmanager
async def _http_client(app: web.Application) -> AsyncIterator[None]:
    # One client session for every outbound call: JWKS fetches and backends share its pool.
    timeout = aiohttp.ClientTimeout(total=app[keys.SETTINGS].server.client_timeout_seconds)
    async with aiohttp.ClientSession(
        timeout=timeout, headers={"User-Agent": f"tokenbroker/{__version__}"}
    ) as session:
        app[keys.HTTP_CLIENT] = session
        yield
