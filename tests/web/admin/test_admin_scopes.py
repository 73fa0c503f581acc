"""Org-scoped admin tokens see and change only their organizations; all else is 404."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient

from tokenbroker.config import parse_settings
from tokenbroker.store.leases import Claimed, Lease
from tokenbroker.web.admin.auth import admin_token_digest
from tokenbroker.web.app import create_app

from .conftest import ADMIN_TOKEN, Admin, admin_settings_dict

ACME_ADMIN_TOKEN = "acme-admin-token-for-tests-0123456"
NAMED_ADMIN_TOKEN = "named-global-admin-token-for-tests"


@pytest.fixture
async def admins(aiohttp_client: AiohttpClient, tmp_path: Path) -> Admin:
    """An app with a global admin, a named global admin and an admin of ``acme`` only; the
    global admin has made ``acme`` and ``beta``, each with a credential assigned to p1."""
    raw = admin_settings_dict(tmp_path)
    raw["admin"] = {
        "tokens": [admin_token_digest(ADMIN_TOKEN)],
        "named_tokens": [{"name": "ops", "hash": admin_token_digest(NAMED_ADMIN_TOKEN)}],
        "org_tokens": [
            {
                "name": "acme-team",
                "hash": admin_token_digest(ACME_ADMIN_TOKEN),
                "organizations": ["acme", "acme-staging"],
            }
        ],
    }
    admin = Admin(await aiohttp_client(create_app(parse_settings(raw, {}))))
    for org, platform_id in (("acme", "org-acme"), ("beta", "org-beta")):
        await admin.create_org(org, platform_org_id=platform_id)
        await admin.create_vault("vault", org=org)
        assert (
            await admin.put(f"/organizations/{org}/projects/p1/credentials/vault")
        ).status == 200
    return admin


async def test_an_org_admin_lists_only_its_organizations(admins: Admin) -> None:
    reply = await admins.get("/organizations", token=ACME_ADMIN_TOKEN)
    assert reply.status == 200
    assert [o["name"] for o in reply.json["organizations"]] == ["acme"]  # type: ignore[union-attr]


async def test_a_global_admin_lists_every_organization(admins: Admin) -> None:
    for token in (ADMIN_TOKEN, NAMED_ADMIN_TOKEN):
        reply = await admins.get("/organizations", token=token)
        names = [o["name"] for o in reply.json["organizations"]]  # type: ignore[union-attr]
        assert names == ["acme", "beta"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/organizations/beta"),
        ("PATCH", "/organizations/beta"),
        ("DELETE", "/organizations/beta"),
        ("GET", "/organizations/beta/credentials"),
        ("POST", "/organizations/beta/credentials"),
        ("GET", "/organizations/beta/credentials/vault"),
        ("PATCH", "/organizations/beta/credentials/vault"),
        ("DELETE", "/organizations/beta/credentials/vault"),
        ("GET", "/organizations/beta/projects/p1/credentials"),
        ("PUT", "/organizations/beta/projects/p1/credentials/vault"),
        ("DELETE", "/organizations/beta/projects/p1/credentials/vault"),
        ("GET", "/organizations/beta/assignments"),
        ("GET", "/audit?organization=beta"),
    ],
)
async def test_another_organization_is_404_exactly_like_a_missing_one(
    admins: Admin, method: str, path: str
) -> None:
    # Valid bodies: a body's shape is checked (422) before any organization is looked up.
    body: dict[str, object] | None = None
    if method == "PATCH":
        body = {"token": "passthrough"} if "credentials" in path else {"platform_org_id": "x"}
    if method == "POST":
        body = {"name": "new", "type": "vault_oidc", "settings": {}}
    outside = await admins.call(method, path, json=body, token=ACME_ADMIN_TOKEN)
    missing = await admins.call(
        method, path.replace("beta", "nowhere"), json=body, token=ACME_ADMIN_TOKEN
    )
    assert outside.status == 404, outside.body
    assert outside.json["reason"] == missing.json["reason"] == "organization_not_found"
    assert outside.json["error_description"] == "no organization named 'beta'"
    assert missing.json["error_description"] == "no organization named 'nowhere'"


async def test_an_org_admin_changes_nothing_outside_its_scope(admins: Admin) -> None:
    before = await admins.snapshot()
    await admins.call("DELETE", "/organizations/beta", token=ACME_ADMIN_TOKEN)
    await admins.call(
        "DELETE", "/organizations/beta/projects/p1/credentials/vault", token=ACME_ADMIN_TOKEN
    )
    await admins.post(
        "/organizations",
        {"name": "beta2", "issuer": "env0", "platform_org_id": "x"},
        token=ACME_ADMIN_TOKEN,
    )
    assert await admins.snapshot() == before


async def test_an_org_admin_manages_its_own_organization(admins: Admin) -> None:
    reply = await admins.post(
        "/organizations/acme/credentials",
        {
            "name": "second",
            "type": "vault_oidc",
            "settings": {"address": "https://vault.example.com", "role": "ci"},
        },
        token=ACME_ADMIN_TOKEN,
    )
    assert reply.status == 201, reply.body
    reply = await admins.put(
        "/organizations/acme/projects/p2/credentials/second", token=ACME_ADMIN_TOKEN
    )
    assert reply.status == 200
    created = await admins.post(
        "/organizations",
        {"name": "acme-staging", "issuer": "env0", "platform_org_id": "org-acme-staging"},
        token=ACME_ADMIN_TOKEN,
    )
    assert created.status == 201, created.body


async def test_an_org_admin_reads_only_its_organizations_audit_events(admins: Admin) -> None:
    everything = await admins.get("/audit")
    orgs = {e["organization"] for e in everything.json["events"]}  # type: ignore[union-attr]
    assert orgs == {"acme", "beta"}
    scoped = await admins.get("/audit", token=ACME_ADMIN_TOKEN)
    seen = {e["organization"] for e in scoped.json["events"]}  # type: ignore[union-attr]
    assert seen == {"acme"}


async def test_an_org_admin_cannot_list_or_revoke_another_organizations_leases(
    admins: Admin,
) -> None:
    listed = await admins.get("/leases?organization=beta", token=ACME_ADMIN_TOKEN)
    assert listed.status == 404
    assert listed.json["reason"] == "organization_not_found"
    own = await admins.get("/leases?organization=acme", token=ACME_ADMIN_TOKEN)
    assert own.status == 200
    assert own.json["leases"] == []
    revoked = await admins.post("/leases/lse_unknown/revoke", {}, token=ACME_ADMIN_TOKEN)
    assert revoked.status == 404


async def test_an_org_admin_neither_sees_nor_revokes_a_lease_of_another_organization(
    admins: Admin,
) -> None:
    beta_vault = await admins.store.policy.get_credential("beta", "vault")
    now = datetime.now(UTC)
    lease = Lease(
        id="lse_beta_0001",
        organization="beta",
        project="p1",
        credential="vault",
        credential_id=beta_vault.id,
        credential_version="v1",
        credential_type="vault_oidc",
        issuer="env0",
        subject="s",
        job="job-1",
        state="pending",
        issued_at=now,
        request_id="r1",
        token_fingerprint="sha256:" + "cd" * 32,
        reuse_slot="slot-beta-1",
    )
    assert isinstance(await admins.store.leases.claim(lease, now, stale_after=60), Claimed)
    everything = await admins.get("/leases")
    assert [x["id"] for x in everything.json["leases"]] == ["lse_beta_0001"]  # type: ignore[union-attr]
    scoped = await admins.get("/leases", token=ACME_ADMIN_TOKEN)
    assert scoped.json["leases"] == []
    refused = await admins.post("/leases/lse_beta_0001/revoke", {}, token=ACME_ADMIN_TOKEN)
    assert refused.status == 404
    assert (await admins.store.leases.get("lse_beta_0001")).state == "pending"  # type: ignore[union-attr]
