"""The OpenAPI document describes exactly the routes the app serves."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import jsonschema_rs
import pytest
from pytest_aiohttp import AiohttpClient
from tests.web.admin.conftest import VAULT_SETTINGS, Admin, admin_settings_dict

from tokenbroker.config import Settings, parse_settings
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
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/OrganizationCreate"}
    assert (
        "platform_org_id" in document["components"]["schemas"]["OrganizationCreate"]["properties"]
    )


# Inputs the app refuses are inputs the document refuses: its schemas carry the app's rules.


def operation(path: str, method: str) -> dict[str, Any]:
    paths = openapi_document()["paths"]
    assert isinstance(paths, dict)
    found: dict[str, Any] = paths[path][method]
    return found


def path_parameter_schema(path: str, name: str) -> dict[str, Any]:
    paths = openapi_document()["paths"]
    assert isinstance(paths, dict)
    [found] = [p["schema"] for p in paths[path]["parameters"] if p["name"] == name]
    return cast(dict[str, Any], found)


def accepts(schema: dict[str, Any], value: object) -> bool:
    return bool(jsonschema_rs.validator_for(schema).is_valid(value))


async def test_a_credential_name_over_128_characters_is_refused_by_document_and_app(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    body = operation("/v1/exchange", "post")["requestBody"]["content"]["application/json"]
    too_long = {"credential": "c" * 129}
    assert accepts(body["schema"], {"credential": "c" * 128})
    assert not accepts(body["schema"], too_long)
    client = await aiohttp_client(create_app(settings))
    reply = await client.post(
        "/v1/exchange", json=too_long, headers={"Authorization": "Bearer not-checked-yet"}
    )
    assert reply.status == 400


async def test_an_empty_subject_token_is_refused_by_document_and_app(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    body = operation("/oauth2/token", "post")["requestBody"]["content"]
    form = {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": "",
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
    }
    assert not accepts(body["application/x-www-form-urlencoded"]["schema"], form)
    client = await aiohttp_client(create_app(settings))
    reply = await client.post("/oauth2/token", data=form)
    assert (reply.status, (await reply.json())["reason"]) == (400, "subject_token_missing")


async def test_a_project_with_a_control_character_is_refused_by_document_and_app(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    path = "/v1/admin/organizations/{org}/projects/{project}/credentials/{credential}"
    project = path_parameter_schema(path, "project")
    assert accepts(project, "5b44fa6d-ecfd-40ab-8e69-14d6fe7c638c")
    assert not accepts(project, "project\x01")
    admin = Admin(
        await aiohttp_client(create_app(parse_settings(admin_settings_dict(tmp_path), {})))
    )
    await admin.create_org()
    await admin.create_vault()
    reply = await admin.put("/organizations/acme/projects/project%01/credentials/prod-vault")
    assert (reply.status, reply.fields) == (422, ["project"])


@pytest.mark.parametrize("kind", ["organization", "credential"])
async def test_a_name_ending_in_a_newline_is_refused_by_document_and_app(
    aiohttp_client: AiohttpClient, tmp_path: Path, kind: str
) -> None:
    # Python's "$" matches before a final newline: such a name was stored, and the 201's
    # Location header carrying it made the server drop the connection.
    name = path_parameter_schema("/v1/admin/organizations/{name}", "name")
    assert accepts(name, "acme")
    assert not accepts(name, "acme\n")
    admin = Admin(
        await aiohttp_client(create_app(parse_settings(admin_settings_dict(tmp_path), {})))
    )
    await admin.create_org()
    if kind == "organization":
        body = {"name": "beta\n", "issuer": "env0", "platform_org_id": "org-beta"}
        reply = await admin.post("/organizations", body)
    else:
        body = {"name": "v\n", "type": "vault_oidc", "settings": VAULT_SETTINGS}
        reply = await admin.post("/organizations/acme/credentials", body)
    assert (reply.status, reply.fields) == (422, ["name"])
