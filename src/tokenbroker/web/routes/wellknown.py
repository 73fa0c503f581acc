"""The broker issuer's public documents: OpenID discovery and the JWK Set."""

from __future__ import annotations

from aiohttp import web

from tokenbroker.issuer.discovery import openid_configuration
from tokenbroker.web import keys

# Short so a rotation propagates: verifiers refetch within five minutes, well inside the
# period a retiring key stays published, so no token they receive outlives its key.
CACHE_CONTROL = "public, max-age=300"


async def openid_configuration_document(request: web.Request) -> web.Response:
    """``GET /.well-known/openid-configuration``."""
    issuer_url = request.app[keys.SETTINGS].server.issuer_url
    document = openid_configuration(issuer_url, algorithms=request.app[keys.KEYRING].algorithms())
    return web.json_response(document, headers={"Cache-Control": CACHE_CONTROL})


async def jwks(request: web.Request) -> web.Response:
    """``GET /.well-known/jwks.json``: active and retiring public keys."""
    return web.json_response(
        request.app[keys.KEYRING].jwks(), headers={"Cache-Control": CACHE_CONTROL}
    )


def add_routes(app: web.Application) -> None:
    """Register the well-known routes."""
    app.router.add_get("/.well-known/openid-configuration", openid_configuration_document)
    app.router.add_get("/.well-known/jwks.json", jwks)
