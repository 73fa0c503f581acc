"""``tokenbroker dev``: progress lines, the printed commands, and a clean stop on SIGINT/SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.processes import child_pids, command_line, pids_using

from tokenbroker.devstack.stack import read_state

pytestmark = pytest.mark.openbao

STOP_TIMEOUT_SECONDS = 30


def start_dev(data_dir: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tokenbroker", "dev", "--data-dir", str(data_dir), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture
def dev_processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test started; killed at teardown if a failing test left them running."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def read_until(process: subprocess.Popen[str], marker: str) -> list[str]:
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        if marker in line:
            return lines
    raise AssertionError(f"{marker!r} never came; the output was:\n" + "\n".join(lines))


def stop(process: subprocess.Popen[str], signum: signal.Signals) -> str:
    process.send_signal(signum)
    rest, _ = process.communicate(timeout=STOP_TIMEOUT_SECONDS)
    return rest


def test_sigterm_stops_every_part_and_removes_the_state_file(
    tmp_path: Path, dev_processes: list[subprocess.Popen[str]]
) -> None:
    process = start_dev(tmp_path, "--port", "0")
    dev_processes.append(process)
    lines = read_until(process, "ready; Ctrl-C stops everything")
    assert [line[:5] for line in lines if line.startswith("[")] == [f"[{n}/8]" for n in range(1, 9)]
    assert any(
        line.startswith('export ENV0_OIDC_TOKEN="$(tokenbroker token mint') for line in lines
    )
    assert any("tokenbroker exchange --broker http://127.0.0.1:" in line for line in lines)
    state = read_state(tmp_path)
    assert state is not None
    assert state.pid == process.pid
    assert "bao" in " ".join(command_line(state.openbao_pid))
    rest = stop(process, signal.SIGTERM)
    assert process.returncode == 0, rest
    assert "stopped" in rest
    assert command_line(state.openbao_pid) == []
    assert read_state(tmp_path) is None
    assert pids_using(tmp_path) == []


def test_ctrl_c_during_startup_stops_what_was_already_started(
    tmp_path: Path, dev_processes: list[subprocess.Popen[str]]
) -> None:
    process = start_dev(tmp_path, "--port", "0")
    dev_processes.append(process)
    read_until(process, "[1/8] OpenBao dev server")
    (openbao,) = [pid for pid in child_pids(process.pid) if "bao" in " ".join(command_line(pid))]
    rest = stop(process, signal.SIGINT)
    assert process.returncode == 0, rest
    assert "SIGINT, stopping" in rest
    assert command_line(openbao) == []
    assert pids_using(tmp_path) == []


def test_a_port_without_room_for_the_other_parts_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tokenbroker",
            "dev",
            "--data-dir",
            str(tmp_path),
            "--port",
            "65534",
        ],
        capture_output=True,
        text=True,
        timeout=STOP_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 2
    assert "port 65534" in result.stderr
