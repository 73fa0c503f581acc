"""Organizations through the admin API: create, read, update, delete, list."""

from __future__ import annotations

import pytest

from .conftest import Admin

ACME = {"name": "acme", "issuer": "env0", "platform_org_id": "org-acme"}


async def test_an_organization_is_created_and_shown(admin: Admin) -> None:
    created = await admin.post("/organizations", ACME)
    assert created.status == 201
    assert created.json == ACME
    assert created.headers["Location"] == "/v1/admin/organizations/acme"
    shown = await admin.get("/organizations/acme")
    assert shown.status == 200
    assert shown.json == ACME


async def test_organizations_are_listed_by_name(admin: Admin) -> None:
    await admin.create_org("zeta", platform_org_id="z")
    await admin.create_org("alpha", issuer="circleci", platform_org_id="a")
    reply = await admin.get("/organizations")
    assert reply.status == 200
    assert reply.json == {
        "organizations": [
            {"name": "alpha", "issuer": "circleci", "platform_org_id": "a"},
            {"name": "zeta", "issuer": "env0", "platform_org_id": "z"},
        ]
    }


async def test_an_organization_is_patched_field_by_field(admin: Admin) -> None:
    await admin.create_org()
    reply = await admin.patch("/organizations/acme", {"platform_org_id": "org-new"})
    assert reply.status == 200
    assert reply.json == {"name": "acme", "issuer": "env0", "platform_org_id": "org-new"}
    reply = await admin.patch("/organizations/acme", {"issuer": "circleci"})
    assert reply.json == {"name": "acme", "issuer": "circleci", "platform_org_id": "org-new"}
    assert (await admin.store.policy.get_organization("acme")).issuer == "circleci"


async def test_an_empty_patch_changes_nothing(admin: Admin) -> None:
    await admin.create_org()
    reply = await admin.patch("/organizations/acme", {})
    assert reply.status == 200
    assert reply.json == ACME


async def test_deleting_an_organization_removes_its_credentials_and_assignments(
    admin: Admin,
) -> None:
    await admin.create_org()
    await admin.create_org("other", platform_org_id="org-other")
    await admin.create_vault()
    assert (await admin.put("/organizations/acme/projects/p1/credentials/prod-vault")).status == 200
    reply = await admin.delete("/organizations/acme")
    assert reply.status == 204
    assert reply.body is None
    assert (await admin.get("/organizations/acme")).status == 404
    snapshot = await admin.snapshot()
    assert [o.name for o in snapshot.organizations] == ["other"]  # type: ignore[attr-defined]


async def test_an_unknown_organization_is_404(admin: Admin) -> None:
    for reply in (
        await admin.get("/organizations/nope"),
        await admin.patch("/organizations/nope", {"platform_org_id": "x"}),
        await admin.delete("/organizations/nope"),
    ):
        assert reply.status == 404
        assert reply.json["error"] == "not_found"


async def test_a_duplicate_name_is_409_and_changes_nothing(admin: Admin) -> None:
    await admin.create_org()
    before = await admin.snapshot()
    reply = await admin.post(
        "/organizations", {"name": "acme", "issuer": "circleci", "platform_org_id": "other"}
    )
    assert reply.status == 409
    assert reply.json["error"] == "conflict"
    assert await admin.snapshot() == before


async def test_a_duplicate_issuer_and_platform_org_id_is_409(admin: Admin) -> None:
    await admin.create_org()
    await admin.create_org("beta", platform_org_id="org-beta")
    before = await admin.snapshot()
    assert (
        await admin.post(
            "/organizations", {"name": "gamma", "issuer": "env0", "platform_org_id": "org-acme"}
        )
    ).status == 409
    assert (await admin.patch("/organizations/beta", {"platform_org_id": "org-acme"})).status == 409
    assert await admin.snapshot() == before


# (body, fields named in the 422)
BAD_CREATES: list[tuple[object, list[str]]] = [
    ({}, ["name", "issuer", "platform_org_id"]),
    ({"name": "acme", "issuer": "env0"}, ["platform_org_id"]),
    ({**ACME, "name": ""}, ["name"]),
    ({**ACME, "name": "-leading-dash"}, ["name"]),
    ({**ACME, "name": "has space"}, ["name"]),
    ({**ACME, "name": "slash/inside"}, ["name"]),
    ({**ACME, "name": "x" * 129}, ["name"]),
    ({**ACME, "name": "ünicode"}, ["name"]),
    ({**ACME, "name": 7}, ["name"]),
    ({**ACME, "name": None}, ["name"]),
    ({**ACME, "name": ["acme"]}, ["name"]),
    ({**ACME, "issuer": "github"}, ["issuer"]),
    ({**ACME, "issuer": True}, ["issuer"]),
    ({**ACME, "platform_org_id": ""}, ["platform_org_id"]),
    ({**ACME, "platform_org_id": "x" * 257}, ["platform_org_id"]),
    ({**ACME, "platform_org_id": "tab\there"}, ["platform_org_id"]),
    ({**ACME, "platform_org_id": 12345}, ["platform_org_id"]),
    ({**ACME, "id": 1}, ["id"]),
    ({**ACME, "extra": "field"}, ["extra"]),
    ([ACME], ["body"]),
    ("acme", ["body"]),
    (42, ["body"]),
]


@pytest.mark.parametrize(("body", "fields"), BAD_CREATES)
async def test_a_bad_organization_is_422_naming_each_field_and_changes_nothing(
    admin: Admin, body: object, fields: list[str]
) -> None:
    before = await admin.snapshot()
    reply = await admin.post("/organizations", body)
    assert reply.status == 422, reply.body
    assert reply.json["error"] == "invalid_request"
    assert sorted(reply.fields) == sorted(fields)
    assert await admin.snapshot() == before


BAD_PATCHES: list[tuple[object, list[str]]] = [
    ({"issuer": None}, ["issuer"]),
    ({"platform_org_id": None}, ["platform_org_id"]),
    ({"issuer": "nope"}, ["issuer"]),
    ({"platform_org_id": ""}, ["platform_org_id"]),
    ({"name": "renamed"}, ["name"]),
    ({"platform_org_id": 5}, ["platform_org_id"]),
    ([], ["body"]),
]


@pytest.mark.parametrize(("body", "fields"), BAD_PATCHES)
async def test_a_bad_organization_patch_is_422_and_changes_nothing(
    admin: Admin, body: object, fields: list[str]
) -> None:
    await admin.create_org()
    before = await admin.snapshot()
    reply = await admin.patch("/organizations/acme", body)
    assert reply.status == 422, reply.body
    assert reply.fields == fields
    assert await admin.snapshot() == before


@pytest.mark.parametrize("raw", ["{", "{'name': 'acme'}", "", "   ", "NaN", '{"a": NaN}', "\xff"])
async def test_a_body_that_is_not_json_is_400(admin: Admin, raw: str) -> None:
    before = await admin.snapshot()
    reply = await admin.call("POST", "/organizations", data=raw.encode("latin-1"))
    assert reply.status == 400
    assert reply.json["error"] == "invalid_request"
    assert reply.json["reason"] == "malformed_json"
    assert await admin.snapshot() == before


async def test_a_body_over_the_size_limit_is_413(admin: Admin) -> None:
    reply = await admin.post("/organizations", {**ACME, "padding": "x" * 200_000})
    assert reply.status == 413
    assert reply.json["error"] == "payload_too_large"
    assert (await admin.snapshot()).organizations == []


async def test_a_deeply_nested_body_is_refused_not_crashed(admin: Admin) -> None:
    reply = await admin.call("POST", "/organizations", data="[" * 20_000 + "]" * 20_000)
    assert reply.status == 400
    assert reply.json["reason"] == "malformed_json"


async def test_an_unsupported_method_is_405_json(admin: Admin) -> None:
    reply = await admin.call("PUT", "/organizations")
    assert reply.status == 405
    assert reply.json["error"] == "invalid_request"


async def test_an_unknown_admin_path_is_a_json_404(admin: Admin) -> None:
    reply = await admin.get("/nothing-here")
    assert reply.status == 404
    assert reply.json["error"] == "not_found"
