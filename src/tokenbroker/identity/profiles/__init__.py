"""Platform profiles: one small pure function per platform, from verified claims to Identity."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from tokenbroker.config.models import IssuerSettings
from tokenbroker.identity.models import Claims, Identity
from tokenbroker.identity.profiles import circleci, env0, generic, github, gitpod

ProfileFunction = Callable[[str, Claims, Mapping[str, str | bool | int]], Identity]

PROFILES: Mapping[str, ProfileFunction] = {
    "env0": env0.identity_from_claims,
    "circleci": circleci.identity_from_claims,
    "gitpod": gitpod.identity_from_claims,
    "github": github.identity_from_claims,
    "generic": generic.identity_from_claims,
}


def identify(issuer: IssuerSettings, claims: Claims) -> Identity:
    """The Identity the issuer's profile reads from a validated token's claims.

    Raises InvalidToken (``claim_missing``, ``claim_invalid``, ...) or AccessDenied.
    """
    return PROFILES[issuer.profile](issuer.name, claims, issuer.options)


def profile_option_problems(issuer: IssuerSettings) -> list[str]:
    """Problems with an issuer's profile options, each naming the key (empty when usable)."""
    if issuer.profile != "generic":
        return []
    return [f"issuers.{issuer.name}.options.{p}" for p in generic.option_problems(issuer.options)]


__all__ = ["PROFILES", "identify", "profile_option_problems"]
