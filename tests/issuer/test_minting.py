"""Minting broker-signed tokens."""

from __future__ import annotations

from typing import Any

import pytest
from joserfc import jwt
from joserfc.errors import ExpiredTokenError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from tokenbroker.clock import FrozenClock
from tokenbroker.config.models import SigningSettings
from tokenbroker.identity.models import Identity
from tokenbroker.issuer.keyring import KeyRing
from tokenbroker.issuer.keys import FileKeyStore
from tokenbroker.issuer.minting import mint_for_identity, mint_token

ISSUER = "https://broker.example.com"

ENV0_CLAIMS: dict[str, object] = {
    "iss": "https://login.app.env0.com/",
    "sub": "auth0|deployer",
    "aud": ["https://prod.env0.com", "https://env0.auth0.com/userinfo"],
    "iat": 1_799_999_000,
    "exp": 1_800_085_400,
    "nbf": 1_799_999_000,
    "jti": "platform-jti",
    "organizationId": "org-uuid",
    "projectId": "proj-uuid",
    "environmentId": "env-uuid",
    "apiKeyType": "oidc",
    "https://aws.amazon.com/tags": {"principal_tags": {"project": ["proj-uuid"]}},
}

IDENTITY = Identity(
    issuer="env0",
    org="org-uuid",
    project="proj-uuid",
    subject="auth0|deployer",
    environment="env-uuid",
    deployment="deploy-1",
    claims=ENV0_CLAIMS,
)


@pytest.fixture
async def ring(store: FileKeyStore, signing: SigningSettings, clock: FrozenClock) -> KeyRing:
    """An ES256 key ring in a temp store."""
    return await KeyRing.open(store, signing, clock)


def _decode(token: str, ring: KeyRing) -> jwt.Token:
    return jwt.decode(token, KeySet.import_key_set(ring.jwks()), algorithms=["ES256"])  # type: ignore[arg-type]


def _identity_claims(
    ring: KeyRing,
    clock: FrozenClock,
    identity: Identity = IDENTITY,
    *,
    audience: str = "vault",
    lifetime_seconds: int = 900,
    **extra: Any,
) -> dict[str, Any]:
    """The claims of a token minted for ``identity`` by ISSUER, verified with the ring's keys."""
    token = mint_for_identity(
        ring,
        identity,
        issuer_url=ISSUER,
        audience=audience,
        lifetime_seconds=lifetime_seconds,
        clock=clock,
        **extra,
    )
    return dict(_decode(token, ring).claims)


def _mint(ring: KeyRing, clock: FrozenClock, **overrides: object) -> str:
    arguments: dict[str, object] = {
        "issuer_url": ISSUER,
        "subject": "runner-1",
        "audience": "vault",
        "lifetime_seconds": 900,
        "claims": {"team": "platform"},
        "clock": clock,
    }
    arguments.update(overrides)
    return mint_token(ring, **arguments)  # type: ignore[arg-type]


async def test_minted_token_verifies_with_correct_registered_claims(
    ring: KeyRing, clock: FrozenClock
) -> None:
    token = _decode(_mint(ring, clock), ring)
    now = int(clock.now())
    assert token.header == {"alg": "ES256", "kid": ring.active.kid, "typ": "JWT"}
    assert token.claims["iss"] == ISSUER
    assert token.claims["sub"] == "runner-1"
    assert token.claims["aud"] == "vault"
    assert (token.claims["iat"], token.claims["nbf"], token.claims["exp"]) == (
        now,
        now,
        now + 900,
    )
    assert token.claims["team"] == "platform"
    JWTClaimsRegistry(
        now=now,
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": "vault"},
    ).validate(token.claims)


async def test_minted_token_expires_after_its_lifetime(ring: KeyRing, clock: FrozenClock) -> None:
    token = _decode(_mint(ring, clock, lifetime_seconds=60), ring)
    JWTClaimsRegistry(now=int(clock.now()) + 59).validate(token.claims)
    with pytest.raises(ExpiredTokenError):
        JWTClaimsRegistry(now=int(clock.now()) + 60).validate(token.claims)


async def test_every_token_gets_its_own_jti(ring: KeyRing, clock: FrozenClock) -> None:
    first = _decode(_mint(ring, clock), ring).claims["jti"]
    second = _decode(_mint(ring, clock), ring).claims["jti"]
    assert isinstance(first, str)
    assert len(first) >= 16
    assert first != second


async def test_registered_claims_cannot_be_overridden(ring: KeyRing, clock: FrozenClock) -> None:
    forged = {
        "iss": "https://evil.example.com",
        "sub": "admin",
        "aud": "everything",
        "exp": 4_000_000_000,
        "iat": 1,
        "nbf": 1,
        "jti": "fixed",
        "team": "platform",
    }
    claims = _decode(_mint(ring, clock, claims=forged), ring).claims
    assert claims["iss"] == ISSUER
    assert claims["sub"] == "runner-1"
    assert claims["aud"] == "vault"
    assert claims["exp"] == int(clock.now()) + 900
    assert claims["iat"] == claims["nbf"] == int(clock.now())
    assert claims["jti"] != "fixed"
    assert claims["team"] == "platform"


async def test_a_list_audience_is_kept_as_a_list(ring: KeyRing, clock: FrozenClock) -> None:
    claims = _decode(_mint(ring, clock, audience=["a", "b"]), ring).claims
    assert claims["aud"] == ["a", "b"]


async def test_a_trailing_slash_on_the_issuer_url_is_not_in_iss(
    ring: KeyRing, clock: FrozenClock
) -> None:
    claims = _decode(_mint(ring, clock, issuer_url=ISSUER + "/"), ring).claims
    assert claims["iss"] == ISSUER


@pytest.mark.parametrize("lifetime", [0, -1, 3601])
async def test_lifetime_must_be_positive_and_at_most_an_hour(
    ring: KeyRing, clock: FrozenClock, lifetime: int
) -> None:
    with pytest.raises(ValueError, match="lifetime_seconds"):
        _mint(ring, clock, lifetime_seconds=lifetime)


async def test_a_lifetime_of_exactly_an_hour_is_allowed(ring: KeyRing, clock: FrozenClock) -> None:
    claims = _decode(_mint(ring, clock, lifetime_seconds=3600), ring).claims
    assert claims["exp"] == int(clock.now()) + 3600


@pytest.mark.parametrize("audience", ["", [], ["ok", ""]])
async def test_an_empty_audience_is_refused(
    ring: KeyRing, clock: FrozenClock, audience: object
) -> None:
    with pytest.raises(ValueError, match="audience"):
        _mint(ring, clock, audience=audience)


async def test_an_rs256_ring_mints_rs256_tokens(store: FileKeyStore, clock: FrozenClock) -> None:
    ring = await KeyRing.open(store, SigningSettings(algorithm="RS256"), clock)
    token = jwt.decode(
        _mint(ring, clock),
        KeySet.import_key_set(ring.jwks()),  # type: ignore[arg-type]
        algorithms=["RS256"],
    )
    assert token.header["alg"] == "RS256"


async def test_identity_token_copies_platform_claims_for_bound_claims(
    ring: KeyRing, clock: FrozenClock
) -> None:
    claims = _identity_claims(ring, clock)
    assert claims["organizationId"] == "org-uuid"
    assert claims["projectId"] == "proj-uuid"
    assert claims["apiKeyType"] == "oidc"
    assert claims["https://aws.amazon.com/tags"] == {"principal_tags": {"project": ["proj-uuid"]}}


async def test_identity_token_replaces_the_platform_registered_claims(
    ring: KeyRing, clock: FrozenClock
) -> None:
    claims = _identity_claims(ring, clock)
    assert claims["iss"] == ISSUER
    assert claims["sub"] == "auth0|deployer"
    assert claims["aud"] == "vault"
    assert claims["exp"] == int(clock.now()) + 900
    assert claims["jti"] != "platform-jti"


async def test_identity_token_names_the_platform_issuer_and_broker_context(
    ring: KeyRing, clock: FrozenClock
) -> None:
    claims = _identity_claims(ring, clock)
    assert claims["platform_iss"] == "https://login.app.env0.com/"
    assert claims["tokenbroker"] == {
        "org": "org-uuid",
        "project": "proj-uuid",
        "environment": "env-uuid",
    }


async def test_identity_token_leaves_unknown_context_out(ring: KeyRing, clock: FrozenClock) -> None:
    identity = Identity(issuer="gitpod", org="org-1", project=None, subject="org:org-1/user:u")
    claims = _identity_claims(ring, clock, identity, audience="x", lifetime_seconds=60)
    assert claims["tokenbroker"] == {"org": "org-1"}
    assert "platform_iss" not in claims


async def test_platform_claims_cannot_pose_as_broker_claims(
    ring: KeyRing, clock: FrozenClock
) -> None:
    spoofing = Identity(
        issuer="generic",
        org="org-1",
        project="p",
        subject="s",
        claims={"tokenbroker": {"org": "other"}, "platform_iss": "https://fake.example.com"},
    )
    claims = _identity_claims(ring, clock, spoofing, audience="x", lifetime_seconds=60)
    assert claims["tokenbroker"] == {"org": "org-1", "project": "p"}
    assert "platform_iss" not in claims


async def test_extra_claims_are_added_but_cannot_override_registered_ones(
    ring: KeyRing, clock: FrozenClock
) -> None:
    claims = _identity_claims(
        ring,
        clock,
        audience="aws",
        extra_claims={"https://aws.amazon.com/tags": {"principal_tags": {}}, "sub": "x"},
    )
    assert claims["https://aws.amazon.com/tags"] == {"principal_tags": {}}
    assert claims["sub"] == "auth0|deployer"


async def test_identity_token_names_its_credential_job_and_lease(
    ring: KeyRing, clock: FrozenClock
) -> None:
    claims = _identity_claims(
        ring, clock, context={"credential": "prod-vault", "job": "run-7", "lease": "lse_1"}
    )
    tokenbroker = claims["tokenbroker"]
    assert isinstance(tokenbroker, dict)
    assert (tokenbroker["credential"], tokenbroker["job"], tokenbroker["lease"]) == (
        "prod-vault",
        "run-7",
        "lse_1",
    )
