"""Buildkite (``buildkite-agent oidc request-token``): organization and pipeline ids, the build.

One issuer, ``https://agent.buildkite.com``, signs the tokens of every Buildkite organization,
so the organization claim is what tells one organization's jobs from another's: without
``organization_id`` a token is refused. Trust is keyed on ``organization_id`` and
``pipeline_id`` (UUIDs, immutable); the slugs can be renamed and then taken by another
organization or pipeline, so they stay in the details, for display, audit and bound claims.
Both ids are optional claims the job asks for (``--claim organization_id,pipeline_id``).

The agent prints the token rather than setting a variable, so the job hands it to the runner
in ``$TOKENBROKER_PLATFORM_TOKEN`` (or a variable named with ``--token-env``).
"""

from __future__ import annotations

import secrets
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

REQUEST_COMMAND = "buildkite-agent oidc request-token --claim organization_id,pipeline_id"
# Read into Identity.details, under Buildkite's claim names.
DETAIL_CLAIMS = (
    "organization_slug",
    "pipeline_slug",
    "build_number",
    "build_branch",
    "step_key",
    "job_id",
    "agent_id",
)


def _required_id(claims: Claims, name: str) -> str:
    value = optional_str(claims, name)
    if value is None:
        raise InvalidToken(
            "claim_missing",
            f"the token has no {name!r} claim; ask for it: {REQUEST_COMMAND} --audience <aud>",
        )
    return value


def identity_from_claims(
    issuer_name: str, claims: Claims, options: Mapping[str, str | bool | int]
) -> Identity:
    """Map a Buildkite job's token to an Identity (org and project are the UUIDs)."""
    org = _required_id(claims, "organization_id")
    project = _required_id(claims, "pipeline_id")
    subject = required_str(claims, "sub")
    details = details_of(claims, DETAIL_CLAIMS)
    # The default `sub` names both slugs first (a job may pick another claim as its `sub`).
    org_slug, pipeline_slug = details.get("organization_slug"), details.get("pipeline_slug")
    expected = f"organization:{org_slug}:pipeline:{pipeline_slug}:"
    if subject.startswith("organization:") and not subject.startswith(expected):
        raise InvalidToken("claim_invalid", "the 'sub' and the slug claims disagree")
    return Identity(
        issuer=issuer_name,
        org=org,
        project=project,
        subject=subject,
        deployment=details.get("build_number"),
        details=details,
        claims=claims,
    )


def job_id(claims: Claims, options: Mapping[str, str | bool | int]) -> str | None:
    """The job's UUID: each step of each build is its own job."""
    return optional_str(claims, "job_id")


def dev_claims(request: DevTokenRequest) -> dict[str, object]:
    """Claims of a job's token with both optional id claims; ``sub`` follows slug overrides."""
    overrides = request.overrides
    org_slug = overrides.get("organization_slug", "dev-org")
    pipeline_slug = overrides.get("pipeline_slug", "deploy")
    step_key = overrides.get("step_key", "deploy")
    commit = secrets.token_hex(20)
    return {
        "sub": f"organization:{org_slug}:pipeline:{pipeline_slug}:ref:refs/heads/main"
        f":commit:{commit}:step:{step_key}",
        "aud": request.audience,
        "nbf": request.issued_at,
        "jti": str(uuid.uuid4()),
        "organization_slug": org_slug,
        "organization_id": request.org,
        "pipeline_slug": pipeline_slug,
        "pipeline_id": request.project,
        "build_number": 1 + secrets.randbelow(10**4),
        "build_branch": "main",
        "build_commit": commit,
        "step_key": step_key,
        "job_id": str(uuid.uuid4()),
        "agent_id": str(uuid.uuid4()),
        "build_source": "ui",
        "runner_environment": "buildkite-hosted",
    }


PROFILE = PlatformProfile(
    name="buildkite",
    title="Buildkite",
    identify=identity_from_claims,
    # Buildkite's tokens live 5 minutes unless the job asks for more with --lifetime; 1 h
    # bounds them (longer ones need the issuer's max_token_lifetime_seconds).
    token_lifetime_seconds=3600,
    runner=RunnerToken(
        hint=f"on Buildkite run 'export TOKENBROKER_PLATFORM_TOKEN=\"$({REQUEST_COMMAND} "
        "--audience <aud>)\"'"
    ),
    job_id=job_id,
    dev=DevIssuerShape(claims=dev_claims, path="buildkite", lifetime_seconds=300),
)
