"""Render an issued credential in the formats runners consume. Pure functions."""

from __future__ import annotations

import json
import re
import secrets
import shlex
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel

from tokenbroker.backends.base import CredentialTraits, IssuedCredential
from tokenbroker.backends.gcp import GcpOidcSettings
from tokenbroker.errors import InvalidRequest
from tokenbroker.policy.models import Credential

OutputFormat = Literal[
    "json", "env", "shell", "aws-credential-process", "gcp-external-account", "gcp-executable"
]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = (
    "json",
    "env",
    "shell",
    "aws-credential-process",
    "gcp-external-account",
    "gcp-executable",
)
# Formats rendered from the credential (and its outbound token) without calling its backend:
# the runner's own client exchanges the token itself. Backends declare which they render.
FORMATS_WITHOUT_BACKEND: frozenset[OutputFormat] = frozenset(
    {"gcp-external-account", "gcp-executable"}
)
EXTERNAL_ACCOUNT_TIMEOUT_MILLIS = 30_000

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


def format_check(fmt: OutputFormat) -> Callable[[Credential, CredentialTraits], str]:
    """The exchange's check that a credential renders ``fmt``, run before its backend is called."""

    def renders(credential: Credential, traits: CredentialTraits) -> str:
        if fmt not in traits.formats:
            raise InvalidRequest(
                "format_not_supported",
                f"credential {credential.name!r} ({credential.type}) cannot be rendered as "
                f"{fmt}; it renders: {', '.join(sorted(traits.formats))}",
            )
        return f"credential {credential.name!r} ({credential.type}) renders format {fmt}"

    return renders


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


def render_gcp_external_account(
    credential: Credential,
    settings: BaseModel,
    *,
    broker_url: str | None = None,
    timeout_millis: int = EXTERNAL_ACCOUNT_TIMEOUT_MILLIS,
    output_file: str | None = None,
) -> dict[str, object]:
    """google-auth's ``external_account`` configuration whose executable source is our CLI.

    google-auth (and gcloud) run the command whenever they need a subject token, so a long job
    refreshes by itself; the command prints ``format=gcp-executable``.
    """
    gcp = _gcp_settings(settings, "gcp-external-account")
    if not 5_000 <= timeout_millis <= 120_000:
        # google-auth refuses a configuration outside these bounds.
        raise ValueError("timeout_millis must be between 5000 and 120000")
    command = ["tokenbroker", "exchange"]
    if broker_url is not None:
        command += ["--broker", broker_url]
    command += ["--credential", credential.name, "--format", "gcp-executable"]
    executable: dict[str, object] = {
        # google-auth splits the command with shlex: quote every word.
        "command": shlex.join(command),
        "timeout_millis": timeout_millis,
    }
    if output_file is not None:
        executable["output_file"] = output_file
    document: dict[str, object] = {
        "type": "external_account",
        "audience": gcp.audience,
        "subject_token_type": gcp.subject_token_type,
        "token_url": gcp.token_url,
    }
    if gcp.service_account is not None:
        document["service_account_impersonation_url"] = (
            f"{gcp.iam_endpoint}/v1/projects/-/serviceAccounts/"
            f"{gcp.service_account}:generateAccessToken"
        )
        document["service_account_impersonation"] = {"token_lifetime_seconds": gcp.lifetime_seconds}
    document["credential_source"] = {"executable": executable}
    return document


def render_gcp_executable(
    settings: BaseModel, subject_token: str, expires_at: datetime
) -> dict[str, object]:
    """google-auth's executable-sourced response (version 1) holding the outbound token."""
    gcp = _gcp_settings(settings, "gcp-executable")
    return {
        "version": 1,
        "success": True,
        "token_type": gcp.subject_token_type,
        "id_token": subject_token,
        "expiration_time": int(expires_at.timestamp()),
    }


def render(
    fmt: OutputFormat, credential: str, credential_type: str, issued: IssuedCredential
) -> tuple[str, str]:
    """Render an issued credential in ``fmt``; return (content type, body)."""
    if fmt in FORMATS_WITHOUT_BACKEND:
        # These describe how to get a credential, not one that was issued.
        raise InvalidRequest(
            "format_not_supported", f"format {fmt} is not rendered from an issued credential"
        )
    if fmt == "env":
        return "text/plain", render_env(issued.values)
    if fmt == "shell":
        return "text/x-shellscript", render_shell(issued.values)
    if fmt == "aws-credential-process":
        return "application/json", json.dumps(render_aws_credential_process(issued))
    return "application/json", json.dumps(render_json(credential, credential_type, issued))


def _gcp_settings(settings: BaseModel, fmt: str) -> GcpOidcSettings:
    if not isinstance(settings, GcpOidcSettings):
        raise InvalidRequest(
            "format_not_supported", f"format {fmt} needs a gcp_oidc credential; this is not one"
        )
    return settings


def _check_name(name: str) -> None:
    # Names come from backends (ours or a plugin's); a bad one would corrupt the env file.
    if not _ENV_NAME.match(name):
        raise ValueError(f"not a valid environment variable name: {name!r}")
