"""The broker issuer's discovery document and JWK Set, served by the real app."""

from __future__ import annotations

import stat

from joserfc import jwt
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry
from pytest_aiohttp import AiohttpClient

from tokenbroker.clock import FrozenClock
from tokenbroker.config import Settings, parse_settings
from tokenbroker.identity.models import Identity
from tokenbroker.issuer.minting import mint_for_identity
from tokenbroker.store.keystore import ENCRYPTION_KEY_FILENAME, open_key_store
from tokenbroker.web import keys
from tokenbroker.web.app import create_app

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth"}
T0 = 1_800_000_000.0


def _settings(settings: Settings, **signing: object) -> Settings:
    return parse_settings(
        {
            "server": {
                "data_dir": str(settings.server.data_dir),
                "public_url": "https://broker.example.com",
            },
            "signing": signing,
        },
        {},
    )


async def test_discovery_document_is_served_with_a_short_public_cache(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(_settings(settings)))
    response = await client.get("/.well-known/openid-configuration")
    assert response.status == 200
    assert response.headers["Cache-Control"] == "public, max-age=300"
    document = await response.json()
    assert document["issuer"] == "https://broker.example.com"
    assert document["jwks_uri"] == "https://broker.example.com/.well-known/jwks.json"
    assert document["id_token_signing_alg_values_supported"] == ["ES256"]


async def test_jwks_is_served_without_private_members(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(_settings(settings, algorithm="RS256")))
    response = await client.get("/.well-known/jwks.json")
    assert response.status == 200
    assert response.headers["Cache-Control"] == "public, max-age=300"
    assert response.content_type == "application/json"
    published = (await response.json())["keys"]
    assert [k["alg"] for k in published] == ["RS256"]
    for key in published:
        assert not PRIVATE_MEMBERS & set(key)


async def test_a_minted_token_verifies_against_the_served_jwks(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    clock = FrozenClock(T0)
    app = create_app(_settings(settings), clock=clock)
    client = await aiohttp_client(app)
    identity = Identity(
        issuer="env0",
        org="org-uuid",
        project="proj-uuid",
        subject="auth0|deployer",
        claims={"iss": "https://login.app.env0.com/", "organizationId": "org-uuid"},
    )
    token = mint_for_identity(
        app[keys.KEYRING],
        identity,
        issuer_url=app[keys.SETTINGS].server.issuer_url,
        audience="https://vault.example.com",
        lifetime_seconds=600,
        clock=clock,
    )
    discovery = await (await client.get("/.well-known/openid-configuration")).json()
    jwks = await (await client.get("/.well-known/jwks.json")).json()
    verified = jwt.decode(
        token,
        KeySet.import_key_set(jwks),
        algorithms=discovery["id_token_signing_alg_values_supported"],
    )
    JWTClaimsRegistry(
        now=int(T0),
        iss={"essential": True, "value": discovery["issuer"]},
        aud={"essential": True, "value": "https://vault.example.com"},
        exp={"essential": True, "value": int(T0) + 600},
    ).validate(verified.claims)
    assert verified.claims["organizationId"] == "org-uuid"
    assert verified.claims["platform_iss"] == "https://login.app.env0.com/"
    assert verified.claims["tokenbroker"] == {"org": "org-uuid", "project": "proj-uuid"}


async def test_after_rotation_the_served_jwks_verifies_old_and_new_tokens(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    clock = FrozenClock(T0)
    app = create_app(_settings(settings), clock=clock)
    client = await aiohttp_client(app)
    ring = app[keys.KEYRING]
    identity = Identity(issuer="gitpod", org="o", project="p", subject="org:o/prj:p/env:e")

    def mint() -> str:
        return mint_for_identity(
            ring,
            identity,
            issuer_url="https://broker.example.com",
            audience="a",
            lifetime_seconds=600,
            clock=clock,
        )

    before = mint()
    await ring.rotate()
    after = mint()
    jwks = KeySet.import_key_set(await (await client.get("/.well-known/jwks.json")).json())
    assert len(jwks.keys) == 2
    for token in (before, after):
        assert jwt.decode(token, jwks, algorithms=["ES256"]).claims["sub"] == "org:o/prj:p/env:e"


async def test_readiness_reports_the_keys(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(_settings(settings)))
    response = await client.get("/readyz")
    assert (await response.json())["checks"]["keys"] == "ok"


async def test_the_app_keeps_its_key_in_the_store_across_restarts(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    configured = _settings(settings)
    first = await aiohttp_client(create_app(configured))
    kid = (await (await first.get("/.well-known/jwks.json")).json())["keys"][0]["kid"]
    await first.close()
    second = await aiohttp_client(create_app(configured))
    published = (await (await second.get("/.well-known/jwks.json")).json())["keys"]
    assert [k["kid"] for k in published] == [kid]
    stored = await open_key_store(configured, second.app[keys.STORE])
    assert [k.kid for k in await stored.load()] == [kid]
    # Embedded SQLite: the key sealing the private keys was generated beside the database.
    key_file = configured.server.data_dir / ENCRYPTION_KEY_FILENAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
