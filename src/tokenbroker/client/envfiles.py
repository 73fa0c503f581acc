"""Where the client writes credentials (stdout, a file, the platform's env file) and reading
them back (for ``revoke``).

Files the client creates are 0600 from the first byte: credentials must never sit in a file
others can read, not even for an instant.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tokenbroker.client.failures import UsageFailure
from tokenbroker.identity.profiles import PROFILES

# The env file each platform reads between steps, in the order they are looked for, with the
# format that file expects (its profile says).
APPEND_TARGETS: tuple[tuple[str, str], ...] = tuple(
    profile.runner.env_file for profile in PROFILES.values() if profile.runner.env_file
)
APPENDABLE_FORMATS = frozenset({"env", "shell"})
DEFAULT_FORMAT = "json"

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEREDOC = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)<<(\S+)$")


@dataclass(frozen=True, slots=True)
class AppendTarget:
    """The platform env file to append to, and the format it expects."""

    variable: str
    path: Path
    default_format: str


def find_append_target(env: Mapping[str, str]) -> AppendTarget:
    """The first platform env file variable (``APPEND_TARGETS``) that is set."""
    for variable, fmt in APPEND_TARGETS:
        value = env.get(variable, "").strip()
        if value:
            return AppendTarget(variable, Path(value), fmt)
    names = ", ".join(f"${name}" for name, _ in APPEND_TARGETS)
    raise UsageFailure(
        f"--append-env: none of {names} is set, so this is not a platform with an env file; "
        "fix: use --output FILE, or print to stdout"
    )


def resolve_format(requested: str | None, target: AppendTarget | None) -> str:
    """The format to ask for: the one requested, else the env file's, else json."""
    if target is None:
        return requested or DEFAULT_FORMAT
    if requested is None:
        return target.default_format
    if requested not in APPENDABLE_FORMATS:
        raise UsageFailure(
            f"--append-env writes to ${target.variable}, which takes env or shell lines, "
            f"not {requested}; fix: drop --format, or use --output FILE"
        )
    return requested


def write_private(path: Path, data: str, *, append: bool) -> None:
    """Write (or append) ``data``; a file this creates is 0600.

    An append starts on a new line even when the file's last line lacks its newline, so the
    first variable cannot be glued onto someone else's.
    """
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    if append and _ends_without_newline(path):
        data = "\n" + data
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(data)


def replace_private(path: Path, data: str) -> None:
    """Replace ``path`` with ``data`` at once: a reader sees the old content or the new, never
    a part nor an empty file (``exchange --watch`` rewrites a file a job keeps reading).

    The new content goes to a 0600 file beside ``path`` (a rename is atomic only within one
    file system), renamed over it. No fsync: a credential file need not survive a crash.
    """
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _ends_without_newline(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() == 0:
                return False
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) != b"\n"
    except FileNotFoundError:
        return False


def parse_values(text: str) -> dict[str, str]:
    """Variables from what ``exchange`` wrote: env lines, shell exports, or the json document.

    Later assignments win, as when the platform reads an env file appended to several times.
    """
    stripped = text.lstrip()
    if stripped.startswith("{"):
        return _json_values(stripped)
    values: dict[str, str] = {}
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index].strip()
        index += 1
        if not line or line.startswith("#"):
            continue
        heredoc = _HEREDOC.match(line)
        if heredoc:
            name, delimiter = heredoc.groups()
            body: list[str] = []
            while index < len(lines) and lines[index] != delimiter:
                body.append(lines[index])
                index += 1
            index += 1
            values[name] = "\n".join(body)
        elif line.startswith("export "):
            # A quoted value may span lines: read on until the quotes close.
            statement = line
            words = _shell_words(statement)
            while words is None and index < len(lines):
                statement += "\n" + lines[index]
                index += 1
                words = _shell_words(statement)
            values.update(_shell_assignment(words or []))
        else:
            name, sep, value = line.partition("=")
            if sep and _NAME.match(name):
                values[name] = value
    return values


def _shell_words(statement: str) -> list[str] | None:
    try:
        return shlex.split(statement)
    except ValueError:
        return None


def _shell_assignment(words: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for word in words[1:]:
        name, sep, value = word.partition("=")
        if sep and _NAME.match(name):
            out[name] = value
    return out


def _json_values(text: str) -> dict[str, str]:
    try:
        document = json.loads(text)
    except ValueError:
        return {}
    values = document.get("values") if isinstance(document, dict) else None
    if not isinstance(values, dict):
        return {}
    return {k: v for k, v in values.items() if isinstance(k, str) and isinstance(v, str)}
