"""Render an issued credential in the formats runners consume. Pure functions."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Literal

from tokenbroker.backends.base import IssuedCredential
from tokenbroker.errors import InvalidRequest

OutputFormat = Literal["json", "env", "shell", "aws-credential-process"]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("json", "env", "shell", "aws-credential-process")

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_AWS_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def parse_format(value: str | None) -> OutputFormat:
    """The requested output format, ``json`` when none is given."""
    if value is None or value == "":
        return "json"
    for known in OUTPUT_FORMATS:
        if value == known:
            return known
    raise InvalidRequest(
        "unknown_format", f"unknown format; use one of: {', '.join(OUTPUT_FORMATS)}"
    )


def isoformat_utc(moment: datetime) -> str:
    """RFC 3339 in UTC with a Z, to the second, as AWS and most clients expect."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def render_json(
    credential: str, credential_type: str, issued: IssuedCredential
) -> dict[str, object]:
    """The ``format=json`` document of DESIGN.md."""
    return {
        "credential": credential,
        "type": credential_type,
        "expires_at": isoformat_utc(issued.expires_at),
        "values": dict(issued.values),
        "metadata": dict(issued.metadata),
    }


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


def render_aws_credential_process(issued: IssuedCredential) -> dict[str, object]:
    """AWS's ``credential_process`` Version 1 document."""
    missing = [key for key in _AWS_KEYS if key not in issued.values]
    if missing:
        raise InvalidRequest(
            "format_not_supported",
            "format aws-credential-process needs AWS credentials; this credential has none",
        )
    return {
        "Version": 1,
        "AccessKeyId": issued.values["AWS_ACCESS_KEY_ID"],
        "SecretAccessKey": issued.values["AWS_SECRET_ACCESS_KEY"],
        "SessionToken": issued.values["AWS_SESSION_TOKEN"],
        "Expiration": isoformat_utc(issued.expires_at),
    }


def render(
    fmt: OutputFormat, credential: str, credential_type: str, issued: IssuedCredential
) -> tuple[str, str]:
    """Render in ``fmt``; return (content type, body)."""
    if fmt == "env":
        return "text/plain", render_env(issued.values)
    if fmt == "shell":
        return "text/x-shellscript", render_shell(issued.values)
    if fmt == "aws-credential-process":
        return "application/json", json.dumps(render_aws_credential_process(issued))
    return "application/json", json.dumps(render_json(credential, credential_type, issued))


def _check_name(name: str) -> None:
    # Names come from backends (ours or a plugin's); a bad one would corrupt the env file.
    if not _ENV_NAME.match(name):
        raise ValueError(f"not a valid environment variable name: {name!r}")
