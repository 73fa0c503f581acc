"""Liveness, readiness, request ids and the error shape."""

from __future__ import annotations

from pytest_aiohttp import AiohttpClient

from tokenbroker.config import Settings
from tokenbroker.web.app import create_app


async def test_healthz_answers_ok_with_a_request_id(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(settings))
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}
    assert len(response.headers["X-Request-Id"]) == 16


async def test_unknown_path_is_a_json_404_with_the_request_id(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(settings))
    response = await client.get("/nope", headers={"X-Request-Id": "trace-1"})
    assert response.status == 404
    body = await response.json()
    assert body["error"] == "not_found"
    assert body["request_id"] == "trace-1"
    assert response.headers["X-Request-Id"] == "trace-1"
