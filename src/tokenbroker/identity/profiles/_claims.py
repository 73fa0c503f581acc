"""Typed reads of claims for the profiles: a missing or ill-typed claim is an InvalidToken."""

from __future__ import annotations

from collections.abc import Mapping

from tokenbroker.errors import InvalidToken
from tokenbroker.identity.models import Claims

_MISSING = object()


def required_str(claims: Claims, name: str, *fallbacks: str) -> str:
    """The non-empty string claim ``name`` (or the first fallback present); else InvalidToken."""
    value = optional_str(claims, name, *fallbacks)
    if value is None:
        raise InvalidToken("claim_missing", f"the token has no {name!r} claim")
    return value


def optional_str(claims: Claims, name: str, *fallbacks: str) -> str | None:
    """The string claim ``name`` (or the first fallback present), None when absent or empty."""
    for key in (name, *fallbacks):
        value = claims.get(key, _MISSING)
        if value is _MISSING or value is None:
            continue
        if not isinstance(value, str):
            raise InvalidToken("claim_invalid", f"the {key!r} claim is not a string")
        if value:
            return value
    return None


def optional_text(claims: Claims, name: str) -> str | None:
    """The claim ``name`` as text: a string, or an integer (platforms number builds); None when
    absent, null or empty. A boolean, list or object is InvalidToken."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidToken("claim_invalid", f"the {name!r} claim is not a string")
    return str(value) or None


def details_of(claims: Claims, names: tuple[str, ...]) -> dict[str, str]:
    """The claims of ``names`` that are present, as text (see ``optional_text``)."""
    read = {name: optional_text(claims, name) for name in names}
    return {name: value for name, value in read.items() if value is not None}


def optional_bool(claims: Claims, name: str) -> bool | None:
    """The boolean claim ``name``, None when absent; any other type is InvalidToken."""
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise InvalidToken("claim_invalid", f"the {name!r} claim is not a boolean")
    return value


def resolve_pointer(claims: Claims, pointer: str) -> object | None:
    """Resolve an RFC 6901 JSON pointer into the claims; None when it leads nowhere."""
    if pointer == "":
        return claims
    if not pointer.startswith("/"):
        raise ValueError(f"JSON pointer {pointer!r} must start with '/'")
    node: object = claims
    for raw in pointer[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping):
            if token not in node:
                return None
            node = node[token]
        elif isinstance(node, list):
            if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
                return None
            index = int(token)
            if index >= len(node):
                return None
            node = node[index]
        else:
            return None
    return node
