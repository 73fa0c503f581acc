"""The Buildkite profile, from Buildkite's published token shape plus its optional id claims."""

from __future__ import annotations

import pytest

from tokenbroker.errors import InvalidToken
from tokenbroker.identity.profiles.buildkite import PROFILE, identity_from_claims, job_id

ORG_ID = "0184990a-0000-4000-8000-00000000a001"
PIPELINE_ID = "0184990a-0000-4000-8000-00000000b002"

# Buildkite's example token (as its agent docs print it), with `--claim
# organization_id,pipeline_id`.
EXAMPLE: dict[str, object] = {
    "iss": "https://agent.buildkite.com",
    "sub": "organization:acme-inc:pipeline:super-duper-app:ref:refs/heads/main"
    ":commit:9f3182061f1e2cca4702c368cbc039b7dc9d4485:step:build",
    "aud": "https://buildkite.com/acme-inc",
    "iat": 1669014898,
    "nbf": 1669014898,
    "exp": 1669015198,
    "organization_slug": "acme-inc",
    "organization_id": ORG_ID,
    "pipeline_slug": "super-duper-app",
    "pipeline_id": PIPELINE_ID,
    "build_number": 1,
    "build_branch": "main",
    "build_tag": "v1.0.0",
    "build_commit": "9f3182061f1e2cca4702c368cbc039b7dc9d4485",
    "step_key": "build",
    "job_id": "0184990a-477b-4fa8-9968-496074483cee",
    "agent_id": "0184990a-4782-42b5-afc1-16715b10b8ff",
}


def test_org_and_project_are_the_organization_and_pipeline_uuids() -> None:
    identity = identity_from_claims("buildkite", EXAMPLE, {})
    assert (identity.org, identity.project) == (ORG_ID, PIPELINE_ID)
    assert identity.subject == EXAMPLE["sub"]


def test_the_slugs_and_the_build_are_in_the_details() -> None:
    identity = identity_from_claims("buildkite", EXAMPLE, {})
    assert identity.details == {
        "organization_slug": "acme-inc",
        "pipeline_slug": "super-duper-app",
        "build_number": "1",
        "build_branch": "main",
        "step_key": "build",
        "job_id": "0184990a-477b-4fa8-9968-496074483cee",
        "agent_id": "0184990a-4782-42b5-afc1-16715b10b8ff",
    }
    assert identity.deployment == "1"


@pytest.mark.parametrize("name", ["organization_id", "pipeline_id"])
def test_a_token_without_the_id_claims_is_refused_saying_how_to_ask_for_them(name: str) -> None:
    # Every Buildkite organization shares the issuer: a slug alone is a name anyone can take.
    claims = {k: v for k, v in EXAMPLE.items() if k != name}
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("buildkite", claims, {})
    assert caught.value.reason == "claim_missing"
    assert "--claim organization_id,pipeline_id" in caught.value.description


def test_a_null_step_key_is_left_out_of_the_details() -> None:
    # Buildkite sends `"step_key": null` for a step without a key.
    identity = identity_from_claims("buildkite", {**EXAMPLE, "step_key": None}, {})
    assert "step_key" not in identity.details


def test_a_sub_naming_other_slugs_is_refused() -> None:
    claims = {**EXAMPLE, "pipeline_slug": "other-app"}
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("buildkite", claims, {})
    assert caught.value.reason == "claim_invalid"


def test_a_sub_chosen_with_subject_claim_is_accepted() -> None:
    # `--subject-claim pipeline_id` makes the pipeline's id the `sub`.
    identity = identity_from_claims("buildkite", {**EXAMPLE, "sub": PIPELINE_ID}, {})
    assert identity.subject == PIPELINE_ID


def test_a_boolean_build_number_is_refused() -> None:
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("buildkite", {**EXAMPLE, "build_number": True}, {})
    assert caught.value.reason == "claim_invalid"


def test_the_job_is_the_job_id() -> None:
    assert job_id(EXAMPLE, {}) == "0184990a-477b-4fa8-9968-496074483cee"


def test_the_runner_is_told_to_put_the_printed_token_in_the_generic_variable() -> None:
    # The agent prints the token; no variable of Buildkite's own holds it.
    assert PROFILE.runner.variables == ()
    assert "TOKENBROKER_PLATFORM_TOKEN" in PROFILE.runner.hint
    assert "buildkite-agent oidc request-token" in PROFILE.runner.hint
