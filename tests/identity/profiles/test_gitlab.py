"""The GitLab CI profile, from the claims GitLab documents for a job's ID token."""

from __future__ import annotations

import pytest

from tokenbroker.errors import InvalidToken
from tokenbroker.identity.profiles.gitlab import PROFILE, identity_from_claims, job_id

# The shape of GitLab's documented ID-token payload (ids are numeric strings).
EXAMPLE: dict[str, object] = {
    "namespace_id": "72",
    "namespace_path": "my-group",
    "project_id": "20",
    "project_path": "my-group/my-project",
    "user_id": "1",
    "user_login": "sample-user",
    "user_email": "sample-user@example.com",
    "pipeline_id": "574",
    "pipeline_source": "push",
    "job_id": "302",
    "ref": "main",
    "ref_type": "branch",
    "ref_path": "refs/heads/main",
    "ref_protected": "true",
    "environment": "production",
    "environment_protected": "true",
    "deployment_tier": "production",
    "runner_id": 1,
    "runner_environment": "self-hosted",
    "sha": "714a629c0b401fdce83e847fc9589983fc6f46bc",
    "project_visibility": "public",
    "ci_config_ref_uri": "gitlab.example.com/my-group/my-project//.gitlab-ci.yml@refs/heads/main",
    "jti": "235b3a54-b797-45c7-ae9a-f72d7bc6ef5b",
    "iss": "https://gitlab.example.com",
    "iat": 1681395193,
    "nbf": 1681395188,
    "exp": 1681398793,
    "sub": "project_path:my-group/my-project:ref_type:branch:ref:main",
    "aud": "https://vault.example.com",
}


def test_org_and_project_are_the_immutable_namespace_and_project_ids() -> None:
    identity = identity_from_claims("gitlab", EXAMPLE, {})
    assert (identity.issuer, identity.org, identity.project) == ("gitlab", "72", "20")
    assert identity.subject == EXAMPLE["sub"]


def test_the_identity_carries_the_jobs_ref_pipeline_environment_and_user() -> None:
    identity = identity_from_claims("gitlab", EXAMPLE, {})
    assert identity.details == {
        "project_path": "my-group/my-project",
        "ref": "main",
        "ref_type": "branch",
        "ref_protected": "true",
        "environment": "production",
        "pipeline_id": "574",
        "job_id": "302",
        "user_login": "sample-user",
    }
    assert (identity.environment, identity.deployment, identity.actor) == (
        "production",
        "574",
        "sample-user",
    )


def test_a_job_without_an_environment_has_none() -> None:
    claims = {k: v for k, v in EXAMPLE.items() if k != "environment"}
    identity = identity_from_claims("gitlab", claims, {})
    assert identity.environment is None
    assert "environment" not in identity.details


def test_a_customised_sub_still_starting_with_the_project_path_is_accepted() -> None:
    claims = {**EXAMPLE, "sub": "project_path:my-group/my-project:environment:production"}
    assert identity_from_claims("gitlab", claims, {}).org == "72"


@pytest.mark.parametrize(
    "sub",
    [
        "project_path:other-group/my-project:ref_type:branch:ref:main",
        "project_path:my-group/my-project-2:ref_type:branch:ref:main",
        "repo:my-group/my-project:ref:refs/heads/main",
    ],
)
def test_a_sub_naming_another_project_path_is_refused(sub: str) -> None:
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("gitlab", {**EXAMPLE, "sub": sub}, {})
    assert caught.value.reason == "claim_invalid"


@pytest.mark.parametrize("claim", ["namespace_id", "project_id", "project_path", "sub"])
def test_a_token_without_an_identifying_claim_is_refused(claim: str) -> None:
    claims = {k: v for k, v in EXAMPLE.items() if k != claim}
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("gitlab", claims, {})
    assert caught.value.reason == "claim_missing"


def test_a_numeric_namespace_id_is_not_a_gitlab_token() -> None:
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("gitlab", {**EXAMPLE, "namespace_id": 72}, {})
    assert caught.value.reason == "claim_invalid"


def test_the_job_id_is_the_ci_jobs_id() -> None:
    assert job_id(EXAMPLE, {}) == "302"


def test_the_runner_is_told_the_variable_with_token_env() -> None:
    # The variable's name is the job's choice (`id_tokens: {NAME: ...}`): nothing to look for.
    assert PROFILE.runner.variables == ()
    assert PROFILE.runner.request is None
    assert "--token-env" in PROFILE.runner.hint
