"""Declarative config: TOML organizations, credentials and assignments applied to the store."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.store.helpers import VAULT_SETTINGS, snapshot
from tokenbroker.backends.registry import INSTALLED
from tokenbroker.config import Settings, parse_settings
from tokenbroker.errors import ConfigError
from tokenbroker.store import Store
from tokenbroker.store.declarative import apply_declarative

_ISSUER = {
    "name": "env0",
    "issuer": "https://login.app.env0.com/",
    "audiences": ["https://prod.env0.com"],
    "profile": "env0",
}


def _config(prune: bool = False, **sections: Any) -> Settings:
    raw: dict[str, Any] = {
        "store": {"prune_declarative": prune},
        "issuers": [_ISSUER],
        "organizations": [{"name": "acme", "issuer": "env0", "platform_org_id": "org-uuid-1"}],
        "credentials": [
            {
                "organization": "acme",
                "name": "prod-vault",
                "type": "vault_oidc",
                "settings": dict(VAULT_SETTINGS),
                "bound_claims": {"environmentId": "env-1"},
            }
        ],
        "assignments": [
            {"organization": "acme", "project": "project-1", "credentials": ["prod-vault"]}
        ],
    }
    raw.update(sections)
    return parse_settings(raw, {})


async def test_applying_creates_everything_declared(store: Store) -> None:
    await apply_declarative(store, _config())
    acme = await store.policy.get_organization("acme")
    assert acme.platform_org_id == "org-uuid-1"
    (credential,) = await store.policy.assigned_credentials(acme.id, "project-1")
    assert credential.name == "prod-vault"
    assert credential.bound_claims == {"environmentId": "env-1"}
    assert credential.settings["auth_path"] == "jwt"


async def test_applying_twice_changes_nothing(store: Store) -> None:
    await apply_declarative(store, _config())
    first = await snapshot(store)
    await apply_declarative(store, _config())
    assert await snapshot(store) == first


async def test_applying_updates_what_differs(store: Store) -> None:
    await apply_declarative(store, _config())
    changed = _config(
        organizations=[{"name": "acme", "issuer": "env0", "platform_org_id": "org-uuid-2"}],
        credentials=[
            {
                "organization": "acme",
                "name": "prod-vault",
                "type": "vault_oidc",
                "token": "mint",
                "audience": "vault",
                "settings": {**VAULT_SETTINGS, "namespace": "team-a"},
            }
        ],
    )
    await apply_declarative(store, changed)
    assert (await store.policy.get_organization("acme")).platform_org_id == "org-uuid-2"
    credential = await store.policy.get_credential("acme", "prod-vault")
    assert (credential.token, credential.audience) == ("mint", "vault")
    assert credential.settings["namespace"] == "team-a"
    assert credential.bound_claims == {}


async def test_entries_made_outside_the_config_stay_when_it_does_not_own_the_store(
    store: Store,
) -> None:
    await apply_declarative(store, _config())
    await store.policy.create_organization("api-made", "env0", "org-uuid-9")
    await store.policy.create_credential("acme", "api-vault", "vault_oidc", settings=VAULT_SETTINGS)
    await store.policy.assign("acme", "project-2", "api-vault")
    await store.policy.assign("acme", "project-2", "prod-vault")
    await apply_declarative(store, _config(credentials=[], assignments=[]))
    assert {o.name for o in await store.policy.list_organizations()} == {"acme", "api-made"}
    assert {c.name for c in await store.policy.list_credentials("acme")} == {
        "prod-vault",
        "api-vault",
    }
    assert len(await store.policy.list_assignments("acme")) == 3


async def test_entries_absent_from_the_config_are_removed_when_it_owns_the_store(
    store: Store,
) -> None:
    await apply_declarative(store, _config())
    await store.policy.create_organization("api-made", "env0", "org-uuid-9")
    await store.policy.create_credential("acme", "api-vault", "vault_oidc", settings=VAULT_SETTINGS)
    await store.policy.assign("acme", "project-2", "api-vault")
    await store.policy.assign("acme", "project-2", "prod-vault")
    await apply_declarative(store, _config(prune=True))
    assert [o.name for o in await store.policy.list_organizations()] == ["acme"]
    assert [c.name for c in await store.policy.list_credentials("acme")] == ["prod-vault"]
    assert [(a.project, a.credential) for a in await store.policy.list_assignments("acme")] == [
        ("project-1", "prod-vault")
    ]


async def test_invalid_credential_settings_name_the_entry_and_field_and_change_nothing(
    store: Store,
) -> None:
    config = _config(
        credentials=[
            {
                "organization": "acme",
                "name": "a",
                "type": "vault_oidc",
                "settings": dict(VAULT_SETTINGS),
            },
            {
                "organization": "acme",
                "name": "b",
                "type": "vault_oidc",
                "settings": {"address": "https://v", "rol": "x"},
            },
        ],
        assignments=[],
    )
    with pytest.raises(ConfigError) as caught:
        await apply_declarative(store, config)
    assert caught.value.problems == [
        "credentials[1].settings.role: Field required",
        "credentials[1].settings.rol: Extra inputs are not permitted",
    ]
    assert await store.policy.list_organizations() == []


async def test_a_mint_credential_without_an_audience_names_the_entry(store: Store) -> None:
    # Config parsing does not know the type (its default mint audience); applying does.
    config = _config(
        credentials=[
            {
                "organization": "acme",
                "name": "v",
                "type": "vault_oidc",
                "token": "mint",
                "settings": dict(VAULT_SETTINGS),
            }
        ],
        assignments=[],
    )
    with pytest.raises(ConfigError) as caught:
        await apply_declarative(store, config)
    assert caught.value.problems == ["credentials[0].audience: is required when token is 'mint'"]
    assert await store.policy.list_organizations() == []


async def test_unknown_credential_type_names_the_entry(store: Store) -> None:
    config = _config(
        credentials=[{"organization": "acme", "name": "a", "type": "no_such_type", "settings": {}}],
        assignments=[],
    )
    with pytest.raises(ConfigError) as caught:
        await apply_declarative(store, config)
    assert caught.value.problems[0].startswith("credentials[0].type: unknown credential type")


async def test_a_store_conflict_names_the_entry_and_rolls_back_the_whole_apply(
    store: Store,
) -> None:
    await store.policy.create_organization("api-made", "env0", "org-uuid-7")
    before = await snapshot(store)
    config = _config(
        organizations=[
            {"name": "acme", "issuer": "env0", "platform_org_id": "org-uuid-1"},
            {"name": "beta", "issuer": "env0", "platform_org_id": "org-uuid-7"},
        ]
    )
    with pytest.raises(ConfigError) as caught:
        await apply_declarative(store, config)
    assert caught.value.problems[0].startswith("organizations[1]: ")
    # acme, created before beta failed, is gone with the rest of the transaction.
    assert await snapshot(store) == before


@pytest.mark.parametrize(("duration", "warned"), [(900, True), (3600, False)])
async def test_loading_warns_on_an_aws_duration_inside_the_sdk_refresh_window(
    store: Store, caplog: pytest.LogCaptureFixture, duration: int, warned: bool
) -> None:
    aws = {
        "organization": "acme",
        "name": "short-aws",
        "type": "aws_oidc",
        "settings": {
            "role_arn": "arn:aws:iam::123456789012:role/deployer",
            "duration_seconds": duration,
        },
    }
    with caplog.at_level(logging.WARNING, logger="tokenbroker.store.validation"):
        await apply_declarative(store, _config(credentials=[aws], assignments=[]))
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    expected = [
        f"credential short-aws of organization acme: duration_seconds = {duration} is inside "
        "the AWS SDKs' 15-minute refresh window on arrival: every SDK call runs "
        "credential_process again; use at least 1800 (3600, AWS's default, is what the dev "
        "stack uses)"
    ]
    assert lines == (expected if warned else [])


@pytest.mark.parametrize(
    "address",
    [
        "https://169.254.169.254",
        "https://metadata.google.internal",
        "https://[fd00:ec2::254]",
        "https://192.168.0.10:8200",
        "https://127.0.0.1.nip.io",
        "http://127.0.0.1:6379",
    ],
)
async def test_a_credential_at_a_non_public_address_is_refused_at_config_load(
    store: Store, address: str
) -> None:
    credential = {
        "organization": "acme",
        "name": "prod-vault",
        "type": "vault_oidc",
        "settings": {**VAULT_SETTINGS, "address": address},
    }
    with pytest.raises(ConfigError) as caught:
        await apply_declarative(store, _config(credentials=[credential], assignments=[]))
    assert [p.split(":")[0] for p in caught.value.problems] == ["credentials[0].settings.address"]
    assert await store.policy.list_organizations() == []


async def test_a_loopback_credential_is_applied_when_private_backends_are_allowed(
    store_url: str,
) -> None:
    store = await Store.open(store_url, allow_private_backends=True, credential_types=INSTALLED)
    await store.upgrade()
    try:
        credential = {
            "organization": "acme",
            "name": "prod-vault",
            "type": "vault_oidc",
            "settings": {**VAULT_SETTINGS, "address": "http://127.0.0.1:8200"},
        }
        settings = _config(credentials=[credential], security={"allow_private_backends": True})
        await apply_declarative(store, settings)
        (stored,) = await store.policy.list_credentials("acme")
        assert stored.settings["address"] == "http://127.0.0.1:8200"
    finally:
        await store.close()


async def test_loading_refuses_a_handed_out_token_on_another_mint_audience_naming_both(
    store: Store,
) -> None:
    minted = [
        {"organization": "acme", "name": "minted-vault", "type": "vault_oidc", "token": "mint",
         "audience": "vault", "settings": dict(VAULT_SETTINGS)},
        {"organization": "acme", "name": "runner-token", "type": "oidc_token", "token": "mint",
         "audience": "vault"},
    ]  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        await apply_declarative(store, _config(credentials=minted, assignments=[]))
    text = "\n".join(caught.value.problems)
    assert "runner-token" in text
    assert "minted-vault" in text
