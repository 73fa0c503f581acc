"""The Kubernetes profile, from the claims of a pod's projected service-account token."""

from __future__ import annotations

import pytest

from tests.identity.profiles.test_identify import issuer
from tokenbroker.errors import InvalidToken
from tokenbroker.identity.profiles import profile_option_problems
from tokenbroker.identity.profiles.kubernetes import (
    PROFILE,
    identity_from_claims,
    job_id,
    option_problems,
)
from tokenbroker.policy.bound_claims import bound_claims_satisfied, match_bound_claims

OPTIONS = {"cluster": "prod-eu-1"}
SA_UID = "a4c3b2d1-0000-4000-8000-000000000001"
POD_UID = "b5d4c3e2-0000-4000-8000-000000000002"

# A projected token (`serviceAccountToken` volume, audience `broker`) of a pod in `payments`.
EXAMPLE: dict[str, object] = {
    "aud": ["broker"],
    "exp": 1700003600,
    "iat": 1700000000,
    "nbf": 1700000000,
    "iss": "https://oidc.prod-eu-1.example.com",
    "jti": "0c7d5f2a-0000-4000-8000-000000000003",
    "kubernetes.io": {
        "namespace": "payments",
        "node": {"name": "node-7", "uid": "c6e5d4f3-0000-4000-8000-000000000004"},
        "pod": {"name": "deployer-7d9f8-abcde", "uid": POD_UID},
        "serviceaccount": {"name": "deployer", "uid": SA_UID},
    },
    "sub": "system:serviceaccount:payments:deployer",
}


def test_org_is_the_clusters_option_and_project_the_namespace() -> None:
    identity = identity_from_claims("k8s", EXAMPLE, OPTIONS)
    assert (identity.org, identity.project, identity.actor) == ("prod-eu-1", "payments", "deployer")


def test_the_service_account_and_pod_with_their_uids_are_in_the_details() -> None:
    assert identity_from_claims("k8s", EXAMPLE, OPTIONS).details == {
        "/kubernetes.io/serviceaccount/name": "deployer",
        "/kubernetes.io/serviceaccount/uid": SA_UID,
        "/kubernetes.io/pod/name": "deployer-7d9f8-abcde",
        "/kubernetes.io/pod/uid": POD_UID,
    }


def test_a_re_created_service_account_does_not_satisfy_a_binding_of_its_uid() -> None:
    bound = {"/kubernetes.io/serviceaccount/uid": SA_UID}
    assert bound_claims_satisfied(match_bound_claims(bound, EXAMPLE))
    kubernetes = dict(EXAMPLE["kubernetes.io"])  # type: ignore[call-overload]
    kubernetes["serviceaccount"] = {"name": "deployer", "uid": "another-uid"}
    re_created = {**EXAMPLE, "kubernetes.io": kubernetes}
    assert not bound_claims_satisfied(match_bound_claims(bound, re_created))


def test_a_token_bound_to_no_pod_identifies_and_names_no_job() -> None:
    # `kubectl create token deployer`: no pod in the claim.
    kubernetes = {k: v for k, v in EXAMPLE["kubernetes.io"].items() if k != "pod"}  # type: ignore[attr-defined]
    claims = {**EXAMPLE, "kubernetes.io": kubernetes}
    assert "/kubernetes.io/pod/uid" not in identity_from_claims("k8s", claims, OPTIONS).details
    assert job_id(claims, OPTIONS) is None


def test_the_job_is_the_pods_uid() -> None:
    assert job_id(EXAMPLE, OPTIONS) == POD_UID


@pytest.mark.parametrize(
    "sub",
    ["system:serviceaccount:kube-system:deployer", "system:serviceaccount:payments:other", "x"],
)
def test_a_sub_disagreeing_with_the_claim_is_refused(sub: str) -> None:
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("k8s", {**EXAMPLE, "sub": sub}, OPTIONS)
    assert caught.value.reason == "claim_invalid"


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({k: v for k, v in EXAMPLE.items() if k != "kubernetes.io"}, "claim_missing"),
        ({**EXAMPLE, "kubernetes.io": "payments"}, "claim_invalid"),
        ({**EXAMPLE, "kubernetes.io": {"namespace": "payments"}}, "claim_missing"),
        ({**EXAMPLE, "kubernetes.io": {"namespace": 7}}, "claim_invalid"),
        (
            {**EXAMPLE, "kubernetes.io": {"namespace": "payments", "serviceaccount": "deployer"}},
            "claim_invalid",
        ),
    ],
)
def test_a_malformed_kubernetes_claim_is_refused(claims: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("k8s", claims, OPTIONS)
    assert caught.value.reason == reason


@pytest.mark.parametrize("options", [{}, {"cluster": ""}, {"cluster": True}])
def test_the_cluster_option_is_required(options: dict[str, object]) -> None:
    assert option_problems(options) == [  # type: ignore[arg-type]
        "cluster: required, the cluster's name (the organization's id)"
    ]
    assert profile_option_problems(issuer("kubernetes", **options)) == [
        "issuers.i-kubernetes.options.cluster: required, the cluster's name (the organization's id)"
    ]


def test_the_runner_reads_the_projected_file() -> None:
    assert PROFILE.runner.variables == ()
    assert "--token-file" in PROFILE.runner.hint
