"""Where credentials are written, and reading them back for ``revoke``."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tokenbroker.backends.base import IssuedCredential
from tokenbroker.backends.registry import backend_class
from tokenbroker.client.envfiles import (
    AppendTarget,
    find_append_target,
    parse_values,
    resolve_format,
    write_private,
)
from tokenbroker.client.failures import UsageFailure
from tokenbroker.output import render

VALUES = {"VAULT_ADDR": "https://vault.example:8200", "VAULT_TOKEN": "s.abc'def", "X": "a\nb"}


@pytest.mark.parametrize(
    ("env", "variable", "fmt"),
    [
        ({"ENV0_ENV": "/e", "GITHUB_ENV": "/g", "BASH_ENV": "/b"}, "ENV0_ENV", "env"),
        ({"GITHUB_ENV": "/g", "BASH_ENV": "/b"}, "GITHUB_ENV", "env"),
        ({"BASH_ENV": "/b"}, "BASH_ENV", "shell"),
        ({"ENV0_ENV": "", "BASH_ENV": "/b"}, "BASH_ENV", "shell"),
    ],
)
def test_the_platforms_env_file_is_found_in_order_with_its_format(
    env: dict[str, str], variable: str, fmt: str
) -> None:
    target = find_append_target(env)
    assert (target.variable, target.path, target.default_format) == (
        variable,
        Path(env[variable]),
        fmt,
    )


def test_no_env_file_is_a_usage_error_naming_the_variables() -> None:
    with pytest.raises(UsageFailure, match=r"\$ENV0_ENV, \$GITHUB_ENV, \$BASH_ENV"):
        find_append_target({})


def test_the_format_defaults_to_json_or_to_the_env_files() -> None:
    target = AppendTarget("BASH_ENV", Path("/b"), "shell")
    assert resolve_format(None, None) == "json"
    assert resolve_format("env", None) == "env"
    assert resolve_format(None, target) == "shell"
    assert resolve_format("env", target) == "env"


def test_a_document_format_cannot_be_appended_to_an_env_file() -> None:
    target = AppendTarget("GITHUB_ENV", Path("/g"), "env")
    with pytest.raises(UsageFailure, match="not json"):
        resolve_format("json", target)


def test_a_created_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "creds.env"
    write_private(path, "A=1\n", append=False)
    write_private(tmp_path / "appended.env", "A=1\n", append=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "appended.env").stat().st_mode) == 0o600


def test_output_replaces_and_append_adds_on_a_new_line(tmp_path: Path) -> None:
    path = tmp_path / "github.env"
    path.write_text("EARLIER=1")  # a previous step forgot its newline
    write_private(path, "A=1\n", append=True)
    assert path.read_text() == "EARLIER=1\nA=1\n"
    write_private(path, "B=2\n", append=False)
    assert path.read_text() == "B=2\n"


@pytest.mark.parametrize("fmt", ["env", "shell", "json"])
def test_what_exchange_writes_reads_back_in_every_format(fmt: str) -> None:
    issued = IssuedCredential(values=VALUES, expires_at=datetime.now(UTC))
    _, body = render(fmt, "prod-vault", backend_class("vault_oidc"), issued)
    assert parse_values(body) == VALUES


def test_later_assignments_win_as_when_the_platform_reads_the_file() -> None:
    assert parse_values("VAULT_TOKEN=old\nOTHER=x\nVAULT_TOKEN=new\n") == {
        "VAULT_TOKEN": "new",
        "OTHER": "x",
    }
