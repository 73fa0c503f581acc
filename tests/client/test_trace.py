"""The dry-run decision trace as a person reads it in a CI log."""

from __future__ import annotations

from tokenbroker.client.trace import render_trace

DENIED = {
    "allowed": False,
    "credential": "prod-only-vault",
    "type": "vault_oidc",
    "error": "access_denied",
    "reason": "bound_claims_mismatch",
    "error_description": "claim 'environmentId' does not match",
    "checks": [
        {"check": "token", "ok": True, "detail": "valid", "issuer": "dev-env0", "kid": "k1"},
        {"check": "identity", "ok": True, "detail": "env0 profile read the claims",
         "org": "o-1", "project": "p-1", "environment": "staging", "subject": "s"},
        {"check": "bound_claims", "ok": False, "detail": "a bound claim does not match",
         "claims": [
             {"claim": "environmentId", "expected": ["prod-1"], "actual": "staging",
              "matched": False},
             {"claim": "/aud/0", "expected": ["https://prod.*"], "actual": "https://prod.x",
              "matched": True},
         ]},
    ],
}  # fmt: skip


def test_each_check_gets_a_mark_and_its_detail() -> None:
    lines = render_trace(DENIED).splitlines()
    assert lines[0] == "dry run: credential 'prod-only-vault' (vault_oidc) would be REFUSED"
    assert lines[1].startswith("  ✓ token ")
    assert "[issuer=dev-env0  kid=k1]" in lines[1]
    assert "environment=staging" in lines[2]
    assert lines[3].startswith("  ✗ bound_claims  a bound claim does not match")


def test_bound_claims_show_expected_and_actual_values() -> None:
    text = render_trace(DENIED)
    assert "      ✗ environmentId  expected [prod-1], actual staging" in text
    assert "      ✓ /aud/0         expected [https://prod.*], actual https://prod.x" in text


def test_a_refusal_ends_with_the_reason_and_the_fix() -> None:
    lines = render_trace(DENIED).splitlines()
    assert lines[-2] == (
        "refused: access_denied, bound_claims_mismatch: claim 'environmentId' does not match"
    )
    assert lines[-1].startswith("fix: ")
    assert "expected and actual" in lines[-1]


def test_an_allowed_trace_says_it_would_be_issued_without_a_fix() -> None:
    trace = {"allowed": True, "credential": "c", "checks": [{"check": "token", "ok": True,
                                                             "detail": "valid"}]}  # fmt: skip
    text = render_trace(trace)
    assert text.startswith("dry run: credential 'c' would be ISSUED\n  ✓ token  valid")
    assert "fix:" not in text


def test_an_absent_claim_is_shown_as_absent() -> None:
    trace = {"allowed": False, "checks": [{"check": "bound_claims", "ok": False, "detail": "d",
             "claims": [{"claim": "ref", "expected": ["main"], "actual": None,
                         "matched": False}]}]}  # fmt: skip
    assert "expected [main], actual (absent)" in render_trace(trace)
