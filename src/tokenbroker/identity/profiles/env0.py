"""env0 (``ENV0_OIDC_TOKEN``): organization, project, environment and deployment from claims.

Trust is keyed on ``organizationId`` and ``projectId`` (UUIDs, immutable); the project, template
and environment names are only in the claims, for bound claims.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping

from tokenbroker.errors import InvalidToken
from tokenbroker.identity.models import Claims, Identity
from tokenbroker.identity.profiles._claims import optional_str, required_str
from tokenbroker.identity.profiles.base import (
    DevIssuerShape,
    DevTokenRequest,
    PlatformProfile,
    RunnerToken,
)

# env0 still sends each custom claim a second time under this prefix; older tokens may carry
# only the prefixed form, so it is read as a fallback, never in preference.
DEPRECATED_PREFIX = "https://env0.com/"
# The audience env0's docs name; its tokens carry a list of app URLs.
AUDIENCE = "https://prod.env0.com"
AWS_TAGS = "https://aws.amazon.com/tags"
_TAGGED = ("organizationId", "projectId", "templateId", "environmentId", "deployerEmail")


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


def job_id(claims: Claims, options: Mapping[str, str | bool | int]) -> str | None:
    """The deployment's log id: one per env0 deployment."""
    return _claim(claims, "deploymentLogId")


def dev_claims(request: DevTokenRequest) -> dict[str, object]:
    """Claims shaped like env0's published example token, prefixed duplicates and AWS tags."""
    env = request.environment or str(uuid.uuid4())
    custom: dict[str, object] = {
        "apiKeyType": "oidc",
        "organizationId": request.org,
        "projectId": request.project,
        "projectName": f"Project {request.project[:8]}",
        "templateId": str(uuid.uuid4()),
        "templateName": "Dev Template",
        "environmentId": env,
        "environmentName": f"Environment {env[:8]}",
        "workspaceName": f"env0{env[:6]}",
        "deployerEmail": "deployer@example.com",
        "deploymentLogId": str(uuid.uuid4()),
    }
    return {
        AWS_TAGS: {"principal_tags": {tag: [custom[tag]] for tag in _TAGGED}},
        **custom,
        "organization": request.org,
        **{DEPRECATED_PREFIX + k: v for k, v in custom.items()},
        "sub": f"auth0|{secrets.token_hex(12)}",
        "aud": [request.audience],
        "azp": secrets.token_urlsafe(24),
        "gty": "password",
    }


PROFILE = PlatformProfile(
    name="env0",
    title="env0",
    identify=identity_from_claims,
    # env0 tokens expire 24 h after they are issued.
    token_lifetime_seconds=24 * 3600,
    runner=RunnerToken(
        hint="on env0 enable OIDC for the environment",
        variables=("ENV0_OIDC_TOKEN",),
        env_file=("ENV0_ENV", "env"),
    ),
    job_id=job_id,
    # env0's Vault guide binds apiKeyType: an env0 API key of another type is no deployment.
    dev=DevIssuerShape(
        claims=dev_claims,
        path="env0",
        audience=AUDIENCE,
        required_claims={"apiKeyType": "oidc"},
    ),
)
