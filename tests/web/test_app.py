"""The app factory's shared resources."""

from __future__ import annotations

from aiohttp import web
from pytest_aiohttp import AiohttpClient, AiohttpServer

from tokenbroker.config import Settings
from tokenbroker.web import keys
from tokenbroker.web.app import create_app


async def test_the_shared_outbound_session_keeps_no_cookie_between_calls(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, settings: Settings
) -> None:
    # One session serves every organization's backend calls: a cookie set by one answer
    # must not be sent with the next call.
    seen: list[str | None] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        response = web.Response(text="ok")
        response.set_cookie("session", "tenant-a")
        return response

    backend = web.Application()
    backend.router.add_get("/", answer)
    server = await aiohttp_server(backend)
    client = await aiohttp_client(create_app(settings))
    session = client.app[keys.HTTP_CLIENT]
    for _ in range(2):
        # A host name: aiohttp's default jar never keeps cookies of an IP address.
        async with session.get(f"http://localhost:{server.port}/") as response:
            assert response.status == 200
            assert "session" in response.cookies
    assert seen == [None, None]
