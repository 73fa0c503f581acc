"""The HCP Terraform profile, from HashiCorp's example workload identity token."""

from __future__ import annotations

import pytest

from tokenbroker.errors import InvalidToken
from tokenbroker.identity.profiles.terraform import PROFILE, identity_from_claims, job_id
from tokenbroker.policy.bound_claims import bound_claims_satisfied, match_bound_claims

# HashiCorp's decoded example of a workspace run's token.
EXAMPLE: dict[str, object] = {
    "jti": "1192426d-b525-4fde-9d42-f238be437bbd",
    "iss": "https://app.terraform.io",
    "aud": "my-example-audience",
    "iat": 1650486122,
    "nbf": 1650486117,
    "exp": 1650486422,
    "sub": "organization:my-org:project:Default Project:workspace:my-workspace:run_phase:apply",
    "terraform_organization_id": "org-GRNbCjYNpBB6NEH9",
    "terraform_organization_name": "my-org",
    "terraform_project_id": "prj-vegSA59s1XPwMr2t",
    "terraform_project_name": "Default Project",
    "terraform_workspace_id": "ws-mbsd5E3Ktt5Rg2Xm",
    "terraform_workspace_name": "my-workspace",
    "terraform_full_workspace": (
        "organization:my-org:project:Default Project:workspace:my-workspace"
    ),
    "terraform_run_id": "run-X3n1AUXNGWbfECsJ",
    "terraform_run_phase": "apply",
}
PLAN = {
    **EXAMPLE,
    "sub": "organization:my-org:project:Default Project:workspace:my-workspace:run_phase:plan",
    "terraform_run_phase": "plan",
}


def test_org_and_project_are_the_organization_and_workspace_ids() -> None:
    identity = identity_from_claims("terraform", EXAMPLE, {})
    assert (identity.org, identity.project) == ("org-GRNbCjYNpBB6NEH9", "ws-mbsd5E3Ktt5Rg2Xm")
    assert identity.deployment == "run-X3n1AUXNGWbfECsJ"


def test_the_run_phase_and_the_names_are_in_the_details() -> None:
    details = identity_from_claims("terraform", EXAMPLE, {}).details
    assert details["terraform_run_phase"] == "apply"
    assert details["terraform_workspace_name"] == "my-workspace"
    assert details["terraform_project_id"] == "prj-vegSA59s1XPwMr2t"
    assert identity_from_claims("terraform", PLAN, {}).details["terraform_run_phase"] == "plan"


def test_a_credential_bound_to_apply_is_not_one_a_plan_satisfies() -> None:
    bound = {"terraform_run_phase": "apply"}
    assert bound_claims_satisfied(match_bound_claims(bound, EXAMPLE))
    assert not bound_claims_satisfied(match_bound_claims(bound, PLAN))


def test_a_sub_naming_another_phase_than_the_claim_is_refused() -> None:
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("terraform", {**PLAN, "sub": EXAMPLE["sub"]}, {})
    assert caught.value.reason == "claim_invalid"


@pytest.mark.parametrize(
    "name", ["terraform_organization_id", "terraform_workspace_id", "terraform_run_phase"]
)
def test_missing_ids_or_phase_are_refused(name: str) -> None:
    claims = {k: v for k, v in EXAMPLE.items() if k != name}
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("terraform", claims, {})
    assert caught.value.reason == "claim_missing"


def test_plan_and_apply_of_one_run_are_two_jobs() -> None:
    assert job_id(EXAMPLE, {}) == "run-X3n1AUXNGWbfECsJ/apply"
    assert job_id(PLAN, {}) == "run-X3n1AUXNGWbfECsJ/plan"


def test_the_token_is_in_the_workload_identity_variable() -> None:
    assert PROFILE.runner.variables == ("TFC_WORKLOAD_IDENTITY_TOKEN",)
