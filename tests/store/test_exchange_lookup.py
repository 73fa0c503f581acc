"""The exchange's one-statement lookup: organization and assigned credentials together."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.store.helpers import VAULT_SETTINGS
from tokenbroker.backends.registry import INSTALLED
from tokenbroker.policy.models import AuditEvent, Organization
from tokenbroker.store import Store


@pytest.fixture
async def assigned(store: Store, acme: Organization) -> None:
    """acme's project-1 has dev-vault and prod-vault; project-2 has ops-vault."""
    for name in ("prod-vault", "dev-vault", "ops-vault"):
        await store.policy.create_credential("acme", name, "vault_oidc", settings=VAULT_SETTINGS)
    await store.policy.assign("acme", "project-1", "prod-vault")
    await store.policy.assign("acme", "project-1", "dev-vault")
    await store.policy.assign("acme", "project-2", "ops-vault")


@pytest.mark.usefixtures("assigned")
async def test_the_lookup_gives_the_organization_and_the_projects_credentials_by_name(
    store: Store, acme: Organization
) -> None:
    organization, credentials = await store.policy.find_organization_assignments(
        "env0", "org-uuid-1", "project-1"
    )
    assert organization == acme
    assert credentials == await store.policy.assigned_credentials(acme.id, "project-1")
    assert [c.name for c in credentials] == ["dev-vault", "prod-vault"]


@pytest.mark.usefixtures("assigned")
async def test_a_project_without_assignments_gives_the_organization_and_no_credentials(
    store: Store, acme: Organization
) -> None:
    assert await store.policy.find_organization_assignments("env0", "org-uuid-1", "project-9") == (
        acme,
        [],
    )
    assert await store.policy.find_organization_assignments("env0", "org-uuid-1", None) == (
        acme,
        [],
    )


@pytest.mark.usefixtures("assigned")
async def test_an_unknown_organization_gives_nothing(store: Store) -> None:
    assert await store.policy.find_organization_assignments("env0", "org-uuid-2", "project-1") == (
        None,
        [],
    )
    assert await store.policy.find_organization_assignments(
        "github", "org-uuid-1", "project-1"
    ) == (
        None,
        [],
    )


@pytest.mark.usefixtures("assigned")
async def test_another_organizations_assignments_are_not_given(store: Store) -> None:
    await store.policy.create_organization("other", "env0", "org-uuid-2")
    await store.policy.create_credential(
        "other", "other-vault", "vault_oidc", settings=VAULT_SETTINGS
    )
    await store.policy.assign("other", "project-1", "other-vault")
    other, credentials = await store.policy.find_organization_assignments(
        "env0", "org-uuid-2", "project-1"
    )
    assert other is not None
    assert other.name == "other"
    assert [(c.organization, c.name) for c in credentials] == [("other", "other-vault")]


@pytest.mark.usefixtures("assigned")
async def test_nul_in_a_claim_matches_nothing(store: Store, acme: Organization) -> None:
    assert await store.policy.find_organization_assignments("env0", "org-uuid-1", "proj\x00") == (
        acme,
        [],
    )
    assert await store.policy.find_organization_assignments("env0", "org\x00", "project-1") == (
        None,
        [],
    )


async def test_a_recorded_audit_event_is_committed_and_seen_by_another_connection(
    store_url: str, store: Store
) -> None:
    event = AuditEvent(
        time=datetime.now(UTC),
        request_id="req-1",
        outcome="success",
        reason="issued",
        latency_ms=1.5,
        issuer="env0",
        organization="acme",
        project="project-1",
        subject="sub",
        credential="prod-vault",
        credential_type="vault_oidc",
        token_fingerprint="f" * 64,
        client_address="127.0.0.1",
    )
    await store.audit.record(event)
    other = await Store.open(store_url, credential_types=INSTALLED)
    try:
        (seen,) = await other.audit.events()
    finally:
        await other.close()
    assert (seen.request_id, seen.reason, seen.credential) == ("req-1", "issued", "prod-vault")
