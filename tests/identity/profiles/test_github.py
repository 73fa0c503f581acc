"""The GitHub Actions profile, from GitHub's documented example ID token."""

from __future__ import annotations

import pytest

from tokenbroker.errors import InvalidToken
from tokenbroker.identity.profiles.github import identity_from_claims

# GitHub's example payload ("About security hardening with OpenID Connect").
EXAMPLE: dict[str, object] = {
    "jti": "example-id",
    "sub": "repo:octo-org/octo-repo:environment:prod",
    "environment": "prod",
    "aud": "https://github.com/octo-org",
    "ref": "refs/heads/main",
    "sha": "example-sha",
    "repository": "octo-org/octo-repo",
    "repository_owner": "octo-org",
    "actor_id": "12",
    "repository_visibility": "private",
    "repository_id": "74",
    "repository_owner_id": "65",
    "run_id": "example-run-id",
    "run_number": "10",
    "run_attempt": "2",
    "runner_environment": "github-hosted",
    "actor": "octocat",
    "workflow": "example-workflow",
    "head_ref": "",
    "base_ref": "",
    "event_name": "workflow_dispatch",
    "ref_type": "branch",
    "job_workflow_ref": "octo-org/octo-automation/.github/workflows/oidc.yml@refs/heads/main",
    "iss": "https://token.actions.githubusercontent.com",
    "nbf": 1632492967,
    "exp": 1632493867,
    "iat": 1632493567,
}


def test_the_example_maps_owner_repository_environment_run_and_actor() -> None:
    identity = identity_from_claims("github", EXAMPLE, {})
    assert identity.org == "octo-org"
    assert identity.project == "octo-org/octo-repo"
    assert identity.environment == "prod"
    assert identity.deployment == "example-run-id"
    assert identity.actor == "octocat"
    assert identity.subject == "repo:octo-org/octo-repo:environment:prod"


def test_a_job_without_environment_has_none() -> None:
    claims = {k: v for k, v in EXAMPLE.items() if k != "environment"}
    claims["sub"] = "repo:octo-org/octo-repo:ref:refs/heads/main"
    assert identity_from_claims("github", claims, {}).environment is None


@pytest.mark.parametrize("name", ["repository", "repository_owner", "sub"])
def test_missing_repository_owner_or_sub_is_refused(name: str) -> None:
    claims = {k: v for k, v in EXAMPLE.items() if k != name}
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("github", claims, {})
    assert caught.value.reason == "claim_missing"


def test_numeric_repository_is_refused() -> None:
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("github", {**EXAMPLE, "repository": 74}, {})
    assert caught.value.reason == "claim_invalid"
