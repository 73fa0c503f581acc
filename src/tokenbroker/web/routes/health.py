"""Liveness and readiness."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from tokenbroker.web.serving import SERVING_STATE

ReadinessCheck = Callable[[], Awaitable[None]]
READINESS_CHECKS = web.AppKey("readiness_checks", dict[str, ReadinessCheck])


async def healthz(request: web.Request) -> web.Response:
    """The process is up and serving."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Every registered dependency (store, keys, ...) answers; 503 naming those that do not.

    Draining after SIGTERM, 503 at once: the load balancer stops sending before the port closes.
    """
    state = request.app[SERVING_STATE]
    if state.draining:
        return _shutting_down()
    results: dict[str, str] = {}
    ready = True
    for name, check in request.app[READINESS_CHECKS].items():
        try:
            await check()
            results[name] = "ok"
        except Exception as exc:  # a failing dependency is a readiness answer, not an error
            ready = False
            results[name] = f"failing: {type(exc).__name__}"
    if state.draining:  # began while checking: this answer closes the connection
        return _shutting_down()
    return web.json_response(
        {"status": "ok" if ready else "unavailable", "checks": results},
        status=200 if ready else 503,
    )


def _shutting_down() -> web.Response:
    return web.json_response({"status": "shutting_down", "checks": {}}, status=503)


def add_routes(app: web.Application) -> None:
    """Register the health routes."""
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
