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


def test_org_and_project_are_the_immutable_owner_and_repository_ids() -> None:
    identity = identity_from_claims("github", EXAMPLE, {})
    assert (identity.org, identity.project) == ("65", "74")


def test_a_re_registered_owner_name_is_another_org() -> None:
    # Someone who takes over the name `octo-org` after a rename gets a new owner id.
    taken_over = {**EXAMPLE, "repository_owner_id": "9001", "repository_id": "9002"}
    identity = identity_from_claims("github", taken_over, {})
    assert (identity.org, identity.project) == ("9001", "9002")
    assert identity.details["repository_owner"] == "octo-org"


def test_the_names_stay_in_the_details_for_display_audit_and_bound_claims() -> None:
    identity = identity_from_claims("github", EXAMPLE, {})
    assert identity.details == {
        "repository_owner": "octo-org",
        "repository": "octo-org/octo-repo",
        "ref": "refs/heads/main",
        "environment": "prod",
        "job_workflow_ref": "octo-org/octo-automation/.github/workflows/oidc.yml@refs/heads/main",
        "run_id": "example-run-id",
        "run_attempt": "2",
        "actor": "octocat",
    }


def test_the_example_maps_environment_run_and_actor() -> None:
    identity = identity_from_claims("github", EXAMPLE, {})
    assert identity.environment == "prod"
    assert identity.deployment == "example-run-id"
    assert identity.actor == "octocat"
    assert identity.subject == "repo:octo-org/octo-repo:environment:prod"


def test_a_job_without_environment_has_none() -> None:
    claims = {k: v for k, v in EXAMPLE.items() if k != "environment"}
    claims["sub"] = "repo:octo-org/octo-repo:ref:refs/heads/main"
    assert identity_from_claims("github", claims, {}).environment is None


@pytest.mark.parametrize(
    "name", ["repository_owner_id", "repository_id", "repository", "repository_owner", "sub"]
)
def test_missing_ids_names_or_sub_are_refused(name: str) -> None:
    claims = {k: v for k, v in EXAMPLE.items() if k != name}
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("github", claims, {})
    assert caught.value.reason == "claim_missing"


@pytest.mark.parametrize(("name", "value"), [("repository", 74), ("repository_id", 74)])
def test_an_ill_typed_repository_or_id_is_refused(name: str, value: object) -> None:
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("github", {**EXAMPLE, name: value}, {})
    assert caught.value.reason == "claim_invalid"
