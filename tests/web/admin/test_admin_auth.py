"""The admin API admits only bearers of a configured admin token."""

from __future__ import annotations

from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient

from tokenbroker.config import parse_settings
from tokenbroker.web.admin.auth import admin_token_digest, admin_token_matches
from tokenbroker.web.app import create_app

from .conftest import ADMIN_TOKEN, SECOND_ADMIN_TOKEN, Admin, admin_settings_dict


async def test_a_request_without_a_token_is_401_unauthorized(admin: Admin) -> None:
    reply = await admin.get("/organizations", token=None)
    assert reply.status == 401
    assert reply.json["error"] == "unauthorized"
    assert reply.json["reason"] == "admin_token_required"
    assert reply.json["request_id"] == reply.headers["X-Request-Id"]


@pytest.mark.parametrize(
    "header", ["Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer    ", ADMIN_TOKEN, "Token abc"]
)
async def test_an_authorization_header_without_a_bearer_token_is_401(
    admin: Admin, header: str
) -> None:
    reply = await admin.call("GET", "/organizations", token=None, headers={"Authorization": header})
    assert reply.status == 401
    assert reply.json["reason"] == "admin_token_required"


async def test_a_wrong_token_is_403_forbidden_and_not_echoed(admin: Admin) -> None:
    reply = await admin.get("/organizations", token="not-the-admin-token")
    assert reply.status == 403
    assert reply.json["error"] == "forbidden"
    assert reply.json["reason"] == "admin_token_invalid"
    assert "not-the-admin-token" not in str(reply.body)


async def test_the_configured_digest_itself_is_not_a_token(admin: Admin) -> None:
    reply = await admin.get("/organizations", token=admin_token_digest(ADMIN_TOKEN))
    assert reply.status == 403


@pytest.mark.parametrize("token", [ADMIN_TOKEN, SECOND_ADMIN_TOKEN])
async def test_every_configured_token_is_accepted(admin: Admin, token: str) -> None:
    reply = await admin.get("/organizations", token=token)
    assert reply.status == 200
    assert reply.json == {"organizations": []}


async def test_the_scheme_is_case_insensitive(admin: Admin) -> None:
    reply = await admin.call(
        "GET", "/organizations", token=None, headers={"Authorization": f"bearer {ADMIN_TOKEN}"}
    )
    assert reply.status == 200


async def test_authentication_comes_before_validation(admin: Admin) -> None:
    reply = await admin.call("POST", "/organizations", data="{not json", token=None)
    assert reply.status == 401


async def test_with_no_admin_tokens_configured_every_token_is_forbidden(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    raw = admin_settings_dict(tmp_path)
    raw["admin"] = {"tokens": []}
    admin = Admin(await aiohttp_client(create_app(parse_settings(raw, {}))))
    reply = await admin.get("/organizations")
    assert reply.status == 403


async def test_admin_routes_outside_the_sub_app_are_not_reachable_without_the_prefix(
    admin: Admin,
) -> None:
    response = await admin.client.get(
        "/organizations", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert response.status == 404


def test_token_matching_compares_sha256_digests() -> None:
    configured = [admin_token_digest("a"), admin_token_digest("b")]
    assert configured[0] == (
        "sha256:ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
    )
    assert admin_token_matches("a", configured)
    assert admin_token_matches("b", configured)
    assert not admin_token_matches("c", configured)
    assert not admin_token_matches("a", [])
    assert not admin_token_matches(configured[0], configured)


@pytest.mark.parametrize(("method", "path"), [("GET", "/nothing"), ("PUT", "/organizations")])
async def test_unknown_paths_and_methods_need_the_token_too(
    admin: Admin, method: str, path: str
) -> None:
    # Nothing about the admin route table is told to a caller without the token.
    reply = await admin.call(method, path, token=None)
    assert reply.status == 401
