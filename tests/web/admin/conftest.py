"""An app with the admin API over a real SQLite store, and a client that speaks to it."""

from __future__ import annotations

import json as jsonlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict
from pytest_aiohttp import AiohttpClient

from tokenbroker.config import Settings, parse_settings
from tokenbroker.store import Store
from tokenbroker.web import keys
from tokenbroker.web.admin.auth import admin_token_digest
from tokenbroker.web.app import create_app

ADMIN_TOKEN = "admin-token-for-tests-0123456789"
SECOND_ADMIN_TOKEN = "second-admin-token-for-tests-abc"
VAULT_SETTINGS: dict[str, object] = {"address": "https://vault.example.com", "role": "ci"}


def admin_settings_dict(tmp_path: Path) -> dict[str, object]:
    """Settings with two admin tokens and two trusted issuers (never fetched here)."""
    return {
        "server": {"data_dir": str(tmp_path)},
        "admin": {
            "tokens": [admin_token_digest(ADMIN_TOKEN), admin_token_digest(SECOND_ADMIN_TOKEN)]
        },
        "issuers": [
            {
                "name": "env0",
                "issuer": "https://login.example.test/env0",
                "audiences": ["https://prod.env0.com"],
                "profile": "env0",
            },
            {
                "name": "circleci",
                "issuer": "https://oidc.example.test/circleci",
                "audiences": ["org-1"],
                "profile": "circleci",
            },
        ],
    }


@pytest.fixture
def admin_settings(tmp_path: Path) -> Settings:
    """Settings for an app with the admin API enabled."""
    return parse_settings(admin_settings_dict(tmp_path), {})


@dataclass
class Reply:
    """A response: status, JSON body (None for an empty body), headers."""

    status: int
    body: object
    headers: CIMultiDict[str]

    @property
    def json(self) -> dict[str, object]:
        """The body as a JSON object (fails the test if it is not one)."""
        assert isinstance(self.body, dict), self.body
        return self.body

    @property
    def fields(self) -> list[str]:
        """The field names of a 422's field list."""
        fields = self.json["fields"]
        assert isinstance(fields, list)
        return [item["field"] for item in fields]


@dataclass
class Snapshot:
    """Everything the admin API can change, read straight from the store."""

    organizations: list[object]
    credentials: dict[str, list[object]]
    assignments: dict[str, list[object]]


class Admin:
    """A client of the admin API, authenticated unless told otherwise."""

    def __init__(self, client: TestClient[web.Request, web.Application]) -> None:
        self.client = client

    @property
    def store(self) -> Store:
        """The app's store, for arranging data and checking it directly."""
        return self.client.server.app[keys.STORE]

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: object = None,
        data: bytes | str | None = None,
        token: str | None = ADMIN_TOKEN,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """Send a request to ``/v1/admin<path>``; ``json`` is encoded, ``data`` sent as is."""
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if json is not None:
            data = jsonlib.dumps(json)
            sent.setdefault("Content-Type", "application/json")
        response = await self.client.request(method, "/v1/admin" + path, headers=sent, data=data)
        text = await response.text()
        body = jsonlib.loads(text) if text else None
        return Reply(response.status, body, CIMultiDict(response.headers))

    async def get(self, path: str, *, token: str | None = ADMIN_TOKEN) -> Reply:
        """GET."""
        return await self.call("GET", path, token=token)

    async def post(self, path: str, json: object, *, token: str | None = ADMIN_TOKEN) -> Reply:
        """POST a JSON body."""
        return await self.call("POST", path, json=json, token=token)

    async def patch(self, path: str, json: object, *, token: str | None = ADMIN_TOKEN) -> Reply:
        """PATCH a JSON body."""
        return await self.call("PATCH", path, json=json, token=token)

    async def put(self, path: str, *, token: str | None = ADMIN_TOKEN) -> Reply:
        """PUT without a body."""
        return await self.call("PUT", path, token=token)

    async def delete(self, path: str, *, token: str | None = ADMIN_TOKEN) -> Reply:
        """DELETE."""
        return await self.call("DELETE", path, token=token)

    async def snapshot(self) -> Snapshot:
        """The store's whole admin-visible state."""
        orgs = await self.store.policy.list_organizations()
        return Snapshot(
            organizations=list(orgs),
            credentials={
                o.name: list(await self.store.policy.list_credentials(o.name)) for o in orgs
            },
            assignments={
                o.name: list(await self.store.policy.list_assignments(o.name)) for o in orgs
            },
        )

    async def create_org(
        self, name: str = "acme", issuer: str = "env0", platform_org_id: str = "org-acme"
    ) -> None:
        """Arrange an organization through the API."""
        reply = await self.post(
            "/organizations",
            {"name": name, "issuer": issuer, "platform_org_id": platform_org_id},
        )
        assert reply.status == 201, reply.body

    async def create_vault(
        self, name: str = "prod-vault", org: str = "acme", **extra: object
    ) -> None:
        """Arrange a vault_oidc credential through the API."""
        body: dict[str, object] = {"name": name, "type": "vault_oidc", "settings": VAULT_SETTINGS}
        body.update(extra)
        reply = await self.post(f"/organizations/{org}/credentials", body)
        assert reply.status == 201, reply.body


@pytest.fixture
async def admin(aiohttp_client: AiohttpClient, admin_settings: Settings) -> Admin:
    """A running app with an empty store and an authenticated admin client."""
    return Admin(await aiohttp_client(create_app(admin_settings)))
