"""``tokenbroker serve --workers N``: N processes on one port under a supervisor that restarts
them, ``/metrics`` of every worker, and no second worker on SQLite."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest
from tests.support.serve import eventually, start_broker
from tests.support.workers import server_side_pid, workers_of


def _postgres_store(url: str) -> dict[str, object]:
    return {"store": {"url": url, "encryption_key": secrets.token_urlsafe(32)}}


@pytest.mark.postgres
def test_two_workers_answer_on_one_port_and_a_killed_one_is_restarted(
    tmp_path: Path, postgres_store_url: str
) -> None:
    with ExitStack() as stack:
        broker = start_broker(
            tmp_path, stack, _postgres_store(postgres_store_url), argv=["--workers", "2"]
        )
        workers = workers_of(broker, 2)
        # SO_REUSEPORT spreads new connections by a hash of their address: both answer.
        answered = eventually(
            lambda: (
                seen
                if len(seen := {server_side_pid(broker.port, workers) for _ in range(20)}) == 2
                else None
            ),
            30,
            "connections accepted by both workers",
        )
        assert answered == set(workers)

        os.kill(workers[0], signal.SIGKILL)
        replaced = eventually(
            lambda: (
                pids
                if len(pids := set(workers_of(broker, 2))) == 2 and workers[0] not in pids
                else None
            ),
            60,
            "the killed worker replaced",
        )
        assert workers[1] in replaced
        output = broker.output()
        assert f"(pid {workers[0]}) was killed by SIGKILL" in output
        assert "restarting it" in output
        assert f"listening on http://127.0.0.1:{broker.port} (2 workers" in output

        broker.server.stop()
    output = broker.output()
    assert "Traceback" not in output
    assert output.count("exited with status 0") == 2, output


def test_two_workers_on_sqlite_are_refused_at_start(tmp_path: Path) -> None:
    config = tmp_path / "sqlite.toml"
    config.write_text(f'[server]\ndata_dir = "{tmp_path}"\nport = 0\nworkers = 2\n')
    result = subprocess.run(
        [sys.executable, "-m", "tokenbroker", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("tokenbroker: server.workers = 2 needs a PostgreSQL store")
    assert "Traceback" not in result.stderr
