"""Platform profiles: one PlatformProfile object per platform, each in its own file."""

from __future__ import annotations

from collections.abc import Mapping

from tokenbroker.config.models import IssuerSettings
from tokenbroker.identity.models import Claims, Identity
from tokenbroker.identity.profiles import circleci, env0, generic, github, gitpod
from tokenbroker.identity.profiles.base import PlatformProfile

PROFILES: Mapping[str, PlatformProfile] = {
    profile.name: profile
    for profile in (env0.PROFILE, circleci.PROFILE, gitpod.PROFILE, github.PROFILE, generic.PROFILE)
}


def identify(issuer: IssuerSettings, claims: Claims) -> Identity:
    """The Identity the issuer's profile reads from a validated token's claims.

    Raises InvalidToken (``claim_missing``, ``claim_invalid``, ...) or AccessDenied.
    """
    return PROFILES[issuer.profile].identify(issuer.name, claims, issuer.options)


def profile_option_problems(issuer: IssuerSettings) -> list[str]:
    """Problems with an issuer's profile options, each naming the key (empty when usable)."""
    problems = PROFILES[issuer.profile].option_problems(issuer.options)
    return [f"issuers.{issuer.name}.options.{problem}" for problem in problems]


def max_token_lifetime(issuer: IssuerSettings) -> int:
    """The longest ``exp - iat`` (and ``exp - now``) the issuer's tokens may have, in seconds."""
    if issuer.max_token_lifetime_seconds is not None:
        return issuer.max_token_lifetime_seconds
    return PROFILES[issuer.profile].token_lifetime_seconds + issuer.leeway_seconds


__all__ = [
    "PROFILES",
    "PlatformProfile",
    "identify",
    "max_token_lifetime",
    "profile_option_problems",
]
