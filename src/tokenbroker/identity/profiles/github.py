"""GitHub Actions: owner, repository, environment, run and actor from the ID token's claims."""

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


def job_id(claims: Claims, options: Mapping[str, str | bool | int]) -> str | None:
    """``<run_id>/<run_attempt>``: a re-run of the same run is another job."""
    run_id = optional_str(claims, "run_id")
    attempt = optional_str(claims, "run_attempt")
    return f"{run_id}/{attempt}" if run_id and attempt else None


def dev_claims(request: DevTokenRequest) -> dict[str, object]:
    """Claims of an Actions ID token of a push to main (or a deployment to the environment)."""
    project, environment = request.project, request.environment
    repository = project if "/" in project else f"{request.org}/{project}"
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
        "repository_owner": request.org,
        "repository_owner_id": str(secrets.randbelow(10**8)),
        "repository_id": str(secrets.randbelow(10**9)),
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
