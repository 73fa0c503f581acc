"""Bound claims follow Vault's semantics: pointers, literal names, globs, lists, JSON text."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenbroker.identity.models import Claims
from tokenbroker.policy.bound_claims import (
    MISSING,
    BoundClaimCheck,
    bound_claims_satisfied,
    claim_value,
    escape_json_pointer_token,
    glob_match,
    match_bound_claims,
    resolve_json_pointer,
    split_json_pointer,
)
from tokenbroker.policy.models import BoundClaims

CIRCLECI: Claims = {
    "iss": "https://oidc.circleci.com/org/6a9b",
    "sub": "org/6a9b/project/77/user/u1/vcs-origin/github.com/acme/app/vcs-ref/refs/heads/main",
    "oidc.circleci.com/project-id": "77",
    "oidc.circleci.com/vcs-origin": "github.com/acme/app",
    "oidc.circleci.com/vcs-ref": "refs/heads/main",
    "oidc.circleci.com/context-ids": ["ctx-1", "ctx-2"],
    "oidc.circleci.com/ssh-rerun": False,
    "run": 42,
    "ratio": 1.5,
    "nothing": None,
    "https://aws.amazon.com/tags": {
        "principal_tags": {"env": ["prod"], "team/name": ["infra"]},
    },
    "a~b": "tilde",
    "matrix": [["x", "y"], {"k": "v"}],
    "empty": "",
}


# (pattern, value, matches)
GLOB_CASES = [
    ("main", "main", True),
    ("main", "mainline", False),
    ("main", "xmain", False),
    ("", "", True),
    ("", "a", False),
    ("*", "", True),
    ("*", "anything/at/all", True),
    ("refs/heads/*", "refs/heads/main", True),
    ("refs/heads/*", "refs/heads/", True),
    ("refs/heads/*", "refs/tags/v1", False),
    ("*/main", "refs/heads/main", True),
    ("*/main", "refs/heads/maint", False),
    ("a*b*c", "abc", True),
    ("a*b*c", "aXXbYYc", True),
    ("a*b*c", "aXXbYY", False),
    ("a*b*c", "acb", False),
    ("**", "x", True),
    ("a**", "a", True),
    ("*a", "baa", True),
    ("*ab", "aab", True),
    ("*ab", "aba", False),
    # Everything but '*' is literal: regex and fnmatch metacharacters included.
    ("a.c", "abc", False),
    ("a.c", "a.c", True),
    ("a?c", "abc", False),
    ("a?c", "a?c", True),
    ("[ab]", "a", False),
    ("[ab]", "[ab]", True),
    ("a+", "aa", False),
    ("^x$", "^x$", True),
    ("\\d", "\\d", True),
    ("\\d", "1", False),
    ("multi\nline", "multi\nline", True),
    ("*", "multi\nline", True),
    ("ünï*", "ünïcode", True),
]


@pytest.mark.parametrize(("pattern", "value", "expected"), GLOB_CASES)
def test_glob_matches_only_star_as_a_wildcard_anchored_at_both_ends(
    pattern: str, value: str, expected: bool
) -> None:
    assert glob_match(pattern, value) is expected


def test_glob_with_many_stars_against_a_long_value_finishes_quickly() -> None:
    # A backtracking regex would take exponential time here; ours is bounded by len * len.
    pattern = "a*" * 30 + "b"
    assert glob_match(pattern, "a" * 5000) is False


# (pointer, expected value) for RFC 6901 resolution against CIRCLECI.
POINTER_CASES: list[tuple[str, object]] = [
    ("", CIRCLECI),
    ("/run", 42),
    ("/https:~1~1aws.amazon.com~1tags/principal_tags/env", ["prod"]),
    ("/https:~1~1aws.amazon.com~1tags/principal_tags/env/0", "prod"),
    ("/https:~1~1aws.amazon.com~1tags/principal_tags/team~1name/0", "infra"),
    ("/a~0b", "tilde"),
    ("/oidc.circleci.com~1context-ids/1", "ctx-2"),
    ("/matrix/0/1", "y"),
    ("/matrix/1/k", "v"),
    ("/oidc.circleci.com~1context-ids/2", MISSING),
    ("/oidc.circleci.com~1context-ids/-", MISSING),
    ("/oidc.circleci.com~1context-ids/01", MISSING),
    ("/oidc.circleci.com~1context-ids/x", MISSING),
    ("/run/0", MISSING),
    ("/absent", MISSING),
    ("/absent/deeper", MISSING),
    ("/a~2b", MISSING),
    ("/nothing", None),
]


@pytest.mark.parametrize(("pointer", "expected"), POINTER_CASES)
def test_json_pointer_resolves_like_rfc_6901(pointer: str, expected: object) -> None:
    assert resolve_json_pointer(CIRCLECI, pointer) == expected or (
        expected is MISSING and resolve_json_pointer(CIRCLECI, pointer) is MISSING
    )


@pytest.mark.parametrize(
    ("pointer", "tokens"),
    [
        ("", []),
        ("/", [""]),
        ("/a/b", ["a", "b"]),
        ("/~01", ["~1"]),
        ("/~10", ["/0"]),
        ("/a~1b~0c", ["a/b~c"]),
    ],
)
def test_pointer_escapes_decode_tilde_one_before_tilde_zero(
    pointer: str, tokens: list[str]
) -> None:
    assert split_json_pointer(pointer) == tokens


@pytest.mark.parametrize("pointer", ["a/b", "/a~", "/a~2", "/~x"])
def test_invalid_pointers_are_recognised(pointer: str) -> None:
    assert split_json_pointer(pointer) is None


def test_a_key_without_a_leading_slash_is_a_literal_claim_name() -> None:
    assert claim_value(CIRCLECI, "oidc.circleci.com/vcs-ref") == "refs/heads/main"
    assert claim_value(CIRCLECI, "https://aws.amazon.com/tags") == {
        "principal_tags": {"env": ["prod"], "team/name": ["infra"]}
    }


# (bound claims, satisfied)
MATCH_CASES: list[tuple[BoundClaims, bool]] = [
    ({}, True),
    ({"oidc.circleci.com/vcs-ref": "refs/heads/main"}, True),
    ({"oidc.circleci.com/vcs-ref": "refs/heads/dev"}, False),
    ({"oidc.circleci.com/vcs-ref": ["refs/heads/dev", "refs/heads/main"]}, True),
    ({"oidc.circleci.com/vcs-ref": ["refs/heads/dev", "refs/tags/*"]}, False),
    ({"oidc.circleci.com/vcs-ref": "refs/heads/*"}, True),
    ({"oidc.circleci.com/vcs-origin": "github.com/acme/*"}, True),
    ({"oidc.circleci.com/vcs-origin": "github.com/fork/*"}, False),
    # A list claim matches when any element matches.
    ({"oidc.circleci.com/context-ids": "ctx-2"}, True),
    ({"oidc.circleci.com/context-ids": "ctx-3"}, False),
    ({"oidc.circleci.com/context-ids": ["ctx-9", "ctx-1"]}, True),
    # Booleans and numbers compare by their JSON text.
    ({"oidc.circleci.com/ssh-rerun": "false"}, True),
    ({"oidc.circleci.com/ssh-rerun": "False"}, False),
    ({"oidc.circleci.com/ssh-rerun": "0"}, False),
    ({"run": "42"}, True),
    ({"run": "4*"}, True),
    ({"run": "42.0"}, False),
    ({"ratio": "1.5"}, True),
    # A missing claim never matches, not even '*'.
    ({"absent": "*"}, False),
    ({"/absent/deeper": "*"}, False),
    ({"nothing": "*"}, False),
    ({"nothing": "null"}, False),
    # Objects are never matched as a whole.
    ({"https://aws.amazon.com/tags": "*"}, False),
    # Pointers reach into nested claims.
    ({"/https:~1~1aws.amazon.com~1tags/principal_tags/env": "prod"}, True),
    ({"/https:~1~1aws.amazon.com~1tags/principal_tags/env": "dev"}, False),
    ({"/https:~1~1aws.amazon.com~1tags/principal_tags/team~1name/0": "infra"}, True),
    ({"/matrix/0": "y"}, True),
    ({"/oidc.circleci.com~1project-id": "77"}, True),
    ({"/sub": "org/6a9b/project/77/*/vcs-ref/refs/heads/main"}, True),
    # The empty string matches only the empty string (or '*').
    ({"empty": ""}, True),
    ({"empty": "*"}, True),
    ({"empty": "x"}, False),
    # An empty list of alternatives matches nothing.
    ({"run": []}, False),
    # All keys must match.
    ({"oidc.circleci.com/project-id": "77", "oidc.circleci.com/vcs-ref": "refs/heads/main"}, True),
    ({"oidc.circleci.com/project-id": "77", "oidc.circleci.com/vcs-ref": "refs/heads/x"}, False),
    ({"oidc.circleci.com/project-id": "78", "oidc.circleci.com/vcs-ref": "refs/heads/main"}, False),
]


@pytest.mark.parametrize(("bound", "satisfied"), MATCH_CASES)
def test_bound_claims_match_with_vault_semantics(bound: BoundClaims, satisfied: bool) -> None:
    assert bound_claims_satisfied(match_bound_claims(bound, CIRCLECI)) is satisfied


def test_one_check_per_key_in_sorted_key_order_with_expected_and_actual() -> None:
    checks = match_bound_claims(
        {
            "run": "4*",
            "absent": ["a", "b"],
            "/https:~1~1aws.amazon.com~1tags/principal_tags/env": "dev",
        },
        CIRCLECI,
    )
    assert checks == [
        BoundClaimCheck(
            key="/https:~1~1aws.amazon.com~1tags/principal_tags/env",
            expected=["dev"],
            actual=["prod"],
            matched=False,
        ),
        BoundClaimCheck(key="absent", expected=["a", "b"], actual=None, matched=False),
        BoundClaimCheck(key="run", expected=["4*"], actual=42, matched=True),
    ]


def test_no_checks_are_satisfied() -> None:
    assert bound_claims_satisfied([]) is True


# Properties.

_no_star = st.text().filter(lambda s: "*" not in s)


@given(pattern=_no_star, value=st.text())
def test_a_pattern_without_a_star_matches_only_itself(pattern: str, value: str) -> None:
    assert glob_match(pattern, value) is (pattern == value)


@given(value=st.text())
def test_a_star_matches_every_string(value: str) -> None:
    assert glob_match("*", value)


@given(pattern=st.text(alphabet="ab*", max_size=12), value=st.text(alphabet="ab", max_size=12))
def test_glob_agrees_with_an_anchored_regex_reference(pattern: str, value: str) -> None:
    reference = "".join(".*" if c == "*" else re.escape(c) for c in pattern)
    assert glob_match(pattern, value) is bool(re.fullmatch(reference, value, re.DOTALL))


_claim_scalar = st.one_of(
    st.text(max_size=8),
    st.booleans(),
    st.integers(),
    st.none(),
    st.lists(st.text(max_size=8), max_size=3),
)


@given(
    claims=st.dictionaries(st.text(max_size=8), _claim_scalar, max_size=4),
    key=st.text(max_size=8).filter(lambda k: not k.startswith("/")),
    expected=st.one_of(st.text(max_size=8), st.lists(st.text(max_size=8), max_size=3)),
)
def test_pointer_and_literal_forms_agree_on_top_level_claims(
    claims: dict[str, object], key: str, expected: str | list[str]
) -> None:
    literal = match_bound_claims({key: expected}, claims)[0]
    pointer = match_bound_claims({"/" + escape_json_pointer_token(key): expected}, claims)[0]
    assert literal.matched is pointer.matched
    assert literal.actual == pointer.actual


@given(token=st.text())
def test_escaping_a_token_round_trips_through_the_pointer_parser(token: str) -> None:
    assert split_json_pointer("/" + escape_json_pointer_token(token)) == [token]
