"""The shared outbound session refuses non-public addresses at connect time, after DNS.

The URL checks at configuration time cannot see what a name resolves to when it is used (DNS
rebinding); the session's socket factory sees the address actually connected to.
"""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from tokenbroker.config import Settings
from tokenbroker.config.models import SecuritySettings
from tokenbroker.web.app import outbound_session


@pytest.fixture
async def backend(aiohttp_server: AiohttpServer) -> int:
    """A loopback HTTP server standing for whatever a private address hosts; its port."""

    async def internal(request: web.Request) -> web.Response:
        return web.Response(text="internal")

    app = web.Application()
    app.router.add_get("/", internal)
    server = await aiohttp_server(app)
    assert server.port is not None
    return server.port


def with_private_backends(settings: Settings, allowed: bool) -> Settings:
    return settings.model_copy(
        update={"security": SecuritySettings(allow_private_backends=allowed)}
    )


# `localhost` stands for any name that resolves to a private address: the socket factory
# checks what the resolver returned, exactly as for a rebound public name.
@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::ffff:127.0.0.1]"])
async def test_a_name_or_address_resolving_to_loopback_is_refused_at_connect_time(
    settings: Settings, backend: int, host: str
) -> None:
    async with outbound_session(with_private_backends(settings, False)) as session:
        with pytest.raises(aiohttp.ClientConnectorError, match="refused to connect"):
            async with session.get(f"http://{host}:{backend}/"):
                pass


async def test_a_loopback_backend_is_reached_when_private_backends_are_allowed(
    settings: Settings, backend: int
) -> None:
    async with (
        outbound_session(with_private_backends(settings, True)) as session,
        session.get(f"http://localhost:{backend}/") as response,
    ):
        assert await response.text() == "internal"
