"""A running ``tokenbroker dev --port 0`` for tests that play a user against the whole stack.

The session-scoped ``running_dev_stack`` fixture starts it as a child process (the demo's
``DevStackProcess``: state file, ``/readyz``), yields its state and stops it, OpenBao included.
Tests must not change what the others read: each uses its own KV path or Vault auth mount.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from tokenbroker.devstack.demo import DevStackProcess
from tokenbroker.devstack.stack import DevStackState

CLI_TIMEOUT_SECONDS = 60.0


@pytest.fixture(scope="session")
def running_dev_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStackState]:
    """One ``tokenbroker dev`` for the session; stopped (and checked stopped) at its end."""
    stack = DevStackProcess(tmp_path_factory.mktemp("dev-stack"))
    stack.start()
    try:
        yield stack.wait_ready()
    finally:
        code = stack.stop()
    assert code == 0, stack.log_tail()


def tokenbroker(
    *arguments: str, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the ``tokenbroker`` CLI as a user would, in a child process; never raises on exit."""
    return run_command([sys.executable, "-m", "tokenbroker", *arguments], env=env, cwd=cwd)


def run_command(
    command: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command with this interpreter's scripts first on PATH, output captured."""
    scripts = str(Path(sys.executable).parent)
    environment = {**os.environ, **(env or {})}
    environment["PATH"] = f"{scripts}{os.pathsep}{environment.get('PATH', '')}"
    return subprocess.run(
        list(command),
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=CLI_TIMEOUT_SECONDS,
        check=False,
    )
