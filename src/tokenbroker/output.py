"""Render an issued credential in the formats runners consume.

The common formats (json, env, shell) are rendered here; a credential type renders its own
(``output_formats``, ``runner_documents``) in its backend.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
from collections.abc import Mapping

from tokenbroker.backends import registry
from tokenbroker.backends.base import (
    COMMON_FORMATS,
    BackendFactory,
    FormatRenderer,
    IssuedCredential,
    traits_of,
)
from tokenbroker.clock import isoformat_utc
from tokenbroker.errors import InvalidRequest

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@functools.cache
def known_formats() -> tuple[str, ...]:
    """Every output format an installed credential type renders, the common ones first."""
    formats = sorted(COMMON_FORMATS)
    for type_name in registry.credential_types():
        try:
            declared = traits_of(registry.backend_class(type_name)).formats
        except registry.BackendUnavailable:
            # A type that cannot load renders nothing; the exchange reports it when used.
            continue
        formats += sorted(declared - set(formats))
    return tuple(formats)


def parse_format(value: str | None) -> str:
    """The requested output format, ``json`` when none is given."""
    if value is None or value == "":
        return "json"
    known = known_formats()
    if value not in known:
        raise InvalidRequest("unknown_format", f"unknown format; use one of: {', '.join(known)}")
    return value


# The variable env and shell output name the lease in, for `tokenbroker revoke --lease`.
LEASE_VARIABLE = "TOKENBROKER_LEASE_ID"


def render_json(
    credential: str, credential_type: str, issued: IssuedCredential, lease: str | None = None
) -> dict[str, object]:
    """The ``format=json`` document of DESIGN.md, naming the lease it was issued under."""
    document: dict[str, object] = {
        "credential": credential,
        "type": credential_type,
        "expires_at": isoformat_utc(issued.expires_at),
        "values": dict(issued.values),
        "metadata": dict(issued.metadata),
    }
    if lease is not None:
        document["lease"] = {"id": lease, "expires_at": isoformat_utc(issued.expires_at)}
    return document


def render_env(values: Mapping[str, str]) -> str:
    """``KEY=value`` lines for ``$GITHUB_ENV`` / ``$ENV0_ENV``.

    A value holding a line break uses the ``KEY<<DELIMITER`` form with a random delimiter, so a
    value can never smuggle in another variable.
    """
    lines: list[str] = []
    for name, value in values.items():
        _check_name(name)
        if "\n" in value or "\r" in value:
            delimiter = f"TOKENBROKER_{secrets.token_hex(8)}"
            lines.append(f"{name}<<{delimiter}\n{value}\n{delimiter}")
        else:
            lines.append(f"{name}={value}")
    return "".join(line + "\n" for line in lines)


def render_shell(values: Mapping[str, str]) -> str:
    """``export KEY='value'`` lines for ``$BASH_ENV`` or ``eval``, single-quoted safely."""
    lines = []
    for name, value in values.items():
        _check_name(name)
        quoted = "'" + value.replace("'", "'\\''") + "'"
        lines.append(f"export {name}={quoted}\n")
    return "".join(lines)


def render(
    fmt: str,
    credential: str,
    backend: BackendFactory,
    issued: IssuedCredential,
    lease: str | None = None,
) -> tuple[str, str]:
    """Render an issued credential in ``fmt``; return (content type, body).

    The common formats are rendered here, naming the lease; any other is the backend's own
    (``render_format``), in the shape its client reads.
    """
    values = {**issued.values, LEASE_VARIABLE: lease} if lease is not None else issued.values
    if fmt == "env":
        return "text/plain", render_env(values)
    if fmt == "shell":
        return "text/x-shellscript", render_shell(values)
    if fmt == "json":
        document = render_json(credential, backend.type_name, issued, lease)
        return "application/json", json.dumps(document)
    if isinstance(backend, FormatRenderer):
        return backend.render_format(fmt, issued)
    raise InvalidRequest(
        "format_not_supported", f"format {fmt} is not rendered from an issued {backend.type_name}"
    )


def _check_name(name: str) -> None:
    # Names come from backends (ours or a plugin's); a bad one would corrupt the env file.
    if not _ENV_NAME.match(name):
        raise ValueError(f"not a valid environment variable name: {name!r}")
