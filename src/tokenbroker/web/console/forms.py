"""Credential forms generated from the credential type's settings schema.

The backend's pydantic model gives its JSON schema; each property becomes a control (text,
number, checkbox, select, one-per-line list, textarea), so a new credential type gets its form
without a line here. What the form sends is turned back into the JSON the admin API takes, and
the store validates it against the same model, so errors come back in the API's words.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from multidict import MultiMapping
from pydantic import BaseModel

from tokenbroker.web.admin.views import sensitive_fields

# Field names are the API's: what the store's 422 names (``settings.role``) is the input.
SETTINGS_PREFIX = "settings."
_INTEGER = re.compile(r"^[+-]?\d{1,18}$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


@dataclass(frozen=True, slots=True)
class SettingSpec:
    """One settings property as the form shows it."""

    name: str
    kind: str  # string | integer | number | boolean | enum | list | multiline
    required: bool
    default: object
    options: tuple[str, ...] = ()
    sensitive: bool = False
    description: str | None = None
    minimum: float | None = None
    maximum: float | None = None

    @property
    def form_name(self) -> str:
        """The control's name: the API's field path."""
        return SETTINGS_PREFIX + self.name


def _without_null(prop: Mapping[str, object]) -> Mapping[str, object]:
    # ``X | None`` is anyOf [X, null]: the form shows X, and empty means "not set".
    options = prop.get("anyOf")
    if isinstance(options, list):
        kept = [o for o in options if isinstance(o, dict) and o.get("type") != "null"]
        if len(kept) == 1:
            return {**prop, **kept[0]}
    return prop


def _kind(prop: Mapping[str, object]) -> str:
    if "enum" in prop:
        return "enum"
    if prop.get("multiline") is True:
        return "multiline"
    kind = prop.get("type")
    if kind == "array":
        return "list"
    if kind in ("integer", "number", "boolean"):
        return str(kind)
    return "string"


def _bound(prop: Mapping[str, object], *names: str) -> float | None:
    for name in names:
        value = prop.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def setting_specs(model: type[BaseModel]) -> list[SettingSpec]:
    """The settings model's properties, in declaration order."""
    schema = model.model_json_schema()
    properties = schema.get("properties", {})
    required = set(schema.get("required", []))
    hidden = sensitive_fields(model)
    specs = []
    for name, raw in properties.items():
        prop = _without_null(raw)
        enum = prop.get("enum")
        specs.append(
            SettingSpec(
                name=name,
                kind=_kind(prop),
                required=name in required,
                default=prop.get("default"),
                options=tuple(str(v) for v in enum) if isinstance(enum, list) else (),
                sensitive=name in hidden,
                description=str(prop["description"]) if "description" in prop else None,
                minimum=_bound(prop, "minimum", "exclusiveMinimum"),
                maximum=_bound(prop, "maximum", "exclusiveMaximum"),
            )
        )
    return specs


def _convert(spec: SettingSpec, text: str) -> object:
    # A value that does not parse is sent as typed, so the schema refuses it in its own words.
    if spec.kind == "integer" and _INTEGER.match(text):
        return int(text)
    if spec.kind == "number" and _NUMBER.match(text):
        return float(text)
    if spec.kind == "list":
        return [line.strip() for line in text.splitlines() if line.strip()]
    return text


def settings_from_form(
    specs: Sequence[SettingSpec], form: MultiMapping[str], *, patch: bool
) -> dict[str, object]:
    """The settings the form describes; with ``patch``, a merge patch of them.

    An empty field is not set (its default applies); in a patch that is ``None``, which
    removes it, except for a sensitive field, which the form never shows: empty keeps it.
    """
    settings: dict[str, object] = {}
    for spec in specs:
        if spec.kind == "boolean":
            settings[spec.name] = form.get(spec.form_name) == "true"
            continue
        text = str(form.get(spec.form_name, ""))
        if spec.kind not in ("multiline", "list"):
            text = text.strip()
        if text.strip():
            settings[spec.name] = _convert(spec, text)
        elif patch and not spec.sensitive:
            settings[spec.name] = None
    return settings


def setting_hint(spec: SettingSpec) -> str:
    """What to type: the description, the default, the range, the shape."""
    parts = []
    if spec.description:
        parts.append(spec.description)
    if spec.kind == "list":
        parts.append("one per line")
    if spec.minimum is not None and spec.maximum is not None:
        parts.append(f"{spec.minimum:g} to {spec.maximum:g}")
    if spec.default not in (None, [], "") and spec.kind != "boolean":
        shown = (
            ", ".join(map(str, spec.default)) if isinstance(spec.default, list) else spec.default
        )
        parts.append(f"default {shown}")
    if spec.sensitive:
        parts.append("never shown; leave empty to keep the current value")
    return "; ".join(parts)


def setting_value(spec: SettingSpec, current: Mapping[str, object] | None) -> object:
    """The value a control starts with: the current setting (never a sensitive one)."""
    value = None if spec.sensitive or current is None else current.get(spec.name)
    if spec.kind == "boolean":
        return value if isinstance(value, bool) else spec.default is True
    if isinstance(value, list):
        return "\n".join(str(v) for v in value)
    return value


def bound_claims_from_form(form: MultiMapping[str]) -> dict[str, str | list[str]]:
    """Claim/value rows: a claim given on several rows accepts any of their values."""
    claims = form.getall("claim", [])
    values = form.getall("claim_value", [])
    grouped: dict[str, list[str]] = {}
    for claim, value in zip(claims, values, strict=False):
        key = str(claim).strip()
        if not key and not str(value).strip():
            continue
        grouped.setdefault(key, []).append(str(value).strip())
    return {k: v[0] if len(v) == 1 else v for k, v in grouped.items()}


def bound_claim_rows(claims: Mapping[str, str | Sequence[str]]) -> list[tuple[str, str]]:
    """The rows that show bound claims: one per accepted value."""
    rows = []
    for key, value in claims.items():
        for item in [value] if isinstance(value, str) else list(value):
            rows.append((key, str(item)))
    return rows
