"""The server answers policy lookups from memory, yet an admin change applies to the very next
exchange on the same instance, and one made by another instance shows after its poll."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from tests.support.broker import one_org_settings
from tests.support.platform import ServedDevIssuer
from tokenbroker.backends.registry import INSTALLED
from tokenbroker.store import Store
from tokenbroker.web import keys
from tokenbroker.web.admin.auth import admin_token_digest
from tokenbroker.web.app import create_app

ADMIN_TOKEN = "admin-token-for-freshness-tests-0123"
ORG = "66a38abf-69bc-4cb7-ad73-7f61e389079f"
PROJECT = "5b44fa6d-ecfd-40ab-8e69-14d6fe7c638c"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ASSIGNMENT = f"/v1/admin/organizations/acme/projects/{PROJECT}/credentials/vault"


async def dry_run(
    client: TestClient[web.Request, web.Application], issuer: ServedDevIssuer
) -> tuple[bool, str | None]:
    """(allowed, reason) of a dry-run exchange with a fresh token for acme's project."""
    token = issuer.mint("env0", org=ORG, project=PROJECT)
    response = await client.post(
        "/v1/exchange?dry_run=true",
        json={"credential": "vault"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status == 200
    trace = await response.json()
    return trace["allowed"], trace.get("reason")


async def test_admin_changes_apply_to_the_next_exchange_and_other_instances_after_a_poll(
    tmp_path: Path, dev_issuer: ServedDevIssuer, aiohttp_client: AiohttpClient
) -> None:
    vault = {
        "organization": "acme",
        "name": "vault",
        "type": "vault_oidc",
        "settings": {"address": "https://vault.example.com", "role": "ci"},
    }
    settings = one_org_settings(
        tmp_path,
        dev_issuer.issuer_settings("env0"),
        [vault],
        org=ORG,
        project=PROJECT,
        admin={"tokens": [admin_token_digest(ADMIN_TOKEN)]},
    )
    client = await aiohttp_client(create_app(settings))
    store = client.server.app[keys.STORE]
    await store.policy.check_revision()  # the watcher's first poll, without waiting for it
    assert await dry_run(client, dev_issuer) == (True, None)
    assert await dry_run(client, dev_issuer) == (True, None)  # answered from memory

    response = await client.delete(ASSIGNMENT, headers=ADMIN)
    assert response.status == 204
    assert await dry_run(client, dev_issuer) == (False, "project_not_assigned")

    response = await client.put(ASSIGNMENT, headers=ADMIN)
    assert response.status in (200, 201)
    assert await dry_run(client, dev_issuer) == (True, None)

    # Another instance (its own Store on the same database) takes the assignment away.
    other = await Store.open(
        settings.store.resolved_url(settings.server.data_dir), credential_types=INSTALLED
    )
    try:
        await other.policy.unassign("acme", PROJECT, "vault")
    finally:
        await other.close()
    await store.policy.check_revision()
    assert await dry_run(client, dev_issuer) == (False, "project_not_assigned")
