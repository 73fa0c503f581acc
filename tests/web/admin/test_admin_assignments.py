"""Assignments through the admin API: credentials made available to projects."""

from __future__ import annotations

import pytest

from .conftest import Admin

ORG = "/organizations/acme"


@pytest.fixture
async def acme(admin: Admin) -> Admin:
    """``acme`` with credentials ``prod-vault`` and ``dev-vault``."""
    await admin.create_org()
    await admin.create_vault("prod-vault")
    await admin.create_vault("dev-vault")
    return admin


async def test_assigning_returns_the_assignment_and_is_idempotent(acme: Admin) -> None:
    first = await acme.put(f"{ORG}/projects/p1/credentials/prod-vault")
    assert first.status == 200, first.body
    assert first.json == {"organization": "acme", "project": "p1", "credential": "prod-vault"}
    again = await acme.put(f"{ORG}/projects/p1/credentials/prod-vault")
    assert again.status == 200
    assert len(await acme.store.policy.list_assignments("acme")) == 1


async def test_a_project_lists_its_credentials_in_full(acme: Admin) -> None:
    await acme.put(f"{ORG}/projects/p1/credentials/prod-vault")
    await acme.put(f"{ORG}/projects/p1/credentials/dev-vault")
    await acme.put(f"{ORG}/projects/p2/credentials/prod-vault")
    reply = await acme.get(f"{ORG}/projects/p1/credentials")
    assert reply.status == 200
    assert reply.json["organization"] == "acme"
    assert reply.json["project"] == "p1"
    credentials = reply.json["credentials"]
    assert isinstance(credentials, list)
    assert [(c["name"], c["type"]) for c in credentials] == [
        ("dev-vault", "vault_oidc"),
        ("prod-vault", "vault_oidc"),
    ]


async def test_a_project_with_nothing_assigned_lists_nothing(acme: Admin) -> None:
    reply = await acme.get(f"{ORG}/projects/empty/credentials")
    assert reply.status == 200
    assert reply.json["credentials"] == []


async def test_an_organization_lists_its_assignments_optionally_by_project(acme: Admin) -> None:
    await acme.put(f"{ORG}/projects/p2/credentials/prod-vault")
    await acme.put(f"{ORG}/projects/p1/credentials/prod-vault")
    await acme.put(f"{ORG}/projects/p1/credentials/dev-vault")
    everything = await acme.get(f"{ORG}/assignments")
    assert everything.status == 200
    assert everything.json == {
        "assignments": [
            {"organization": "acme", "project": "p1", "credential": "dev-vault"},
            {"organization": "acme", "project": "p1", "credential": "prod-vault"},
            {"organization": "acme", "project": "p2", "credential": "prod-vault"},
        ]
    }
    only_p2 = await acme.get(f"{ORG}/assignments?project=p2")
    assert only_p2.json == {
        "assignments": [{"organization": "acme", "project": "p2", "credential": "prod-vault"}]
    }


async def test_unassigning_takes_the_credential_away(acme: Admin) -> None:
    await acme.put(f"{ORG}/projects/p1/credentials/prod-vault")
    await acme.put(f"{ORG}/projects/p1/credentials/dev-vault")
    reply = await acme.delete(f"{ORG}/projects/p1/credentials/prod-vault")
    assert reply.status == 204
    remaining = await acme.store.policy.list_assignments("acme")
    assert [a.credential for a in remaining] == ["dev-vault"]


async def test_a_project_id_with_a_slash_is_a_single_path_segment(acme: Admin) -> None:
    # GitHub's project is "owner/repo": it travels percent-encoded.
    reply = await acme.put(f"{ORG}/projects/acme%2Fapp/credentials/prod-vault")
    assert reply.status == 200, reply.body
    assert reply.json["project"] == "acme/app"
    listed = await acme.get(f"{ORG}/projects/acme%2Fapp/credentials")
    credentials = listed.json["credentials"]
    assert isinstance(credentials, list)
    assert [c["name"] for c in credentials] == ["prod-vault"]
    assert (await acme.get(f"{ORG}/assignments?project=acme%2Fapp")).json["assignments"] == [
        {"organization": "acme", "project": "acme/app", "credential": "prod-vault"}
    ]


async def test_unknown_things_are_404_and_change_nothing(acme: Admin) -> None:
    await acme.put(f"{ORG}/projects/p1/credentials/prod-vault")
    before = await acme.snapshot()
    for reply in (
        await acme.put(f"{ORG}/projects/p1/credentials/nope"),
        await acme.put("/organizations/nope/projects/p1/credentials/prod-vault"),
        await acme.delete(f"{ORG}/projects/p1/credentials/nope"),
        await acme.delete(f"{ORG}/projects/p1/credentials/dev-vault"),
        await acme.delete(f"{ORG}/projects/p9/credentials/prod-vault"),
        await acme.get("/organizations/nope/projects/p1/credentials"),
        await acme.get("/organizations/nope/assignments"),
    ):
        assert reply.status == 404, reply.body
        assert reply.json["error"] == "not_found"
    assert await acme.snapshot() == before


async def test_a_credential_of_another_organization_cannot_be_assigned(acme: Admin) -> None:
    await acme.create_org("other", platform_org_id="org-other")
    await acme.create_vault("theirs", org="other")
    before = await acme.snapshot()
    reply = await acme.put(f"{ORG}/projects/p1/credentials/theirs")
    assert reply.status == 404
    assert await acme.snapshot() == before


@pytest.mark.parametrize(
    "project", ["x" * 257, "tab%09inside", "new%0Aline"], ids=["long", "tab", "newline"]
)
async def test_a_bad_project_id_is_422_and_changes_nothing(acme: Admin, project: str) -> None:
    before = await acme.snapshot()
    reply = await acme.put(f"{ORG}/projects/{project}/credentials/prod-vault")
    assert reply.status == 422, reply.body
    assert reply.fields == ["project"]
    assert await acme.snapshot() == before


@pytest.mark.parametrize(
    ("query", "field"),
    [("?project=", "project"), ("?proj=p1", "proj"), ("?project=a&project=b", "project")],
)
async def test_bad_assignment_filters_are_422(acme: Admin, query: str, field: str) -> None:
    reply = await acme.get(f"{ORG}/assignments{query}")
    assert reply.status == 422
    assert reply.fields == [field]
