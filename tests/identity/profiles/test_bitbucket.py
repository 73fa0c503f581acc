"""The Bitbucket Pipelines profile, from the claims Bitbucket documents for a step's token."""

from __future__ import annotations

import pytest

from tokenbroker.errors import InvalidToken
from tokenbroker.identity.profiles.bitbucket import PROFILE, identity_from_claims, job_id

WORKSPACE = "{8a1fdada-cbc0-452c-81ce-07534945e18b}"
REPOSITORY = "{437da666-7aab-4b60-a947-ec542536ca0d}"
STEP = "{a1b2c3d4-0000-4000-8000-000000000003}"
ENVIRONMENT = "{e1e2e3e4-0000-4000-8000-000000000004}"

# A deployment step's token: `sub` is <repositoryUuid>:<environmentUuid>:<stepUuid>.
EXAMPLE: dict[str, object] = {
    "iss": "https://api.bitbucket.org/2.0/workspaces/acme/pipelines-config/identity/oidc",
    "aud": "ari:cloud:bitbucket::workspace/8a1fdada-cbc0-452c-81ce-07534945e18b",
    "sub": f"{REPOSITORY}:{ENVIRONMENT}:{STEP}",
    "iat": 1700000000,
    "exp": 1700003600,
    "accountUuid": "{c0c0c0c0-0000-4000-8000-000000000005}",
    "workspaceUuid": WORKSPACE,
    "repositoryUuid": REPOSITORY,
    "pipelineUuid": "{b0b0b0b0-0000-4000-8000-000000000006}",
    "stepUuid": STEP,
    "branchName": "main",
    "deploymentEnvironmentUuid": ENVIRONMENT,
}
NOT_A_DEPLOYMENT: dict[str, object] = {
    **{k: v for k, v in EXAMPLE.items() if k != "deploymentEnvironmentUuid"},
    "sub": f"{REPOSITORY}:{STEP}",
}


def test_org_and_project_are_the_workspace_and_repository_uuids() -> None:
    identity = identity_from_claims("bitbucket", EXAMPLE, {})
    assert (identity.org, identity.project) == (WORKSPACE, REPOSITORY)
    assert (identity.environment, identity.deployment) == (ENVIRONMENT, EXAMPLE["pipelineUuid"])
    assert identity.details == {
        "pipelineUuid": EXAMPLE["pipelineUuid"],
        "stepUuid": STEP,
        "branchName": "main",
        "deploymentEnvironmentUuid": ENVIRONMENT,
    }


def test_a_step_that_deploys_nowhere_has_no_environment() -> None:
    identity = identity_from_claims("bitbucket", NOT_A_DEPLOYMENT, {})
    assert identity.environment is None
    assert "deploymentEnvironmentUuid" not in identity.details


@pytest.mark.parametrize(
    "sub",
    [
        f"{{00000000-0000-4000-8000-000000000000}}:{ENVIRONMENT}:{STEP}",  # another repository
        f"{REPOSITORY}:{STEP}",  # the environment left out
        f"{REPOSITORY}:{ENVIRONMENT}:{{00000000-0000-4000-8000-000000000000}}",  # another step
    ],
)
def test_a_sub_disagreeing_with_the_claims_is_refused(sub: str) -> None:
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("bitbucket", {**EXAMPLE, "sub": sub}, {})
    assert caught.value.reason == "claim_invalid"


@pytest.mark.parametrize("name", ["workspaceUuid", "repositoryUuid", "stepUuid"])
def test_missing_ids_are_refused(name: str) -> None:
    claims = {k: v for k, v in EXAMPLE.items() if k != name}
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("bitbucket", claims, {})
    assert caught.value.reason == "claim_missing"


def test_the_job_is_the_step_and_the_token_is_in_the_step_variable() -> None:
    assert job_id(EXAMPLE, {}) == STEP
    assert PROFILE.runner.variables == ("BITBUCKET_STEP_OIDC_TOKEN",)
