"""The decision picks one assigned credential and checks its bound claims."""

from __future__ import annotations

import pytest

from tokenbroker.errors import AccessDenied, BrokerError, InvalidRequest
from tokenbroker.policy.bound_claims import BoundClaimCheck
from tokenbroker.policy.decision import (
    check_bound_claims,
    choose_credential,
    evaluate_bound_claims,
)
from tokenbroker.policy.models import BoundClaims, Credential


def credential(name: str, bound_claims: BoundClaims | None = None) -> Credential:
    return Credential(
        id=hash(name) & 0xFFFF,
        organization="acme",
        name=name,
        type="vault_oidc",
        token="passthrough",
        audience=None,
        settings={"address": "https://vault.example", "role": "ci"},
        bound_claims=bound_claims or {},
    )


VAULT = credential("prod-vault")
AWS = credential("prod-aws")
GCP = credential("gcp")

# (assigned, requested, project, chosen name)
CHOSEN = [
    ([VAULT], None, "p1", "prod-vault"),
    ([VAULT], "prod-vault", "p1", "prod-vault"),
    ([VAULT, AWS], "prod-aws", "p1", "prod-aws"),
    ([VAULT, AWS, GCP], "gcp", "p1", "gcp"),
]


@pytest.mark.parametrize(("assigned", "requested", "project", "chosen"), CHOSEN)
def test_the_named_or_only_assigned_credential_is_chosen(
    assigned: list[Credential], requested: str | None, project: str, chosen: str
) -> None:
    result = choose_credential(assigned, requested, organization="acme", project=project)
    assert result.name == chosen


# (assigned, requested, project, error type, reason, words the description must hold)
REFUSED: list[
    tuple[list[Credential], str | None, str | None, type[BrokerError], str, list[str]]
] = [
    ([VAULT], None, None, AccessDenied, "no_project", ["project"]),
    ([VAULT], "prod-vault", None, AccessDenied, "no_project", ["project"]),
    ([], None, "p1", AccessDenied, "project_not_assigned", ["'p1'", "'acme'"]),
    ([], "prod-vault", "p1", AccessDenied, "project_not_assigned", ["'p1'"]),
    (
        [VAULT, AWS],
        "gcp",
        "p1",
        AccessDenied,
        "credential_not_assigned",
        ["'gcp'", "prod-aws, prod-vault"],
    ),
    ([VAULT], "PROD-VAULT", "p1", AccessDenied, "credential_not_assigned", ["prod-vault"]),
    ([VAULT, AWS], None, "p1", InvalidRequest, "credential_required", ["prod-aws, prod-vault"]),
]


@pytest.mark.parametrize(("assigned", "requested", "project", "error", "reason", "words"), REFUSED)
def test_choices_that_cannot_be_made_are_refused_with_a_reason(
    assigned: list[Credential],
    requested: str | None,
    project: str | None,
    error: type[BrokerError],
    reason: str,
    words: list[str],
) -> None:
    with pytest.raises(error) as caught:
        choose_credential(assigned, requested, organization="acme", project=project)
    assert type(caught.value) is error
    assert caught.value.reason == reason
    for word in words:
        assert word in caught.value.description


def test_satisfied_bound_claims_return_their_checks() -> None:
    cred = credential("c", {"ref": "refs/heads/*", "project": "77"})
    checks = check_bound_claims(cred, {"ref": "refs/heads/main", "project": "77"})
    assert [c.key for c in checks] == ["project", "ref"]
    assert all(c.matched for c in checks)


def test_a_credential_without_bound_claims_accepts_any_claims() -> None:
    assert check_bound_claims(VAULT, {"anything": "at all"}) == []


def test_a_bound_claims_mismatch_names_failing_keys_and_expected_values_only() -> None:
    cred = credential("prod-vault", {"ref": ["refs/heads/main", "refs/tags/*"], "project": "77"})
    claims = {"ref": "refs/heads/evil", "project": "77", "secret-ish": "do-not-echo"}
    with pytest.raises(AccessDenied) as caught:
        check_bound_claims(cred, claims)
    assert caught.value.reason == "bound_claims_mismatch"
    description = caught.value.description
    assert "'ref'" in description
    assert "'refs/heads/main'" in description
    assert "'refs/tags/*'" in description
    assert "'prod-vault'" in description
    # The matched key, the actual value and other claims are not repeated back.
    assert "project" not in description
    assert "refs/heads/evil" not in description
    assert "do-not-echo" not in description


def test_a_long_list_of_expected_values_is_shortened_in_the_description() -> None:
    cred = credential("c", {"ref": [f"v{i}" for i in range(20)]})
    with pytest.raises(AccessDenied) as caught:
        check_bound_claims(cred, {"ref": "nope"})
    assert "'v4'" in caught.value.description
    assert "'v5'" not in caught.value.description
    assert "15 more" in caught.value.description


def test_the_dry_run_variant_reports_failures_without_raising() -> None:
    cred = credential("c", {"ref": "refs/heads/main", "missing": "*"})
    checks = evaluate_bound_claims(cred, {"ref": "refs/heads/main"})
    assert checks == [
        BoundClaimCheck(key="missing", expected=["*"], actual=None, matched=False),
        BoundClaimCheck(
            key="ref", expected=["refs/heads/main"], actual="refs/heads/main", matched=True
        ),
    ]
