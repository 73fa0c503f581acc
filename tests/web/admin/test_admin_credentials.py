"""Typed credentials through the admin API: validated settings, bound claims, merge patches."""

from __future__ import annotations

import logging

import pytest
from pydantic import BaseModel, ConfigDict, Field

from tokenbroker.backends import registry

from .conftest import VAULT_SETTINGS, Admin

BASE = "/organizations/acme/credentials"
VAULT = {"name": "prod-vault", "type": "vault_oidc", "settings": VAULT_SETTINGS}


@pytest.fixture
async def acme(admin: Admin) -> Admin:
    """The admin client with organization ``acme`` in place."""
    await admin.create_org()
    return admin


async def test_a_credential_is_created_with_its_validated_settings_echoed(acme: Admin) -> None:
    body = {
        **VAULT,
        "settings": {**VAULT_SETTINGS, "namespace": "team/a", "auth_path": "/env0/"},
        "bound_claims": {"projectId": "p1", "/deployer/email": ["*@acme.com"]},
    }
    reply = await acme.post(BASE, body)
    assert reply.status == 201, reply.body
    assert reply.headers["Location"] == "/v1/admin/organizations/acme/credentials/prod-vault"
    created = reply.json
    assert created["organization"] == "acme"
    assert created["name"] == "prod-vault"
    assert created["type"] == "vault_oidc"
    assert created["token"] == "passthrough"
    assert created["audience"] is None
    settings = created["settings"]
    assert isinstance(settings, dict)
    # The schema normalised the path and filled in its defaults.
    assert settings["auth_path"] == "env0"
    assert settings["namespace"] == "team/a"
    assert settings["tls_verify"] is True
    assert created["bound_claims"] == {"projectId": "p1", "/deployer/email": ["*@acme.com"]}
    assert (await acme.get(f"{BASE}/prod-vault")).json == created


async def test_a_mint_credential_keeps_its_audience(acme: Admin) -> None:
    reply = await acme.post(
        BASE, {"name": "id", "type": "oidc_token", "token": "mint", "audience": "sts.example"}
    )
    assert reply.status == 201, reply.body
    assert reply.json["token"] == "mint"
    assert reply.json["audience"] == "sts.example"
    assert reply.json["settings"] == {}


async def test_credentials_are_listed_by_name(acme: Admin) -> None:
    await acme.create_vault("b-vault")
    await acme.create_vault("a-vault")
    reply = await acme.get(BASE)
    assert reply.status == 200
    credentials = reply.json["credentials"]
    assert isinstance(credentials, list)
    assert [c["name"] for c in credentials] == ["a-vault", "b-vault"]


async def test_a_patch_merges_settings_and_bound_claims_key_by_key(acme: Admin) -> None:
    await acme.create_vault(bound_claims={"projectId": "p1", "environmentId": "e1"})
    reply = await acme.patch(
        f"{BASE}/prod-vault",
        {
            "settings": {"role": "deployer", "namespace": "ns1"},
            "bound_claims": {"environmentId": None, "deployerEmail": ["a@x", "b@x"]},
        },
    )
    assert reply.status == 200, reply.body
    settings = reply.json["settings"]
    assert isinstance(settings, dict)
    assert settings["role"] == "deployer"
    assert settings["namespace"] == "ns1"
    assert settings["address"] == "https://vault.example.com"
    assert reply.json["bound_claims"] == {"projectId": "p1", "deployerEmail": ["a@x", "b@x"]}
    stored = await acme.store.policy.get_credential("acme", "prod-vault")
    assert stored.settings["role"] == "deployer"
    assert dict(stored.bound_claims) == {"projectId": "p1", "deployerEmail": ["a@x", "b@x"]}


async def test_a_null_setting_in_a_patch_removes_it(acme: Admin) -> None:
    await acme.create_vault(settings={**VAULT_SETTINGS, "namespace": "ns1"})
    reply = await acme.patch(f"{BASE}/prod-vault", {"settings": {"namespace": None}})
    assert reply.status == 200, reply.body
    settings = reply.json["settings"]
    assert isinstance(settings, dict)
    assert settings["namespace"] is None


async def test_a_patch_switches_to_mint_and_back_clearing_the_audience(acme: Admin) -> None:
    await acme.create_vault()
    minted = await acme.patch(f"{BASE}/prod-vault", {"token": "mint", "audience": "vault"})
    assert minted.status == 200, minted.body
    assert (minted.json["token"], minted.json["audience"]) == ("mint", "vault")
    back = await acme.patch(f"{BASE}/prod-vault", {"token": "passthrough", "audience": None})
    assert back.status == 200, back.body
    assert (back.json["token"], back.json["audience"]) == ("passthrough", None)


async def test_a_credential_is_deleted_with_its_assignments(acme: Admin) -> None:
    await acme.create_vault()
    await acme.create_vault("keep")
    await acme.put("/organizations/acme/projects/p1/credentials/prod-vault")
    await acme.put("/organizations/acme/projects/p1/credentials/keep")
    reply = await acme.delete(f"{BASE}/prod-vault")
    assert reply.status == 204
    assert (await acme.get(f"{BASE}/prod-vault")).status == 404
    assignments = await acme.store.policy.list_assignments("acme")
    assert [a.credential for a in assignments] == ["keep"]


async def test_unknown_credentials_and_organizations_are_404(acme: Admin) -> None:
    for reply in (
        await acme.get(f"{BASE}/nope"),
        await acme.patch(f"{BASE}/nope", {"token": "passthrough"}),
        await acme.delete(f"{BASE}/nope"),
        await acme.get("/organizations/nope/credentials"),
        await acme.get("/organizations/nope/credentials/prod-vault"),
        await acme.post("/organizations/nope/credentials", VAULT),
    ):
        assert reply.status == 404, reply.body
        assert reply.json["error"] == "not_found"


async def test_a_duplicate_credential_is_409_and_changes_nothing(acme: Admin) -> None:
    await acme.create_vault()
    before = await acme.snapshot()
    reply = await acme.post(BASE, {**VAULT, "settings": {**VAULT_SETTINGS, "role": "other"}})
    assert reply.status == 409
    assert await acme.snapshot() == before


async def test_the_same_name_in_another_organization_is_fine(acme: Admin) -> None:
    await acme.create_org("other", platform_org_id="org-other")
    await acme.create_vault()
    await acme.create_vault(org="other")
    assert len(await acme.store.policy.list_credentials("other")) == 1


# (body, fields named in the 422)
BAD_CREATES: list[tuple[object, list[str]]] = [
    ({}, ["name", "type"]),
    ({**VAULT, "name": "bad name"}, ["name"]),
    ({**VAULT, "name": "x" * 129}, ["name"]),
    ({**VAULT, "name": 1}, ["name"]),
    ({**VAULT, "type": "nope_oidc"}, ["type"]),
    ({**VAULT, "type": None}, ["type"]),
    ({**VAULT, "token": "steal"}, ["token"]),
    ({**VAULT, "token": True}, ["token"]),
    ({**VAULT, "token": "mint"}, ["audience"]),
    ({**VAULT, "audience": ""}, ["audience"]),
    ({**VAULT, "audience": "x" * 1025}, ["audience"]),
    ({**VAULT, "audience": 3}, ["audience"]),
    ({**VAULT, "settings": {}}, ["settings.address", "settings.role"]),
    ({**VAULT, "settings": {"role": "ci"}}, ["settings.address"]),
    (
        {**VAULT, "settings": {**VAULT_SETTINGS, "address": "http://vault.example.com"}},
        ["settings.address"],
    ),
    ({**VAULT, "settings": {**VAULT_SETTINGS, "address": "not a url"}}, ["settings.address"]),
    ({**VAULT, "settings": {**VAULT_SETTINGS, "role": "bad role!"}}, ["settings.role"]),
    ({**VAULT, "settings": {**VAULT_SETTINGS, "auth_path": "../sys"}}, ["settings.auth_path"]),
    ({**VAULT, "settings": {**VAULT_SETTINGS, "tls_verify": False}}, ["settings.tls_verify"]),
    ({**VAULT, "settings": {**VAULT_SETTINGS, "ca_cert": "not pem"}}, ["settings.ca_cert"]),
    ({**VAULT, "settings": {**VAULT_SETTINGS, "max_retries": 99}}, ["settings.max_retries"]),
    ({**VAULT, "settings": {**VAULT_SETTINGS, "surprise": 1}}, ["settings.surprise"]),
    ({**VAULT, "settings": "address=https://vault"}, ["settings"]),
    ({**VAULT, "settings": [VAULT_SETTINGS]}, ["settings"]),
    ({**VAULT, "bound_claims": {"sub": 1}}, ["bound_claims.sub"]),
    ({**VAULT, "bound_claims": {"sub": True}}, ["bound_claims.sub"]),
    ({**VAULT, "bound_claims": {"sub": None}}, ["bound_claims.sub"]),
    ({**VAULT, "bound_claims": {"sub": {"nested": "x"}}}, ["bound_claims.sub"]),
    ({**VAULT, "bound_claims": {"sub": ["ok", 2]}}, ["bound_claims.sub"]),
    ({**VAULT, "bound_claims": {"sub": []}}, ["bound_claims.sub"]),
    ({**VAULT, "bound_claims": {"/a~2b": "x"}}, ["bound_claims./a~2b"]),
    ({**VAULT, "bound_claims": {"": "x"}}, ["bound_claims"]),
    ({**VAULT, "bound_claims": {f"k{i}": "x" for i in range(65)}}, ["bound_claims"]),
    ({**VAULT, "bound_claims": ["sub"]}, ["bound_claims"]),
    ({**VAULT, "bound_claims": "sub=x"}, ["bound_claims"]),
    ({**VAULT, "organization": "other"}, ["organization"]),
    ({**VAULT, "id": 5}, ["id"]),
    ([VAULT], ["body"]),
]


@pytest.mark.parametrize(("body", "fields"), BAD_CREATES)
async def test_a_bad_credential_is_422_naming_each_field_and_changes_nothing(
    acme: Admin, body: object, fields: list[str]
) -> None:
    before = await acme.snapshot()
    reply = await acme.post(BASE, body)
    assert reply.status == 422, reply.body
    assert reply.json["error"] == "invalid_request"
    assert sorted(reply.fields) == sorted(fields)
    assert await acme.snapshot() == before


BAD_PATCHES: list[tuple[object, list[str]]] = [
    ({"name": "renamed"}, ["name"]),
    ({"token": None}, ["token"]),
    ({"type": "oidc_token"}, ["type"]),
    ({"settings": None}, ["settings"]),
    ({"bound_claims": None}, ["bound_claims"]),
    ({"token": "mint"}, ["audience"]),
    ({"settings": {"address": "ftp://vault"}}, ["settings.address"]),
    ({"settings": {"role": None}}, ["settings.role"]),
    ({"settings": {"unknown": "x"}}, ["settings.unknown"]),
    ({"bound_claims": {"sub": 5}}, ["bound_claims.sub"]),
    ({"audience": ""}, ["audience"]),
    ({"settings": "x"}, ["settings"]),
]


@pytest.mark.parametrize(("body", "fields"), BAD_PATCHES)
async def test_a_bad_credential_patch_is_422_and_changes_nothing(
    acme: Admin, body: object, fields: list[str]
) -> None:
    await acme.create_vault(bound_claims={"projectId": "p1"})
    before = await acme.snapshot()
    reply = await acme.patch(f"{BASE}/prod-vault", body)
    assert reply.status == 422, reply.body
    assert sorted(reply.fields) == sorted(fields)
    assert await acme.snapshot() == before


async def test_a_422_names_fields_but_never_echoes_their_values(acme: Admin) -> None:
    secretish = "s3cr3t-value-that-must-not-come-back"
    reply = await acme.post(
        BASE, {**VAULT, "settings": {**VAULT_SETTINGS, "role": secretish + "!"}}
    )
    assert reply.status == 422
    assert secretish not in str(reply.body)


class SecretSettings(BaseModel):
    """A settings schema with a field marked sensitive, as a third-party type might have."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str
    client_secret: str = Field(json_schema_extra={"sensitive": True})


@pytest.fixture
def secret_type(monkeypatch: pytest.MonkeyPatch) -> None:
    """Install a credential type ``secret_type`` whose schema has a sensitive field."""
    real = registry.settings_model_for

    def settings_model_for(type_name: str) -> type[BaseModel]:
        return SecretSettings if type_name == "secret_type" else real(type_name)

    monkeypatch.setattr(registry, "settings_model_for", settings_model_for)


SECRET = "client-secret-value-xyz"


@pytest.mark.usefixtures("secret_type")
async def test_sensitive_settings_are_kept_but_never_shown(acme: Admin) -> None:
    body = {
        "name": "s",
        "type": "secret_type",
        "settings": {"endpoint": "https://e", "client_secret": SECRET},
    }
    created = await acme.post(BASE, body)
    assert created.status == 201, created.body
    assert created.json["settings"] == {"endpoint": "https://e"}
    for reply in (await acme.get(f"{BASE}/s"), await acme.get(BASE)):
        assert SECRET not in str(reply.body)
    assert (await acme.store.policy.get_credential("acme", "s")).settings["client_secret"] == SECRET


@pytest.mark.usefixtures("secret_type")
async def test_patching_one_setting_keeps_a_sensitive_one_the_caller_never_saw(
    acme: Admin,
) -> None:
    body = {
        "name": "s",
        "type": "secret_type",
        "settings": {"endpoint": "https://e", "client_secret": SECRET},
    }
    await acme.post(BASE, body)
    reply = await acme.patch(f"{BASE}/s", {"settings": {"endpoint": "https://f"}})
    assert reply.status == 200, reply.body
    assert reply.json["settings"] == {"endpoint": "https://f"}
    stored = await acme.store.policy.get_credential("acme", "s")
    assert stored.settings == {"endpoint": "https://f", "client_secret": SECRET}


async def test_creating_a_short_aws_credential_is_accepted_with_a_warning_naming_it(
    acme: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    body = {
        "name": "short-aws",
        "type": "aws_oidc",
        "token": "mint",
        "audience": "sts.amazonaws.com",
        "settings": {
            "role_arn": "arn:aws:iam::123456789012:role/deployer",
            "duration_seconds": 1200,
        },
    }
    with caplog.at_level(logging.WARNING, logger="tokenbroker.store.validation"):
        reply = await acme.post(BASE, body)
        assert reply.status == 201, reply.body
        patched = await acme.patch(f"{BASE}/short-aws", {"settings": {"duration_seconds": 3600}})
        assert patched.status == 200, patched.body
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert line.startswith("credential short-aws of organization acme: duration_seconds = 1200 ")
    assert "leaves 300 s before the AWS SDKs' 15-minute refresh window" in line


@pytest.mark.parametrize(
    "address",
    [
        "https://169.254.169.254",
        "https://metadata.google.internal",
        "https://[fd00:ec2::254]",
        "https://10.1.2.3:8200",
        "https://127.0.0.1.nip.io:8200",
        "http://127.0.0.1:6379",
    ],
)
async def test_a_vault_address_at_a_non_public_address_is_refused(
    acme: Admin, address: str
) -> None:
    reply = await acme.post(
        "/organizations/acme/credentials",
        {**VAULT, "settings": {**VAULT_SETTINGS, "address": address}},
    )
    assert reply.status == 422, reply.body
    assert reply.fields == ["settings.address"]
    assert (await acme.snapshot()).credentials["acme"] == []


async def test_a_patch_cannot_move_a_vault_address_to_a_metadata_service(acme: Admin) -> None:
    await acme.create_vault()
    reply = await acme.patch(
        "/organizations/acme/credentials/prod-vault",
        {"settings": {"address": "https://169.254.169.254"}},
    )
    assert reply.status == 422, reply.body
    assert reply.fields == ["settings.address"]
