"""The generic profile: JSON pointers into the claims, or a regex with named groups on sub."""

from __future__ import annotations

import pytest

from tokenbroker.errors import InvalidToken
from tokenbroker.identity.profiles.generic import identity_from_claims, option_problems

CLAIMS: dict[str, object] = {
    "sub": "tenant/acme/app/billing/stage/prod",
    "ctx": {"org": {"id": "acme"}, "a/b": "slash", "m~n": "tilde", "ids": ["x", 42]},
    "project": "billing",
}


def test_json_pointers_pick_org_and_project() -> None:
    options = {"org_pointer": "/ctx/org/id", "project_pointer": "/project"}
    identity = identity_from_claims("gen", CLAIMS, options)
    assert (identity.org, identity.project, identity.subject) == ("acme", "billing", CLAIMS["sub"])


@pytest.mark.parametrize(
    ("pointer", "expected"),
    [("/ctx/a~1b", "slash"), ("/ctx/m~0n", "tilde"), ("/ctx/ids/0", "x"), ("/ctx/ids/1", "42")],
)
def test_json_pointer_escapes_and_array_indexes_follow_rfc_6901(
    pointer: str, expected: str
) -> None:
    assert identity_from_claims("gen", CLAIMS, {"org_pointer": pointer}).org == expected


def test_sub_pattern_named_groups_give_org_project_environment() -> None:
    pattern = r"tenant/(?P<org>[^/]+)/app/(?P<project>[^/]+)/stage/(?P<environment>.+)"
    options = {"sub_pattern": pattern}
    identity = identity_from_claims("gen", CLAIMS, options)
    assert (identity.org, identity.project, identity.environment) == ("acme", "billing", "prod")


def test_a_pointer_wins_over_a_group_for_the_same_field() -> None:
    options = {"sub_pattern": r"tenant/(?P<org>[^/]+)/.*", "org_pointer": "/project"}
    assert identity_from_claims("gen", CLAIMS, options).org == "billing"


def test_sub_not_matching_the_pattern_is_refused() -> None:
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("gen", CLAIMS, {"sub_pattern": r"repo:(?P<org>.+)"})
    assert caught.value.reason == "claim_invalid"


@pytest.mark.parametrize("pointer", ["/nope", "/ctx/ids/7", "/ctx/ids/01", "/sub/x"])
def test_org_pointer_leading_nowhere_is_refused(pointer: str) -> None:
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("gen", CLAIMS, {"org_pointer": pointer})
    assert caught.value.reason == "claim_missing"


def test_org_pointer_at_an_object_is_refused() -> None:
    with pytest.raises(InvalidToken) as caught:
        identity_from_claims("gen", CLAIMS, {"org_pointer": "/ctx/org"})
    assert caught.value.reason == "claim_invalid"


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({}, "org_pointer: required"),
        ({"sub_pattern": "(?P<project>.+)"}, "org_pointer: required"),
        ({"sub_pattern": "(unclosed"}, "sub_pattern: not a valid regex"),
        ({"org_pointer": "org"}, "org_pointer: must be a JSON pointer"),
    ],
)
def test_unusable_options_are_reported(options: dict[str, str], problem: str) -> None:
    assert any(p.startswith(problem) for p in option_problems(options))


def test_usable_options_have_no_problems() -> None:
    assert option_problems({"sub_pattern": "(?P<org>.+)"}) == []
    assert option_problems({"org_pointer": "/org"}) == []
