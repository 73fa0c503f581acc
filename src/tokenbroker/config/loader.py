"""Load TOML, apply ``TOKENBROKER_<SECTION>__<KEY>`` overrides, validate, report every problem."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from tokenbroker.config.models import Settings
from tokenbroker.errors import ConfigError

ENV_PREFIX = "TOKENBROKER_"
_OVERRIDABLE_SECTIONS = frozenset(
    {"server", "logging", "store", "admin", "signing", "rate_limit", "exchange"}
)


def load_settings(path: Path | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the TOML file at ``path`` (or nothing), apply env overrides and validate."""
    raw: dict[str, object] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError([f"{path}: no such file"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([f"{path}: cannot be read: {exc}"]) from None
    return parse_settings(raw, os.environ if environ is None else environ)


def parse_settings(raw: Mapping[str, object], environ: Mapping[str, str]) -> Settings:
    """Validate an already-parsed config mapping with env overrides applied."""
    merged: dict[str, object] = {k: v for k, v in raw.items()}
    _apply_env_overrides(merged, environ)
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_problems(exc)) from None
    return settings


def _apply_env_overrides(raw: dict[str, object], environ: Mapping[str, str]) -> None:
    # Only `TOKENBROKER_<SECTION>__<KEY>` names a config key; other TOKENBROKER_* variables
    # (TOKENBROKER_URL, TOKENBROKER_PLATFORM_TOKEN, ...) belong to the client and the tests.
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        if section not in _OVERRIDABLE_SECTIONS or not key:
            continue
        current = raw.get(section)
        table: dict[str, object] = dict(current) if isinstance(current, dict) else {}
        table[key] = _parse_env_value(value)
        raw[section] = table


def _parse_env_value(value: str) -> object:
    # JSON gives numbers, booleans and lists; anything that is not JSON is a plain string.
    try:
        parsed: object = json.loads(value)
    except ValueError:
        return value
    return parsed if isinstance(parsed, int | float | bool | list) else value


def _problems(exc: ValidationError) -> list[str]:
    lines: list[str] = []
    for error in exc.errors(include_url=False, include_input=False):
        location = _format_location(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        for part in message.split("\n"):
            # Cross-reference problems carry their own location.
            if location and not part.startswith(tuple(_TOP_LEVEL)):
                lines.append(f"{location}: {part}")
            else:
                lines.append(part)
    return lines


_TOP_LEVEL = ("issuers[", "organizations[", "credentials[", "assignments[")


def _format_location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out
