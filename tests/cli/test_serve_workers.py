"""``tokenbroker serve --workers N``: N processes on one port under a supervisor that restarts
them, ``/metrics`` of every worker, and no second worker on SQLite."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest
from tests.support.processes import child_pids
from tests.support.serve import BrokerProcess, eventually, start_broker

_WORKER_SERIES = re.compile(r'^tokenbroker_worker_start_time_seconds\{pid="(\d+)"\}', re.M)


def _postgres_store(url: str) -> dict[str, object]:
    return {"store": {"url": url, "encryption_key": secrets.token_urlsafe(32)}}


def _worker_pids_in_metrics(broker: BrokerProcess) -> set[int]:
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: broker\r\nConnection: close\r\n\r\n")
        body = b"".join(iter(lambda: sock.recv(65536), b"")).decode()
    return {int(pid) for pid in _WORKER_SERIES.findall(body)}


def _server_side_pid(broker: BrokerProcess, workers: list[int]) -> int:
    """Which worker accepted a new connection: the one holding its server-side socket."""
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as sock:
        client_port = sock.getsockname()[1]
        # Until a worker accepts it the connection waits in the kernel's queue, owned by none.
        return eventually(
            lambda: _holder(_socket_inode(broker.port, client_port), workers),
            10,
            f"a worker accepting the connection from port {client_port}",
        )


def _socket_inode(local_port: int, remote_port: int) -> str | None:
    # /proc/net/tcp: "sl local_address rem_address st ... uid timeout inode"; ports in hex.
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1].split(":")[1], fields[2].split(":")[1]
        if (int(local, 16), int(remote, 16)) == (local_port, remote_port) and fields[9] != "0":
            return fields[9]
    return None


def _holder(inode: str | None, pids: list[int]) -> int | None:
    for pid in pids if inode is not None else []:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):  # closed while listed
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
    return None


def _workers_of(broker: BrokerProcess, count: int) -> list[int]:
    """The supervisor's serving children, once there are ``count`` (multiprocessing's resource
    tracker is a child too, but serves nothing: it is not in /metrics)."""

    def found() -> list[int] | None:
        try:
            scraped = _worker_pids_in_metrics(broker)
        except ConnectionResetError:  # it reached a worker as that one was killed: ask again
            return None
        pids = scraped & set(child_pids(broker.server.pid))
        return sorted(pids) if len(pids) == count else None

    return eventually(found, 60, f"{count} workers in /metrics")


@pytest.mark.postgres
def test_two_workers_answer_on_one_port_and_a_killed_one_is_restarted(
    tmp_path: Path, postgres_store_url: str
) -> None:
    with ExitStack() as stack:
        broker = start_broker(
            tmp_path, stack, _postgres_store(postgres_store_url), argv=["--workers", "2"]
        )
        workers = _workers_of(broker, 2)
        # SO_REUSEPORT spreads new connections by a hash of their address: both answer.
        answered = eventually(
            lambda: (
                seen
                if len(seen := {_server_side_pid(broker, workers) for _ in range(20)}) == 2
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
                if len(pids := set(_workers_of(broker, 2))) == 2 and workers[0] not in pids
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
