"""Assignments: (organization, project) -> credentials, and the exchange's lookup."""

from __future__ import annotations

import asyncio

import pytest

from tests.store.helpers import VAULT_SETTINGS, snapshot
from tokenbroker.errors import NotFound, UnprocessableEntity
from tokenbroker.policy.models import CredentialAssignment, Organization
from tokenbroker.store import Store


@pytest.fixture
async def vaults(store: Store, acme: Organization) -> None:
    """Three vault credentials in acme."""
    for name in ("prod-vault", "dev-vault", "ops-vault"):
        await store.policy.create_credential("acme", name, "vault_oidc", settings=VAULT_SETTINGS)


@pytest.mark.usefixtures("vaults")
async def test_assigning_twice_is_the_same_as_once(store: Store) -> None:
    first = await store.policy.assign("acme", "project-1", "prod-vault")
    second = await store.policy.assign("acme", "project-1", "prod-vault")
    assert first == second == CredentialAssignment("acme", "project-1", "prod-vault")
    assert await store.policy.list_assignments("acme") == [first]


@pytest.mark.usefixtures("vaults")
async def test_assigned_credentials_are_those_of_the_project_by_name(
    store: Store, acme: Organization
) -> None:
    await store.policy.assign("acme", "project-1", "prod-vault")
    await store.policy.assign("acme", "project-1", "dev-vault")
    await store.policy.assign("acme", "project-2", "ops-vault")
    assigned = await store.policy.assigned_credentials(acme.id, "project-1")
    assert [c.name for c in assigned] == ["dev-vault", "prod-vault"]
    assert assigned[0] == await store.policy.get_credential("acme", "dev-vault")
    assert await store.policy.assigned_credentials(acme.id, "project-3") == []


@pytest.mark.usefixtures("vaults")
async def test_assigned_credentials_never_cross_organizations(
    store: Store, acme: Organization
) -> None:
    other = await store.policy.create_organization("other", "env0", "org-uuid-2")
    await store.policy.create_credential(
        "other", "other-vault", "vault_oidc", settings=VAULT_SETTINGS
    )
    await store.policy.assign("other", "project-1", "other-vault")
    await store.policy.assign("acme", "project-1", "prod-vault")
    assert [c.name for c in await store.policy.assigned_credentials(acme.id, "project-1")] == [
        "prod-vault"
    ]
    assert [c.name for c in await store.policy.assigned_credentials(other.id, "project-1")] == [
        "other-vault"
    ]


@pytest.mark.usefixtures("vaults")
async def test_assignments_are_listed_per_project_or_all(store: Store) -> None:
    await store.policy.assign("acme", "project-2", "ops-vault")
    await store.policy.assign("acme", "project-1", "prod-vault")
    await store.policy.assign("acme", "project-1", "dev-vault")
    assert [(a.project, a.credential) for a in await store.policy.list_assignments("acme")] == [
        ("project-1", "dev-vault"),
        ("project-1", "prod-vault"),
        ("project-2", "ops-vault"),
    ]
    assert [a.credential for a in await store.policy.list_assignments("acme", "project-2")] == [
        "ops-vault"
    ]


@pytest.mark.usefixtures("vaults")
async def test_unassign_removes_one_assignment(store: Store) -> None:
    await store.policy.assign("acme", "project-1", "prod-vault")
    await store.policy.assign("acme", "project-1", "dev-vault")
    await store.policy.unassign("acme", "project-1", "prod-vault")
    assert [a.credential for a in await store.policy.list_assignments("acme")] == ["dev-vault"]


@pytest.mark.usefixtures("vaults")
async def test_unassigning_what_is_not_assigned_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound) as caught:
        await store.policy.unassign("acme", "project-1", "prod-vault")
    assert caught.value.reason == "assignment_not_found"


@pytest.mark.usefixtures("vaults")
async def test_assigning_an_unknown_credential_is_not_found_and_changes_nothing(
    store: Store,
) -> None:
    before = await snapshot(store)
    with pytest.raises(NotFound) as caught:
        await store.policy.assign("acme", "project-1", "nope")
    assert caught.value.reason == "credential_not_found"
    with pytest.raises(NotFound) as caught:
        await store.policy.assign("nope", "project-1", "prod-vault")
    assert caught.value.reason == "organization_not_found"
    assert await snapshot(store) == before


@pytest.mark.usefixtures("vaults")
@pytest.mark.parametrize("project", ["", "x" * 257, "tab\there"])
async def test_invalid_project_id_is_a_422(store: Store, project: str) -> None:
    with pytest.raises(UnprocessableEntity) as caught:
        await store.policy.assign("acme", project, "prod-vault")
    assert caught.value.details["fields"] == [
        {"field": "project", "message": caught.value.details["fields"][0]["message"]}  # type: ignore[index]
    ]
    assert await store.policy.list_assignments("acme") == []


@pytest.mark.usefixtures("vaults")
async def test_assign_many_adds_only_new_pairs(store: Store) -> None:
    await store.policy.assign("acme", "project-1", "prod-vault")
    added = await store.policy.assign_many(
        "acme", [("project-1", "prod-vault"), ("project-1", "dev-vault"), ("p-2", "ops-vault")]
    )
    assert added == 2
    assert len(await store.policy.list_assignments("acme")) == 3


@pytest.mark.usefixtures("vaults")
async def test_assign_many_with_one_unknown_credential_adds_nothing(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.policy.assign_many("acme", [("project-1", "prod-vault"), ("project-1", "nope")])
    assert await store.policy.list_assignments("acme") == []


@pytest.mark.usefixtures("vaults")
async def test_concurrent_writers_all_land_and_the_same_assignment_lands_once(
    store: Store,
) -> None:
    projects = [f"project-{index}" for index in range(10)]
    await asyncio.gather(
        *(store.policy.assign("acme", project, "prod-vault") for project in projects),
        *(store.policy.assign("acme", "shared", "dev-vault") for _ in range(10)),
    )
    assignments = await store.policy.list_assignments("acme")
    assert len(assignments) == 11
