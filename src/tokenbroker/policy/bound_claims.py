"""Bound claims with Vault's semantics: which token claims a credential insists on.

A key starting with ``/`` is an RFC 6901 JSON pointer into nested claims; any other key is a
literal claim name, so ``oidc.circleci.com/vcs-ref`` works. An expected value is a string or a
list of strings (any may match); ``*`` globs any run of characters and nothing else is special;
a list-valued claim matches when any element matches; a missing claim never matches; booleans
and numbers compare by their JSON text. All keys must match.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from tokenbroker.identity.models import Claims
from tokenbroker.policy.models import BoundClaims

_ARRAY_INDEX = re.compile(r"^(0|[1-9][0-9]*)$")


@dataclass(frozen=True)
class BoundClaimCheck:
    """One bound-claim key checked: what was expected, what the token held, whether it matched."""

    key: str
    expected: list[str]
    actual: object
    matched: bool


class _Missing:
    """Marks a claim the token does not have (distinct from a JSON null)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: object = _Missing()


def glob_match(pattern: str, value: str) -> bool:
    """Whether ``value`` matches ``pattern`` in full, where only ``*`` (any run) is special.

    Linear-backtracking matcher rather than a regex: patterns come from admins and values from
    tokens, so a pattern with many stars must not make matching blow up.
    """
    p = v = 0
    star_p = -1
    star_v = 0
    while v < len(value):
        if p < len(pattern) and pattern[p] == "*":
            star_p, star_v = p, v
            p += 1
        elif p < len(pattern) and pattern[p] == value[v]:
            p += 1
            v += 1
        elif star_p >= 0:
            # Let the last star absorb one more character and retry from just after it.
            star_v += 1
            p, v = star_p + 1, star_v
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


def split_json_pointer(pointer: str) -> list[str] | None:
    """The reference tokens of an RFC 6901 pointer, or None when it is not a valid pointer."""
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        return None
    tokens = []
    for raw in pointer[1:].split("/"):
        # "~" must be followed by 0 or 1; anything else is not a valid pointer.
        if re.search(r"~(?![01])", raw):
            return None
        tokens.append(raw.replace("~1", "/").replace("~0", "~"))
    return tokens


def escape_json_pointer_token(token: str) -> str:
    """Escape one reference token for use in a JSON pointer (``~`` -> ``~0``, ``/`` -> ``~1``)."""
    return token.replace("~", "~0").replace("/", "~1")


def resolve_json_pointer(document: object, pointer: str) -> object:
    """The value ``pointer`` names inside ``document``, or ``MISSING``."""
    tokens = split_json_pointer(pointer)
    if tokens is None:
        return MISSING
    current = document
    for token in tokens:
        if isinstance(current, Mapping):
            if token not in current:
                return MISSING
            current = current[token]
        elif isinstance(current, list):
            if not _ARRAY_INDEX.match(token) or int(token) >= len(current):
                return MISSING
            current = current[int(token)]
        else:
            return MISSING
    return current


def claim_value(claims: Claims, key: str) -> object:
    """The claim a bound-claim key names: a JSON pointer if it starts with ``/``, else a name."""
    if key.startswith("/"):
        return resolve_json_pointer(claims, key)
    return claims.get(key, MISSING)


def _scalar_text(value: object) -> str | None:
    # JSON text of a scalar claim; None for values a bound claim can never match.
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return json.dumps(value) if math.isfinite(value) else None
    return None


def claim_texts(value: object) -> list[str]:
    """The strings a claim value offers for matching; a list offers each of its scalar elements."""
    if value is MISSING or value is None:
        return []
    if isinstance(value, list):
        return [t for t in (_scalar_text(item) for item in value) if t is not None]
    text = _scalar_text(value)
    return [] if text is None else [text]


def expected_values(expected: str | Sequence[str]) -> list[str]:
    """A bound claim's expected value as a list of alternatives."""
    return [expected] if isinstance(expected, str) else list(expected)


def match_bound_claims(bound: BoundClaims, claims: Claims) -> list[BoundClaimCheck]:
    """Check every bound-claim key against the claims; one check per key, in sorted key order.

    Sorted order keeps traces stable whatever order the store returns the keys in.
    """
    checks = []
    for key in sorted(bound):
        expected = expected_values(bound[key])
        actual = claim_value(claims, key)
        offered = claim_texts(actual)
        matched = any(glob_match(pattern, text) for pattern in expected for text in offered)
        checks.append(
            BoundClaimCheck(
                key=key,
                expected=expected,
                actual=None if actual is MISSING else actual,
                matched=matched,
            )
        )
    return checks


def bound_claims_satisfied(checks: Iterable[BoundClaimCheck]) -> bool:
    """Whether every check matched (no bound claims at all is satisfied)."""
    return all(check.matched for check in checks)
