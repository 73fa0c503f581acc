"""Checks on what the store is asked to keep: pure functions that raise UnprocessableEntity.

The admin API feeds the store directly, so the store checks every field itself and names each
problem (``settings.role``, ``bound_claims./repo``) the way the caller spelled it. What a
credential type is comes from the :class:`CredentialTypes` the store was built with: the store
imports no backends.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, cast

from pydantic import BaseModel, ValidationError

from tokenbroker.config.models import NAME_PATTERN
from tokenbroker.config.urls import url_context
from tokenbroker.errors import UnprocessableEntity, UnusableCredentialType
from tokenbroker.policy.bound_claims import split_json_pointer
from tokenbroker.policy.models import BoundClaims, TokenMode
from tokenbroker.policy.rules import (
    MintedAudience,
    TypeTraits,
    audience_conflicts,
    mint_audience,
    token_mode_problems,
)

logger = logging.getLogger(__name__)

# The same shape as config's `Name`, so TOML and the admin API accept the same names.
_NAME = NAME_PATTERN
NAME_RULE = "must be 1-128 letters, digits, '_', '.' or '-', starting alphanumeric"
TOKEN_MODES: tuple[TokenMode, ...] = ("passthrough", "mint")
OUTCOMES = ("success", "denied", "error")
MAX_TEXT = 256
MAX_AUDIENCE = 1024
MAX_BOUND_CLAIMS = 64
MAX_BOUND_VALUES = 256
MAX_AUDIT_PAGE = 1000
# Ids are 64-bit on PostgreSQL; a larger number cannot even be sent as a parameter.
MAX_ID = 2**63 - 1


class CredentialTypes(Protocol):
    """The credential types a store may keep, handed to it by whoever builds it
    (``backends.registry.INSTALLED``: the installed ones).

    ``settings_model`` and ``traits`` raise UnusableCredentialType for a type that is not
    installed or cannot be loaded.
    """

    def settings_model(self, type_name: str) -> type[BaseModel]:
        """The schema a credential's settings must validate against."""
        ...

    def traits(self, type_name: str) -> TypeTraits:
        """What the type declares: mint only, its default mint audience."""
        ...

    def advisories(self, settings: BaseModel) -> list[str]:
        """What valid settings advise against, a sentence each; empty when nothing."""
        ...


@dataclass
class Problems:
    """Field problems collected before anything is written."""

    items: list[dict[str, str]] = field(default_factory=list)

    def add(self, field_name: str, message: str) -> None:
        """Record one problem with one field."""
        self.items.append({"field": field_name, "message": message})

    def raise_if_any(self, reason: str, what: str) -> None:
        """Raise a 422 naming every field (never their values) if anything was recorded."""
        if self.items:
            names = ", ".join(item["field"] for item in self.items)
            raise UnprocessableEntity(
                reason, f"{what} does not validate: {names}", details={"fields": self.items}
            )


def check_name(problems: Problems, field_name: str, value: object) -> None:
    """A name of an organization, issuer or credential."""
    if not isinstance(value, str) or not _NAME.match(value):
        problems.add(field_name, NAME_RULE)


def check_text(problems: Problems, field_name: str, value: object, limit: int = MAX_TEXT) -> None:
    """A free identifier from a platform (org id, project id): 1..limit printable characters."""
    if not isinstance(value, str) or not 1 <= len(value) <= limit:
        problems.add(field_name, f"must be a string of 1-{limit} characters")
    elif not value.isprintable():
        problems.add(field_name, "must not contain control characters")


def check_token_mode(
    problems: Problems,
    types: CredentialTypes,
    type_name: object,
    token: object,
    audience: object,
) -> None:
    """``token`` is passthrough or mint, as the type allows; an audience is a short string."""
    if token not in TOKEN_MODES:
        problems.add("token", "must be 'passthrough' or 'mint'")
    if audience is not None:
        check_text(problems, "audience", audience, MAX_AUDIENCE)
    traits = _traits(types, type_name) if isinstance(type_name, str) else None
    for field_name, message in token_mode_problems(token, audience, traits):
        problems.add(field_name, message)


def minted_audience(
    types: CredentialTypes,
    organization: str,
    name: str,
    type_name: str,
    token: str,
    audience: str | None,
) -> MintedAudience | None:
    """What a credential mints for, as the audience rule sees it; None when it mints nothing."""
    if token != "mint":
        return None
    traits = _traits(types, type_name)
    effective = mint_audience(audience, traits)
    if effective is None:
        return None
    handed_out = traits is not None and traits.mint_only
    return MintedAudience(organization, name, effective, handed_out)


def _traits(types: CredentialTypes, type_name: str) -> TypeTraits | None:
    # None for an unusable type: check_settings reports it as the ``type`` field's problem.
    try:
        return types.traits(type_name)
    except UnusableCredentialType:
        return None


def check_audience_unshared(
    problems: Problems, candidate: MintedAudience | None, others: Iterable[MintedAudience]
) -> None:
    """A token handed to runners shares its audience with no other mint credential."""
    if candidate is None:
        return
    for clash in audience_conflicts(candidate, others):
        problems.add("audience", clash)


def check_bound_claims(problems: Problems, bound_claims: object) -> BoundClaims:
    """Claim name (or JSON pointer) -> string or non-empty list of strings."""
    if not isinstance(bound_claims, Mapping):
        problems.add("bound_claims", "must be an object of claim -> string or list of strings")
        return {}
    if len(bound_claims) > MAX_BOUND_CLAIMS:
        problems.add("bound_claims", f"must have at most {MAX_BOUND_CLAIMS} keys")
    clean: dict[str, str | list[str]] = {}
    for key, value in bound_claims.items():
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_TEXT:
            problems.add("bound_claims", f"keys must be strings of 1-{MAX_TEXT} characters")
            continue
        where = f"bound_claims.{key}"
        if key.startswith("/") and split_json_pointer(key) is None:
            problems.add(where, "a key starting with '/' must be a JSON pointer ('~' as ~0 or ~1)")
        if isinstance(value, str):
            clean[key] = value
        elif isinstance(value, list) and all(isinstance(item, str) for item in value):
            if not value:
                problems.add(where, "a list must not be empty")
            elif len(value) > MAX_BOUND_VALUES:
                problems.add(where, f"a list must have at most {MAX_BOUND_VALUES} values")
            clean[key] = list(cast(list[str], value))
        else:
            problems.add(where, "must be a string or a list of strings")
    return clean


def check_settings(
    problems: Problems,
    types: CredentialTypes,
    type_name: str,
    settings: object,
    *,
    allow_private_backends: bool,
) -> dict[str, object]:
    """Validate settings with the credential type's schema; the JSON form of the result.

    ``allow_private_backends`` is ``[security]``'s: whether URLs may name private addresses.
    """
    try:
        model = types.settings_model(type_name)
    except UnusableCredentialType as exc:
        problems.add("type", exc.problem)
        return {}
    if not isinstance(settings, Mapping):
        problems.add("settings", "must be an object")
        return {}
    try:
        validated: BaseModel = model.model_validate(
            dict(settings), context=url_context(allow_private_backends=allow_private_backends)
        )
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False, include_context=False):
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.add(_settings_location(error["loc"]), message)
        return {}
    dumped: dict[str, object] = validated.model_dump(mode="json")
    return dumped


def warn_on_settings(
    types: CredentialTypes,
    organization: str,
    name: str,
    type_name: str,
    settings: Mapping[str, object],
) -> list[str]:
    """Log (WARNING) what the type's schema advises against in valid settings; return it."""
    try:
        validated = types.settings_model(type_name).model_validate(dict(settings))
    except (UnusableCredentialType, ValidationError):
        return []  # reported as problems by check_settings
    advisories = types.advisories(validated)
    for advice in advisories:
        logger.warning("credential %s of organization %s: %s", name, organization, advice)
    return advisories


def _settings_location(loc: tuple[int | str, ...]) -> str:
    out = "settings"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def check_audit_query(
    *,
    outcome: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    before_id: int | None,
    filters: Mapping[str, str | None],
) -> None:
    """Filters of an audit listing (``filters``: the text ones, by name)."""
    problems = Problems()
    if outcome is not None and outcome not in OUTCOMES:
        problems.add("outcome", f"must be one of {', '.join(OUTCOMES)}")
    for name, value in (("since", since), ("until", until)):
        if value is not None and (value.tzinfo is None or value.utcoffset() is None):
            problems.add(name, "must carry a timezone")
    if isinstance(limit, bool) or not 1 <= limit <= MAX_AUDIT_PAGE:
        problems.add("limit", f"must be 1-{MAX_AUDIT_PAGE}")
    if before_id is not None and (isinstance(before_id, bool) or not 1 <= before_id <= MAX_ID):
        problems.add("before_id", f"must be an integer from 1 to {MAX_ID}")
    for name, text in filters.items():
        if text is not None and "\x00" in text:
            problems.add(name, "must not contain NUL characters")
    problems.raise_if_any("invalid_audit_query", "audit query")
