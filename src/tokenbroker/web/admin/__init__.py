"""The admin API under ``/v1/admin``: a sub-app with its own bearer-token middleware.

Errors raised here are mapped by the main app's error middleware, which aiohttp runs around a
sub-app's handlers too.
"""

from __future__ import annotations

from aiohttp import web

from tokenbroker.web.admin.auth import AdminTokens, admin_auth_middleware
from tokenbroker.web.admin.routes import routes


def create_admin_app(tokens: AdminTokens) -> web.Application:
    """Build the admin sub-app; mount it with ``app.add_subapp("/v1/admin", ...)``."""
    app = web.Application(middlewares=[admin_auth_middleware(tokens)])
    app.add_routes(routes)
    return app
