"""Bitbucket Pipelines (``BITBUCKET_STEP_OIDC_TOKEN``, ``oidc: true`` on the step).

Each workspace is its own issuer
(``https://api.bitbucket.org/2.0/workspaces/<workspace>/pipelines-config/identity/oidc``), so
one configured issuer trusts one workspace; its tokens' ``aud`` is
``ari:cloud:bitbucket::workspace/<workspace uuid>``. Trust is keyed on ``workspaceUuid`` and
``repositoryUuid`` (``{...}`` UUIDs, immutable; workspace and repository slugs can be renamed
and reused); the pipeline, step, branch and deployment environment are in the details.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from tokenbroker.errors import InvalidToken
from tokenbroker.identity.models import Claims, Identity
from tokenbroker.identity.profiles._claims import details_of, optional_str, required_str
from tokenbroker.identity.profiles.base import (
    DevIssuerShape,
    DevTokenRequest,
    PlatformProfile,
    RunnerToken,
)

# Read into Identity.details, under Bitbucket's claim names.
DETAIL_CLAIMS = ("pipelineUuid", "stepUuid", "branchName", "deploymentEnvironmentUuid")


def identity_from_claims(
    issuer_name: str, claims: Claims, options: Mapping[str, str | bool | int]
) -> Identity:
    """Map a Pipelines step's token to an Identity (org = workspace, project = repository)."""
    repository = required_str(claims, "repositoryUuid")
    step = required_str(claims, "stepUuid")
    subject = required_str(claims, "sub")
    details = details_of(claims, DETAIL_CLAIMS)
    environment = details.get("deploymentEnvironmentUuid")
    # `sub` is <repositoryUuid>:<stepUuid>, with the environment between them on deployments.
    middle = f":{environment}" if environment else ""
    if subject != f"{repository}{middle}:{step}":
        raise InvalidToken("claim_invalid", "the 'sub' and the repository and step claims disagree")
    return Identity(
        issuer=issuer_name,
        org=required_str(claims, "workspaceUuid"),
        project=repository,
        subject=subject,
        environment=environment,
        deployment=details.get("pipelineUuid"),
        details=details,
        claims=claims,
    )


def job_id(claims: Claims, options: Mapping[str, str | bool | int]) -> str | None:
    """The step's UUID: each step of each pipeline run gets its own token."""
    return optional_str(claims, "stepUuid")


def _braced() -> str:
    return f"{{{uuid.uuid4()}}}"


def dev_claims(request: DevTokenRequest) -> dict[str, object]:
    """Claims of a step's token (of a deployment step when an environment is asked for)."""
    step = _braced()
    environment = request.environment
    middle = f":{environment}" if environment else ""
    return {
        "sub": f"{request.project}{middle}:{step}",
        "aud": request.audience,
        "accountUuid": _braced(),
        "workspaceUuid": request.org,
        "repositoryUuid": request.project,
        "pipelineUuid": _braced(),
        "stepUuid": step,
        "branchName": "main",
        "deploymentEnvironmentUuid": environment,
    }


PROFILE = PlatformProfile(
    name="bitbucket",
    title="Bitbucket Pipelines",
    identify=identity_from_claims,
    # Bitbucket publishes no lifetime for a step's token; 1 h bounds it (a longer one needs the
    # issuer's max_token_lifetime_seconds).
    token_lifetime_seconds=3600,
    runner=RunnerToken(
        hint="on Bitbucket Pipelines set 'oidc: true' on the step",
        variables=("BITBUCKET_STEP_OIDC_TOKEN",),
    ),
    job_id=job_id,
    # One dev issuer serves every workspace: the real path holds the workspace's slug, which
    # the dev stack does not have.
    dev=DevIssuerShape(claims=dev_claims, path="bitbucket"),
)
