"""Write the broker's config as TOML, so the benchmark runs ``tokenbroker serve`` as users do.

Only what a tokenbroker config holds: tables of scalars, arrays of tables, inline tables and
arrays inside them. The stdlib reads TOML but does not write it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else json.dumps(name)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A JSON string of ASCII text is a valid TOML basic string (same escapes).
        return json.dumps(value, ensure_ascii=True)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(str(k))} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _body(table: Mapping[str, object]) -> list[str]:
    return [f"{_key(key)} = {_value(value)}" for key, value in table.items() if value is not None]


def dump_toml(config: Mapping[str, object]) -> str:
    """A config mapping (top-level tables and arrays of tables) as TOML text."""
    lines: list[str] = []
    for section, content in config.items():
        if isinstance(content, Mapping):
            lines += [f"[{_key(section)}]", *_body(content), ""]
        elif isinstance(content, list):
            for item in content:
                if not isinstance(item, Mapping):
                    raise TypeError(f"[[{section}]] items must be tables")
                lines += [f"[[{_key(section)}]]", *_body(item), ""]
        else:
            raise TypeError(f"top-level {section!r} must be a table or an array of tables")
    return "\n".join(lines)
