"""The CircleCI profile: both subject formats, the per-org issuer, SSH re-runs refused."""

from __future__ import annotations

import pytest

from tokenbroker.errors import AccessDenied, InvalidToken
from tokenbroker.identity.profiles.circleci import identity_from_claims

ORG = "01234567-89ab-cdef-0123-456789abcdef"
PROJECT = "76543210-ba98-fedc-3210-fedcba987654"
USER = "9d5e7c1a-0000-4000-8000-000000000001"

# The shape of CircleCI's documented tokens: v1 sub, then the v2 additions.
V1: dict[str, object] = {
    "iss": f"https://oidc.circleci.com/org/{ORG}",
    "sub": f"org/{ORG}/project/{PROJECT}/user/{USER}",
    "aud": ORG,
    "iat": 1700000000,
    "exp": 1700003600,
    "oidc.circleci.com/project-id": PROJECT,
    "oidc.circleci.com/context-ids": ["2b2b8c2a-0000-4000-8000-000000000002"],
}
V2: dict[str, object] = {
    **V1,
    "sub": (
        f"org/{ORG}/project/{PROJECT}/user/{USER}"
        "/vcs-origin/github.com/organization-123/repo-1/vcs-ref/refs/heads/main"
    ),
    "oidc.circleci.com/vcs-origin": "github.com/organization-123/repo-1",
    "oidc.circleci.com/vcs-ref": "refs/heads/main",
    "oidc.circleci.com/ssh-rerun": False,
}


def test_v1_subject_maps_to_org_project_and_user() -> None:
    identity = identity_from_claims("circleci", V1, {})
    assert (identity.org, identity.project, identity.actor) == (ORG, PROJECT, USER)
    assert identity.subject == V1["sub"]


def test_v2_subject_with_vcs_origin_and_ref_is_parsed() -> None:
    identity = identity_from_claims("circleci", V2, {})
    assert (identity.org, identity.project, identity.actor) == (ORG, PROJECT, USER)


def test_org_comes_from_the_issuer_even_with_a_custom_audience() -> None:
    identity = identity_from_claims("circleci", {**V2, "aud": "my-broker"}, {})
    assert identity.org == ORG


def test_ssh_rerun_tokens_are_refused_by_default() -> None:
    with pytest.raises(AccessDenied) as caught:
        identity_from_claims("circleci", {**V2, "oidc.circleci.com/ssh-rerun": True}, {})
    assert caught.value.reason == "ssh_rerun_refused"


def test_ssh_rerun_tokens_pass_when_the_issuer_allows_them() -> None:
    claims = {**V2, "oidc.circleci.com/ssh-rerun": True}
    assert identity_from_claims("circleci", claims, {"allow_ssh_rerun": True}).org == ORG


def test_ssh_rerun_claim_must_be_a_boolean() -> None:
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("circleci", {**V2, "oidc.circleci.com/ssh-rerun": "false"}, {})
    assert caught.value.reason == "claim_invalid"


def test_subject_naming_another_org_than_the_issuer_is_refused() -> None:
    claims = {**V1, "sub": f"org/other/project/{PROJECT}/user/{USER}"}
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("circleci", claims, {})
    assert caught.value.reason == "claim_invalid"


def test_subject_and_project_claim_must_agree() -> None:
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("circleci", {**V1, "oidc.circleci.com/project-id": "other"}, {})
    assert caught.value.reason == "claim_invalid"


def test_subject_and_vcs_origin_claim_must_agree() -> None:
    claims = {**V2, "oidc.circleci.com/vcs-origin": "github.com/fork/repo-1"}
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("circleci", claims, {})
    assert caught.value.reason == "claim_invalid"


def test_subject_and_vcs_ref_claim_must_agree() -> None:
    # A branch named in `sub` but another in the claim: a policy on either would be fooled.
    claims = {**V2, "oidc.circleci.com/vcs-ref": "refs/heads/unprotected"}
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("circleci", claims, {})
    assert caught.value.reason == "claim_invalid"
    assert "'oidc.circleci.com/vcs-ref'" in caught.value.description


def test_a_ref_holding_slashes_agrees_with_its_claim() -> None:
    ref = "refs/heads/feature/x"
    claims = {
        **V2,
        "sub": f"org/{ORG}/project/{PROJECT}/user/{USER}"
        f"/vcs-origin/github.com/organization-123/repo-1/vcs-ref/{ref}",
        "oidc.circleci.com/vcs-ref": ref,
    }
    assert identity_from_claims("circleci", claims, {}).project == PROJECT


@pytest.mark.parametrize("sub", ["org/x", f"repo:{ORG}", f"org/{ORG}/project/{PROJECT}"])
def test_a_subject_of_another_shape_is_refused(sub: str) -> None:
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("circleci", {**V1, "sub": sub}, {})
    assert caught.value.reason == "claim_invalid"


def test_missing_project_claim_is_refused() -> None:
    claims = {k: v for k, v in V1.items() if k != "oidc.circleci.com/project-id"}
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("circleci", claims, {})
    assert caught.value.reason == "claim_missing"
