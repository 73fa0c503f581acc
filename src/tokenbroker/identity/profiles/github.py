"""GitHub Actions: owner and repository ids, environment, run and actor from the ID token.

Trust is keyed on ``repository_owner_id`` and ``repository_id`` (numeric strings, immutable):
an owner or repository name can be re-registered by someone else after a rename or a deletion,
and with it would come the trust. The names stay in the identity's details, for display, audit
and bound claims.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping

from tokenbroker.identity.models import Claims, Identity
from tokenbroker.identity.profiles._claims import optional_str, required_str
from tokenbroker.identity.profiles.base import (
    DevIssuerShape,
    DevTokenRequest,
    PlatformProfile,
    RunnerToken,
    TokenRequest,
)

# Read into Identity.details, under GitHub's claim names.
DETAIL_CLAIMS = (
    "repository_owner",
    "repository",
    "ref",
    "environment",
    "job_workflow_ref",
    "run_id",
    "run_attempt",
    "actor",
)


def identity_from_claims(
    issuer_name: str, claims: Claims, options: Mapping[str, str | bool | int]
) -> Identity:
    """Map a GitHub Actions token's claims to an Identity (org and project are the ids)."""
    org = required_str(claims, "repository_owner_id")
    project = required_str(claims, "repository_id")
    # The names are read too: a token without them is not one GitHub issues.
    required_str(claims, "repository_owner")
    required_str(claims, "repository")
    details = {name: optional_str(claims, name) for name in DETAIL_CLAIMS}
    return Identity(
        issuer=issuer_name,
        org=org,
        project=project,
        subject=required_str(claims, "sub"),
        environment=details["environment"],
        deployment=details["run_id"],
        actor=details["actor"],
        details={name: value for name, value in details.items() if value is not None},
        claims=claims,
    )


def job_id(claims: Claims, options: Mapping[str, str | bool | int]) -> str | None:
    """``<run_id>/<run_attempt>``: a re-run of the same run is another job."""
    run_id = optional_str(claims, "run_id")
    attempt = optional_str(claims, "run_attempt")
    return f"{run_id}/{attempt}" if run_id and attempt else None


def dev_claims(request: DevTokenRequest) -> dict[str, object]:
    """Claims of an Actions ID token of a push to main (or a deployment to the environment).

    ``org`` and ``project`` are the owner's and the repository's ids; the names default to a
    dev owner's and follow overrides of ``repository_owner`` and ``repository``.
    """
    environment = request.environment
    owner = str(request.overrides.get("repository_owner", "dev-octo-org"))
    repository = str(request.overrides.get("repository", f"{owner}/deploy"))
    ref = "refs/heads/main"
    workflow_ref = f"{repository}/.github/workflows/deploy.yml@{ref}"
    subject = (
        f"repo:{repository}:environment:{environment}"
        if environment
        else f"repo:{repository}:ref:{ref}"
    )
    return {
        "jti": str(uuid.uuid4()),
        "sub": subject,
        "aud": request.audience,
        "ref": ref,
        "sha": secrets.token_hex(20),
        "repository": repository,
        "repository_owner": owner,
        "repository_owner_id": request.org,
        "repository_id": request.project,
        "repository_visibility": "private",
        "run_id": str(secrets.randbelow(10**10)),
        "run_number": "1",
        "run_attempt": "1",
        "actor": "octocat",
        "actor_id": "583231",
        "workflow": "deploy",
        "workflow_ref": workflow_ref,
        "job_workflow_ref": workflow_ref,
        "event_name": "push",
        "ref_type": "branch",
        "environment": environment,
        "runner_environment": "github-hosted",
        "nbf": request.issued_at - 5,
    }


PROFILE = PlatformProfile(
    name="github",
    title="GitHub Actions",
    identify=identity_from_claims,
    # GitHub's Actions ID tokens live minutes; 1 h bounds them.
    token_lifetime_seconds=3600,
    runner=RunnerToken(
        hint="on GitHub Actions add 'permissions: id-token: write'",
        request=TokenRequest(
            url_variable="ACTIONS_ID_TOKEN_REQUEST_URL",
            bearer_variable="ACTIONS_ID_TOKEN_REQUEST_TOKEN",
            fix="give the job 'permissions: id-token: write' and run on a GitHub-hosted or "
            "registered runner",
        ),
        env_file=("GITHUB_ENV", "env"),
    ),
    job_id=job_id,
    dev=DevIssuerShape(claims=dev_claims, path="github", lifetime_seconds=300),
)
