"""Organizations: create, read, update, delete, and the (issuer, platform org id) lookup."""

from __future__ import annotations

import pytest

from tests.store.helpers import VAULT_SETTINGS, snapshot
from tokenbroker.errors import Conflict, NotFound, UnprocessableEntity
from tokenbroker.policy.models import Organization
from tokenbroker.store import Store


async def test_created_organization_can_be_read_back(store: Store) -> None:
    created = await store.policy.create_organization("acme", "env0", "org-uuid-1")
    assert created.name == "acme"
    assert await store.policy.get_organization("acme") == created


async def test_organizations_are_listed_by_name(store: Store) -> None:
    await store.policy.create_organization("zeta", "env0", "z")
    await store.policy.create_organization("alpha", "env0", "a")
    assert [o.name for o in await store.policy.list_organizations()] == ["alpha", "zeta"]


async def test_duplicate_organization_name_is_a_conflict(store: Store, acme: Organization) -> None:
    with pytest.raises(Conflict) as caught:
        await store.policy.create_organization("acme", "github", "other")
    assert caught.value.reason == "organization_exists"


async def test_same_issuer_and_platform_org_id_twice_is_a_conflict(
    store: Store, acme: Organization
) -> None:
    before = await snapshot(store)
    with pytest.raises(Conflict):
        await store.policy.create_organization("acme-2", "env0", "org-uuid-1")
    assert await snapshot(store) == before


async def test_unknown_organization_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound) as caught:
        await store.policy.get_organization("nope")
    assert caught.value.reason == "organization_not_found"


@pytest.mark.parametrize(
    ("name", "issuer", "platform_org_id", "field"),
    [
        ("", "env0", "x", "name"),
        ("-starts-with-dash", "env0", "x", "name"),
        ("has space", "env0", "x", "name"),
        ("a" * 129, "env0", "x", "name"),
        ("acme", "bad issuer", "x", "issuer"),
        ("acme", "env0", "", "platform_org_id"),
        ("acme", "env0", "x" * 257, "platform_org_id"),
        ("acme", "env0", "line\nbreak", "platform_org_id"),
    ],
)
async def test_invalid_organization_is_refused_naming_the_field(
    store: Store, name: str, issuer: str, platform_org_id: str, field: str
) -> None:
    with pytest.raises(UnprocessableEntity) as caught:
        await store.policy.create_organization(name, issuer, platform_org_id)
    assert [f["field"] for f in caught.value.details["fields"]] == [field]  # type: ignore[attr-defined]
    assert await store.policy.list_organizations() == []


async def test_find_organization_matches_issuer_and_platform_org_id(
    store: Store, acme: Organization
) -> None:
    assert await store.policy.find_organization("env0", "org-uuid-1") == acme
    assert await store.policy.find_organization("env0", "org-uuid-2") is None
    assert await store.policy.find_organization("github", "org-uuid-1") is None


async def test_update_changes_only_the_given_fields(store: Store, acme: Organization) -> None:
    updated = await store.policy.update_organization("acme", platform_org_id="org-uuid-9")
    assert (updated.issuer, updated.platform_org_id) == ("env0", "org-uuid-9")
    assert await store.policy.get_organization("acme") == updated
    assert await store.policy.find_organization("env0", "org-uuid-1") is None


async def test_update_onto_another_organizations_platform_id_is_a_conflict(
    store: Store, acme: Organization
) -> None:
    await store.policy.create_organization("other", "env0", "org-uuid-2")
    before = await snapshot(store)
    with pytest.raises(Conflict):
        await store.policy.update_organization("other", platform_org_id="org-uuid-1")
    assert await snapshot(store) == before


async def test_update_of_unknown_organization_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.policy.update_organization("nope", issuer="env0")


async def test_deleting_an_organization_removes_its_credentials_and_assignments(
    store: Store, acme: Organization
) -> None:
    await store.policy.create_credential(
        "acme", "prod-vault", "vault_oidc", settings=VAULT_SETTINGS
    )
    await store.policy.assign("acme", "project-1", "prod-vault")
    other = await store.policy.create_organization("other", "env0", "org-uuid-2")
    await store.policy.create_credential(
        "other", "prod-vault", "vault_oidc", settings=VAULT_SETTINGS
    )
    await store.policy.assign("other", "project-1", "prod-vault")

    await store.policy.delete_organization("acme")

    assert [o.name for o in await store.policy.list_organizations()] == ["other"]
    assert await store.policy.assigned_credentials(acme.id, "project-1") == []
    assert [
        c.organization for c in await store.policy.assigned_credentials(other.id, "project-1")
    ] == ["other"]
    # The name is free again, with nothing left over from before.
    await store.policy.create_organization("acme", "env0", "org-uuid-1")
    assert await store.policy.list_credentials("acme") == []
    assert await store.policy.list_assignments("acme") == []


async def test_deleting_an_unknown_organization_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.policy.delete_organization("nope")
