"""Platform profiles: one PlatformProfile object per platform, each in its own file.

Adding a platform is its file, one line in ``_REGISTERED`` and its tests: configuration, the
validator, the dev issuer and the runner's token discovery all read ``PROFILES``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from tokenbroker.identity.models import Claims, Identity
from tokenbroker.identity.profiles import (
    bitbucket,
    buildkite,
    circleci,
    env0,
    generic,
    github,
    gitlab,
    gitpod,
    kubernetes,
    terraform,
)
from tokenbroker.identity.profiles.base import PlatformProfile, ProfileOptions

# The runner's discovery order: of the platforms' token variables (then their endpoints), and
# of their env files ($BASH_ENV, CircleCI's, is a bash feature others may set: last).
_REGISTERED = (
    env0,
    github,
    circleci,
    gitpod,
    gitlab,
    bitbucket,
    terraform,
    buildkite,
    kubernetes,
    generic,
)

PROFILES: Mapping[str, PlatformProfile] = {
    module.PROFILE.name: module.PROFILE for module in _REGISTERED
}


class ProfiledIssuer(Protocol):
    """What the profiles read of a configured issuer (``config.models.IssuerSettings`` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def profile(self) -> str: ...
    @property
    def options(self) -> ProfileOptions: ...
    @property
    def leeway_seconds(self) -> int: ...
    @property
    def max_token_lifetime_seconds(self) -> int | None: ...


def identify(issuer: ProfiledIssuer, claims: Claims) -> Identity:
    """The Identity the issuer's profile reads from a validated token's claims.

    Raises InvalidToken (``claim_missing``, ``claim_invalid``, ...) or AccessDenied.
    """
    return PROFILES[issuer.profile].identify(issuer.name, claims, issuer.options)


def job_id(issuer: ProfiledIssuer, claims: Claims) -> str | None:
    """The platform's id of the job the token was issued to; None: use the token fingerprint."""
    return PROFILES[issuer.profile].job_id(claims, issuer.options)


def profile_option_problems(issuer: ProfiledIssuer) -> list[str]:
    """Problems with an issuer's profile and its options, each naming the key (empty: usable)."""
    profile = PROFILES.get(issuer.profile)
    if profile is None:
        known = ", ".join(PROFILES)
        return [f"issuers.{issuer.name}.profile: unknown profile {issuer.profile!r} ({known})"]
    problems = profile.option_problems(issuer.options)
    return [f"issuers.{issuer.name}.options.{problem}" for problem in problems]


def max_token_lifetime(issuer: ProfiledIssuer) -> int:
    """The longest ``exp - iat`` (and ``exp - now``) the issuer's tokens may have, in seconds."""
    if issuer.max_token_lifetime_seconds is not None:
        return issuer.max_token_lifetime_seconds
    return PROFILES[issuer.profile].token_lifetime_seconds + issuer.leeway_seconds


__all__ = [
    "PROFILES",
    "PlatformProfile",
    "ProfiledIssuer",
    "identify",
    "job_id",
    "max_token_lifetime",
    "profile_option_problems",
]
