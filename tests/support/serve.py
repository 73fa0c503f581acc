"""``tokenbroker serve`` as a real child process: a TOML config written for it, its output."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from tokenbroker.devstack.processes import log_tail

# Generous: a starting broker answers within a few seconds; this only bounds a hang.
START_TIMEOUT_SECONDS = 60


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _toml_value(value: object) -> str:
    # JSON's strings, numbers, booleans and arrays of them are TOML's too.
    return json.dumps(value)


def _toml_table(header: str, table: Mapping[str, object]) -> list[str]:
    lines = [header]
    nested = []
    for key, value in table.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            nested.append((key, value))
        else:
            lines.append(f"{json.dumps(key)} = {_toml_value(value)}")
    name = header.strip("[]")
    for key, value in nested:
        lines += _toml_table(f"[{name}.{json.dumps(key)}]", value)
    return lines


def write_config(path: Path, config: Mapping[str, object]) -> Path:
    """Write settings as TOML: a mapping is a table, a list of mappings an array of tables."""
    lines: list[str] = []
    for name, section in config.items():
        if isinstance(section, Mapping):
            lines += _toml_table(f"[{name}]", section)
        else:
            assert isinstance(section, list)
            for item in section:
                lines += _toml_table(f"[[{name}]]", item)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def start_serve(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start ``tokenbroker serve --config config`` with stdout and stderr going to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tokenbroker", "serve", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_until_ready(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Return once ``/readyz`` answers 200; fail with the log's tail if it never does."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.1)  # polling a starting process, not papering over a race
    raise AssertionError(f"the broker did not become ready:\n{log_tail(log, 4000)}")
