"""The workers of a ``tokenbroker serve --workers N``: their pids, and which one accepted a
connection (SO_REUSEPORT leaves that to the kernel; a test finds out from /proc)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
from pathlib import Path

from tests.support.processes import child_pids
from tests.support.serve import BrokerProcess, eventually

_WORKER_SERIES = re.compile(r'^tokenbroker_worker_start_time_seconds\{pid="(\d+)"\}', re.M)


def worker_pids_in_metrics(broker: BrokerProcess) -> set[int]:
    """The worker pids ``/metrics`` names (every worker's series, in multiprocess mode)."""
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: broker\r\nConnection: close\r\n\r\n")
        body = b"".join(iter(lambda: sock.recv(65536), b"")).decode()
    return {int(pid) for pid in _WORKER_SERIES.findall(body)}


def workers_of(broker: BrokerProcess, count: int) -> list[int]:
    """The supervisor's serving children, once there are ``count`` (multiprocessing's resource
    tracker is a child too, but serves nothing: it is not in /metrics)."""

    def found() -> list[int] | None:
        try:
            scraped = worker_pids_in_metrics(broker)
        except ConnectionResetError:  # it reached a worker as that one was killed: ask again
            return None
        pids = scraped & set(child_pids(broker.server.pid))
        return sorted(pids) if len(pids) == count else None

    return eventually(found, 60, f"{count} workers in /metrics")


def accepted_connection(port: int, workers: list[int]) -> tuple[socket.socket, int]:
    """A new connection to ``port`` and the pid of the worker that accepted it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        client_port = sock.getsockname()[1]
        # Until a worker accepts it the connection waits in the kernel's queue, owned by none.
        pid = eventually(
            lambda: _holder(_socket_inode(port, client_port), workers),
            10,
            f"a worker accepting the connection from port {client_port}",
        )
    except BaseException:
        sock.close()
        raise
    return sock, pid


def server_side_pid(port: int, workers: list[int]) -> int:
    """Which worker accepted a new connection: the one holding its server-side socket."""
    sock, pid = accepted_connection(port, workers)
    sock.close()
    return pid


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
