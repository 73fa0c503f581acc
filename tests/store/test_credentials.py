"""Typed credentials: settings validated by the type's schema, errors naming each field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from tests.store.helpers import VAULT_SETTINGS, snapshot
from tokenbroker.errors import Conflict, NotFound, UnprocessableEntity
from tokenbroker.policy.models import Organization
from tokenbroker.store import Store


def _fields(error: UnprocessableEntity) -> list[str]:
    fields = error.details["fields"]
    assert isinstance(fields, list)
    return [item["field"] for item in fields]


async def test_created_credential_keeps_the_validated_settings(
    store: Store, acme: Organization
) -> None:
    created = await store.policy.create_credential(
        "acme",
        "prod-vault",
        "vault_oidc",
        token="mint",
        audience="https://vault.example.com",
        settings={**VAULT_SETTINGS, "auth_path": "/jwt-env0/"},
        bound_claims={"projectId": "p-1", "/aws/tags": ["a*", "b"]},
    )
    assert created.organization == "acme"
    assert created.token == "mint"
    # Stored as the schema's JSON form: defaults filled in, values normalised.
    assert created.settings["auth_path"] == "jwt-env0"
    assert created.settings["tls_verify"] is True
    assert created.bound_claims == {"projectId": "p-1", "/aws/tags": ["a*", "b"]}
    assert await store.policy.get_credential("acme", "prod-vault") == created


async def test_credentials_are_listed_by_name_per_organization(
    store: Store, acme: Organization
) -> None:
    await store.policy.create_organization("other", "env0", "org-uuid-2")
    for name in ("b-vault", "a-vault"):
        await store.policy.create_credential("acme", name, "vault_oidc", settings=VAULT_SETTINGS)
    await store.policy.create_credential("other", "c-vault", "vault_oidc", settings=VAULT_SETTINGS)
    assert [c.name for c in await store.policy.list_credentials("acme")] == ["a-vault", "b-vault"]


async def test_same_credential_name_twice_in_one_organization_is_a_conflict(
    store: Store, acme: Organization
) -> None:
    await store.policy.create_credential(
        "acme", "prod-vault", "vault_oidc", settings=VAULT_SETTINGS
    )
    with pytest.raises(Conflict) as caught:
        await store.policy.create_credential(
            "acme", "prod-vault", "vault_oidc", settings=VAULT_SETTINGS
        )
    assert caught.value.reason == "credential_exists"


async def test_same_credential_name_in_two_organizations_is_fine(
    store: Store, acme: Organization
) -> None:
    await store.policy.create_organization("other", "env0", "org-uuid-2")
    await store.policy.create_credential(
        "acme", "prod-vault", "vault_oidc", settings=VAULT_SETTINGS
    )
    await store.policy.create_credential(
        "other", "prod-vault", "vault_oidc", settings=VAULT_SETTINGS
    )


async def test_credential_of_unknown_organization_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound) as caught:
        await store.policy.create_credential(
            "nope", "prod-vault", "vault_oidc", settings=VAULT_SETTINGS
        )
    assert caught.value.reason == "organization_not_found"


async def test_unknown_credential_is_not_found(store: Store, acme: Organization) -> None:
    with pytest.raises(NotFound) as caught:
        await store.policy.get_credential("acme", "nope")
    assert caught.value.reason == "credential_not_found"


@pytest.mark.parametrize(
    ("settings", "fields"),
    [
        ({"role": "deploy"}, ["settings.address"]),
        ({**VAULT_SETTINGS, "address": "ftp://vault"}, ["settings.address"]),
        ({**VAULT_SETTINGS, "role": "has space"}, ["settings.role"]),
        ({**VAULT_SETTINGS, "colour": "blue"}, ["settings.colour"]),
        ({"address": 7}, ["settings.address", "settings.role"]),
    ],
)
async def test_invalid_settings_are_a_422_naming_each_field_and_change_nothing(
    store: Store, acme: Organization, settings: Mapping[str, object], fields: list[str]
) -> None:
    before = await snapshot(store)
    with pytest.raises(UnprocessableEntity) as caught:
        await store.policy.create_credential("acme", "prod-vault", "vault_oidc", settings=settings)
    assert _fields(caught.value) == fields
    assert caught.value.status == 422
    assert await snapshot(store) == before


async def test_unknown_credential_type_is_a_422_on_type(store: Store, acme: Organization) -> None:
    with pytest.raises(UnprocessableEntity) as caught:
        await store.policy.create_credential("acme", "x", "no_such_type", settings={})
    assert _fields(caught.value) == ["type"]
    assert "vault_oidc" in str(caught.value.details)


@pytest.mark.parametrize(
    ("kwargs", "fields"),
    [
        ({"name": "bad name"}, ["name"]),
        ({"token": "steal"}, ["token"]),
        ({"token": "mint"}, ["audience"]),
        ({"audience": ""}, ["audience"]),
        ({"bound_claims": {"projectId": 7}}, ["bound_claims.projectId"]),
        ({"bound_claims": {"projectId": []}}, ["bound_claims.projectId"]),
        ({"bound_claims": {"refs": ["a", 1]}}, ["bound_claims.refs"]),
        ({"bound_claims": {"/a~2b": "x"}}, ["bound_claims./a~2b"]),
        ({"bound_claims": ["projectId"]}, ["bound_claims"]),
        ({"bound_claims": {"": "x"}}, ["bound_claims"]),
    ],
)
async def test_invalid_credential_fields_are_a_422_naming_the_field(
    store: Store, acme: Organization, kwargs: dict[str, object], fields: list[str]
) -> None:
    arguments: dict[str, Any] = {"name": "prod-vault", **kwargs}
    name: str = arguments.pop("name")
    with pytest.raises(UnprocessableEntity) as caught:
        await store.policy.create_credential(
            "acme",
            name,
            "vault_oidc",
            settings=VAULT_SETTINGS,
            **arguments,
        )
    assert _fields(caught.value) == fields
    assert await store.policy.list_credentials("acme") == []


async def test_a_literal_claim_name_with_slashes_and_dots_is_a_valid_bound_claim(
    store: Store, acme: Organization
) -> None:
    created = await store.policy.create_credential(
        "acme",
        "circle",
        "vault_oidc",
        settings=VAULT_SETTINGS,
        bound_claims={"oidc.circleci.com/vcs-ref": "refs/heads/main", "/a~1b/c~0d": "x"},
    )
    assert set(created.bound_claims) == {"oidc.circleci.com/vcs-ref", "/a~1b/c~0d"}


async def test_error_descriptions_name_fields_but_never_values(
    store: Store, acme: Organization
) -> None:
    with pytest.raises(UnprocessableEntity) as caught:
        await store.policy.create_credential(
            "acme",
            "x",
            "vault_oidc",
            settings={**VAULT_SETTINGS, "role": "s3cr3t value"},
        )
    assert "s3cr3t" not in caught.value.description
    assert "s3cr3t" not in str(caught.value.details)


async def test_update_changes_only_the_given_fields(store: Store, acme: Organization) -> None:
    created = await store.policy.create_credential(
        "acme", "prod-vault", "vault_oidc", settings=VAULT_SETTINGS, bound_claims={"a": "1"}
    )
    updated = await store.policy.update_credential(
        "acme", "prod-vault", token="mint", audience="vault"
    )
    assert (updated.token, updated.audience) == ("mint", "vault")
    assert updated.settings == created.settings
    assert updated.bound_claims == {"a": "1"}
    assert await store.policy.get_credential("acme", "prod-vault") == updated


async def test_update_replaces_settings_and_revalidates_them(
    store: Store, acme: Organization
) -> None:
    await store.policy.create_credential(
        "acme", "prod-vault", "vault_oidc", settings=VAULT_SETTINGS
    )
    updated = await store.policy.update_credential(
        "acme", "prod-vault", settings={**VAULT_SETTINGS, "namespace": "team-a"}
    )
    assert updated.settings["namespace"] == "team-a"


async def test_invalid_update_is_a_422_and_changes_nothing(
    store: Store, acme: Organization
) -> None:
    await store.policy.create_credential(
        "acme", "prod-vault", "vault_oidc", settings=VAULT_SETTINGS
    )
    before = await snapshot(store)
    with pytest.raises(UnprocessableEntity) as caught:
        await store.policy.update_credential(
            "acme", "prod-vault", settings={"address": "https://v"}, token="mint"
        )
    assert _fields(caught.value) == ["audience", "settings.role"]
    assert await snapshot(store) == before


async def test_clearing_the_audience_of_a_minting_credential_is_refused(
    store: Store, acme: Organization
) -> None:
    await store.policy.create_credential(
        "acme", "v", "vault_oidc", token="mint", audience="vault", settings=VAULT_SETTINGS
    )
    with pytest.raises(UnprocessableEntity):
        await store.policy.update_credential("acme", "v", audience=None)


async def test_update_of_unknown_credential_is_not_found(store: Store, acme: Organization) -> None:
    with pytest.raises(NotFound):
        await store.policy.update_credential("acme", "nope", token="mint", audience="x")


async def test_deleting_a_credential_removes_its_assignments_only(
    store: Store, acme: Organization
) -> None:
    for name in ("prod-vault", "dev-vault"):
        await store.policy.create_credential("acme", name, "vault_oidc", settings=VAULT_SETTINGS)
        await store.policy.assign("acme", "project-1", name)
    await store.policy.delete_credential("acme", "prod-vault")
    assert [c.name for c in await store.policy.list_credentials("acme")] == ["dev-vault"]
    assert [a.credential for a in await store.policy.list_assignments("acme")] == ["dev-vault"]
    with pytest.raises(NotFound):
        await store.policy.delete_credential("acme", "prod-vault")


async def test_a_mint_only_type_in_passthrough_is_a_422_on_token(
    store: Store, acme: Organization
) -> None:
    with pytest.raises(UnprocessableEntity) as caught:
        await store.policy.create_credential(
            "acme", "handed-back", type="oidc_token", token="passthrough", settings={}
        )
    assert _fields(caught.value) == ["token"]
    assert await store.policy.list_credentials("acme") == []


@pytest.mark.parametrize("handed_out_first", [True, False])
async def test_a_handed_out_token_may_not_share_a_mint_audience_naming_both(
    store: Store, acme: Organization, handed_out_first: bool
) -> None:
    await store.policy.create_organization("beta", "env0", "org-uuid-2")
    vault = {"type": "vault_oidc", "token": "mint", "audience": "vault", "settings": VAULT_SETTINGS}
    oidc = {"type": "oidc_token", "token": "mint", "audience": "vault", "settings": {}}
    first, second = (("runner-token", oidc), ("prod-vault", vault))
    if not handed_out_first:
        first, second = second, first
    await store.policy.create_credential("acme", first[0], **first[1])  # type: ignore[arg-type]
    with pytest.raises(UnprocessableEntity) as caught:
        await store.policy.create_credential("beta", second[0], **second[1])  # type: ignore[arg-type]
    assert _fields(caught.value) == ["audience"]
    assert f"mint credential {first[0]!r} of organization 'acme'" in str(caught.value.details)
    assert await store.policy.list_credentials("beta") == []


async def test_two_mint_credentials_that_hand_nothing_out_may_share_an_audience(
    store: Store, acme: Organization
) -> None:
    for name in ("vault-a", "vault-b"):
        await store.policy.create_credential(
            "acme", name, "vault_oidc", token="mint", audience="vault", settings=VAULT_SETTINGS
        )
    assert [c.name for c in await store.policy.list_credentials("acme")] == ["vault-a", "vault-b"]


async def test_moving_a_handed_out_token_onto_a_used_audience_is_refused(
    store: Store, acme: Organization
) -> None:
    await store.policy.create_credential(
        "acme", "prod-vault", "vault_oidc", token="mint", audience="vault", settings=VAULT_SETTINGS
    )
    await store.policy.create_credential(
        "acme", "runner-token", "oidc_token", token="mint", audience="own", settings={}
    )
    with pytest.raises(UnprocessableEntity) as caught:
        await store.policy.update_credential("acme", "runner-token", audience="vault")
    assert _fields(caught.value) == ["audience"]
    assert (await store.policy.get_credential("acme", "runner-token")).audience == "own"
