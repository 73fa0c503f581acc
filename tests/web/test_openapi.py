"""The OpenAPI document describes exactly the routes the app serves."""

from __future__ import annotations

from pytest_aiohttp import AiohttpClient

from tokenbroker.config import Settings
from tokenbroker.web.app import create_app
from tokenbroker.web.routes.openapi import openapi_document


def served_operations(settings: Settings) -> set[tuple[str, str]]:
    app = create_app(settings)
    operations = set()
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        # The console is HTML pages for people, not part of the API the document describes.
        if route.resource.canonical.startswith("/console"):
            continue
        operations.add((route.resource.canonical, route.method.lower()))
    return operations


def documented_operations() -> set[tuple[str, str]]:
    paths = openapi_document()["paths"]
    assert isinstance(paths, dict)
    return {
        (path, method)
        for path, item in paths.items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    }


def test_every_served_route_is_documented_and_nothing_else(settings: Settings) -> None:
    assert served_operations(settings) == documented_operations()


async def test_openapi_json_is_served_as_3_1(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(settings))
    response = await client.get("/openapi.json")
    document = await response.json()
    assert response.status == 200
    assert document["openapi"] == "3.1.0"
    create = document["paths"]["/v1/admin/organizations"]["post"]
    assert (
        "platform_org_id"
        in create["requestBody"]["content"]["application/json"]["schema"]["properties"]
    )
