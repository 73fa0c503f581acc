"""``make demo`` as CI runs it: ``python -m tokenbroker.devstack.demo``; nothing left running."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import pids_using

pytestmark = pytest.mark.openbao

# The demo is allowed under two minutes; it takes about fifteen seconds.
DEMO_TIMEOUT_SECONDS = 110


def demo_command(data_dir: Path) -> list[str]:
    return [sys.executable, "-m", "tokenbroker.devstack.demo", "--data-dir", str(data_dir)]


def demo_environment() -> dict[str, str]:
    # The demo must not depend on the developer's AWS set-up.
    return {**os.environ, "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}


def assert_nothing_left(data_dir: Path) -> None:
    # The stack names the data dir in its arguments, and OpenBao works in a directory inside it.
    assert pids_using(data_dir) == []


@dataclass(frozen=True)
class DemoRun:
    data_dir: Path
    returncode: int
    output: str
    seconds: float


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """One full run of the demo, shared by the tests that read what it did."""
    data_dir = tmp_path_factory.mktemp("demo")
    started = time.monotonic()
    result = subprocess.run(
        demo_command(data_dir),
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_SECONDS,
        env=demo_environment(),
        check=False,
    )
    seconds = time.monotonic() - started
    return DemoRun(data_dir, result.returncode, result.stdout + result.stderr, seconds)


def test_the_demo_exchanges_and_uses_every_credential_then_exits_zero(demo_run: DemoRun) -> None:
    assert demo_run.returncode == 0, demo_run.output
    summary = demo_run.output[demo_run.output.index("demo summary:") :]
    for line in (
        r"ok\s+vault\s+dev-vault \(passthrough\): KV write \+ read",
        r"ok\s+vault\s+dev-vault-mint \(mint\): KV write \+ read",
        r"ok\s+aws\s+dev-aws: GetCallerIdentity -> arn:aws:sts::\d+:assumed-role/env0-deployer/",
        r"ok\s+gcp\s+dev-gcp: tokeninfo -> deployer@dev-project\.iam\.gserviceaccount\.com",
        r"ok\s+azure\s+dev-azure: AZURE_ACCESS_TOKEN verified at Entra ID -> app [0-9a-f-]{36} ",
        r"ok\s+azure\s+azure-identity: its own token from Entra ID -> app [0-9a-f-]{36} ",
        r"ok\s+denial\s+prod-vault: refused, bound_claims_mismatch, dry run explains it",
        r"ok\s+stopped tokenbroker dev \(pid \d+\) and OpenBao \(pid \d+\)",
    ):
        assert re.search(rf"^\s+{line}", summary, re.MULTILINE), line
    assert summary.splitlines()[-1].startswith("demo passed in ")


def test_the_demo_explains_its_denial_with_a_dry_run(demo_run: DemoRun) -> None:
    assert re.search(r"✗ environmentId\s+expected \[", demo_run.output), demo_run.output


def test_the_demo_is_fast(demo_run: DemoRun) -> None:
    assert demo_run.returncode == 0, demo_run.output
    assert demo_run.seconds < 90, f"the demo took {demo_run.seconds:.0f}s"


def test_the_demo_leaves_no_process_and_no_state_file(demo_run: DemoRun) -> None:
    assert_nothing_left(demo_run.data_dir)
    # The stack removes its state file when it stops.
    assert not (demo_run.data_dir / "dev-stack.json").exists()


def test_the_demo_prints_no_credential(demo_run: DemoRun) -> None:
    assert demo_run.returncode == 0, demo_run.output
    # OpenBao service tokens, AWS session keys, GCP access tokens, JWTs.
    for pattern in (
        r"\bs\.[A-Za-z0-9]{24}\b",
        r"\bASIA[A-Z0-9]{16}\b",
        r"ya29\.",
        r"eyJ[\w-]+\.eyJ",
    ):
        assert not re.search(pattern, demo_run.output), pattern


def test_a_stack_that_fails_to_start_fails_the_demo_with_the_reason(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    # The broker's SQLite file cannot be opened: the stack fails after OpenBao and moto started.
    (data_dir / "tokenbroker.db").mkdir(parents=True)
    result = subprocess.run(
        demo_command(data_dir),
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_SECONDS,
        env=demo_environment(),
        check=False,
    )
    assert result.returncode == 1, result.stdout
    assert "demo FAILED" in result.stdout
    assert "starting the broker failed" in result.stdout
    assert "[1/8] OpenBao dev server" in result.stdout
    assert_nothing_left(data_dir)


def test_a_demo_stopped_by_sigterm_stops_the_stack(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    process = subprocess.Popen(
        demo_command(data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=demo_environment(),
    )
    assert process.stdout is not None
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if "the stack is ready" in line:
                break
        assert len(pids_using(data_dir)) >= 2, "the stack and OpenBao run while the demo does"
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal.SIGTERM, "".join(lines) + rest
    assert_nothing_left(data_dir)
