"""GitHub Actions: owner, repository, environment, run and actor from the ID token's claims."""

from __future__ import annotations

from collections.abc import Mapping

from tokenbroker.identity.models import Claims, Identity
from tokenbroker.identity.profiles._claims import optional_str, required_str
from tokenbroker.identity.profiles.base import PlatformProfile


def identity_from_claims(
    issuer_name: str, claims: Claims, options: Mapping[str, str | bool | int]
) -> Identity:
    """Map a GitHub Actions token's claims to an Identity (project = ``owner/repo``)."""
    return Identity(
        issuer=issuer_name,
        org=required_str(claims, "repository_owner"),
        project=required_str(claims, "repository"),
        subject=required_str(claims, "sub"),
        environment=optional_str(claims, "environment"),
        deployment=optional_str(claims, "run_id"),
        actor=optional_str(claims, "actor"),
        claims=claims,
    )


# GitHub's Actions ID tokens live minutes; 1 h bounds them.
PROFILE = PlatformProfile(name="github", identify=identity_from_claims, token_lifetime_seconds=3600)
