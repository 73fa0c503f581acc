"""env0 (``ENV0_OIDC_TOKEN``): organization, project, environment and deployment from claims."""

from __future__ import annotations

from collections.abc import Mapping

from tokenbroker.errors import InvalidToken
from tokenbroker.identity.models import Claims, Identity
from tokenbroker.identity.profiles._claims import optional_str, required_str
from tokenbroker.identity.profiles.base import PlatformProfile

# env0 still sends each custom claim a second time under this prefix; older tokens may carry
# only the prefixed form, so it is read as a fallback, never in preference.
DEPRECATED_PREFIX = "https://env0.com/"


def _claim(claims: Claims, name: str) -> str | None:
    return optional_str(claims, name, DEPRECATED_PREFIX + name)


def identity_from_claims(
    issuer_name: str, claims: Claims, options: Mapping[str, str | bool | int]
) -> Identity:
    """Map an env0 token's claims to an Identity; only ``apiKeyType == "oidc"`` tokens pass."""
    # An env0 API key of another type (a user's or an org's key) is not a deployment's identity.
    api_key_type = required_str(claims, "apiKeyType", DEPRECATED_PREFIX + "apiKeyType")
    if api_key_type != "oidc":
        raise InvalidToken(
            "api_key_type_not_oidc", f"env0 apiKeyType is {api_key_type!r}, expected 'oidc'"
        )
    return Identity(
        issuer=issuer_name,
        org=required_str(claims, "organizationId", DEPRECATED_PREFIX + "organizationId"),
        project=required_str(claims, "projectId", DEPRECATED_PREFIX + "projectId"),
        subject=required_str(claims, "sub"),
        environment=_claim(claims, "environmentId"),
        deployment=_claim(claims, "deploymentLogId"),
        actor=_claim(claims, "deployerEmail"),
        claims=claims,
    )


# env0 tokens expire 24 h after they are issued.
PROFILE = PlatformProfile(
    name="env0", identify=identity_from_claims, token_lifetime_seconds=24 * 3600
)
