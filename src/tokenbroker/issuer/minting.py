"""Minting broker-signed JWTs: for any audience, or for a validated platform Identity."""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from joserfc import jwt

from tokenbroker.clock import Clock
from tokenbroker.identity.models import Identity
from tokenbroker.issuer.keyring import KeyRing

# Claims the broker always sets itself; neither callers nor platform claims may supply them.
REGISTERED_CLAIMS = frozenset({"iss", "sub", "aud", "exp", "iat", "nbf", "jti"})
MAX_LIFETIME_SECONDS = 3600


def mint_token(
    keyring: KeyRing,
    *,
    issuer_url: str,
    subject: str,
    audience: str | list[str],
    lifetime_seconds: int,
    claims: Mapping[str, object],
    clock: Clock,
) -> str:
    """Sign a JWT with the active key; registered claims (iss, sub, aud, iat, nbf, exp, jti) are
    set here and win over any of the same name in ``claims``."""
    if not 0 < lifetime_seconds <= MAX_LIFETIME_SECONDS:
        raise ValueError(f"lifetime_seconds must be between 1 and {MAX_LIFETIME_SECONDS}")
    if not subject:
        raise ValueError("subject must not be empty")
    if not audience or (isinstance(audience, list) and not all(audience)):
        raise ValueError("audience must be a non-empty string or list of non-empty strings")
    now = int(clock.now())
    payload: dict[str, object] = {k: v for k, v in claims.items() if k not in REGISTERED_CLAIMS}
    payload.update(
        {
            "iss": issuer_url.rstrip("/"),
            "sub": subject,
            "aud": list(audience) if isinstance(audience, list) else audience,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime_seconds,
            "jti": secrets.token_urlsafe(16),
        }
    )
    key, signer = keyring.signer()
    header = {"alg": key.algorithm, "kid": key.kid, "typ": "JWT"}
    return jwt.encode(header, payload, signer, algorithms=[key.algorithm])


def identity_claims(
    identity: Identity,
    extra_claims: Mapping[str, object] | None = None,
    *,
    context: Mapping[str, str] | None = None,
) -> dict[str, object]:
    """The non-registered claims of a token minted for ``identity``.

    Platform claims are copied so a backend's bound claims (e.g. Vault's ``organizationId``)
    match in mint mode as in passthrough; ``extra_claims`` come next; ``platform_iss`` and
    ``tokenbroker`` are the broker's own and always win. ``context`` adds to ``tokenbroker``:
    the credential the token was minted for (a backend can refuse a token minted for another),
    the job and the lease (a backend's audit can name them).
    """
    claims: dict[str, object] = {
        k: v for k, v in identity.claims.items() if k not in REGISTERED_CLAIMS
    }
    claims.update(extra_claims or {})
    platform_iss = identity.claims.get("iss")
    if isinstance(platform_iss, str):
        claims["platform_iss"] = platform_iss
    else:
        # A platform claim of this name must not pass for the broker's statement.
        claims.pop("platform_iss", None)
    broker_claims: dict[str, object] = {
        name: value
        for name, value in (
            ("org", identity.org),
            ("project", identity.project),
            ("environment", identity.environment),
        )
        if value is not None
    }
    claims["tokenbroker"] = {**broker_claims, **(context or {})}
    return claims


def mint_for_identity(
    keyring: KeyRing,
    identity: Identity,
    *,
    issuer_url: str,
    audience: str | list[str],
    lifetime_seconds: int,
    clock: Clock,
    extra_claims: Mapping[str, object] | None = None,
    context: Mapping[str, str] | None = None,
) -> str:
    """Mint a token for a validated platform identity: its claims, its subject, our context."""
    return mint_token(
        keyring,
        issuer_url=issuer_url,
        subject=identity.subject,
        audience=audience,
        lifetime_seconds=lifetime_seconds,
        claims=identity_claims(identity, extra_claims, context=context),
        clock=clock,
    )
