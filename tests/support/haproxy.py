"""HAProxy in the foreground on loopback, run from deploy/haproxy.cfg itself: only the frontend's
port and the servers' addresses change (compose names them by service). A second config file
adds an admin socket, through which a test reads what HAProxy thinks of each server."""

from __future__ import annotations

import csv
import re
import shutil
import socket
from collections.abc import Mapping
from pathlib import Path

import pytest
from bench.procs import ServerProcess

from tests.support.serve import eventually

DEPLOY_HAPROXY = Path(__file__).resolve().parents[2] / "deploy" / "haproxy.cfg"
BACKEND = "brokers"
_SERVER_LINE = re.compile(r"^(\s*server (\S+) )(\S+):8400$", re.M)
_BIND_LINE = re.compile(r"^(\s*bind ):8400$", re.M)


def haproxy_binary() -> str:
    """The haproxy executable, or fail naming how to install it."""
    found = shutil.which("haproxy")
    if found is None:
        pytest.fail("haproxy is missing: make deploy-tools (apt-get install -y haproxy)")
    return found


def loopback_config(servers: Mapping[str, int], port: int) -> str:
    """deploy/haproxy.cfg with the frontend on 127.0.0.1:``port`` and each server of it at
    127.0.0.1 on the port ``servers`` gives its name; every server must be named."""
    config = DEPLOY_HAPROXY.read_text()
    named = {match[1] for match in _SERVER_LINE.findall(config)}
    assert named == set(servers), f"deploy/haproxy.cfg serves {sorted(named)}"
    config = _SERVER_LINE.sub(lambda m: f"{m[1]}127.0.0.1:{servers[m[2]]}", config)
    config, binds = _BIND_LINE.subn(rf"\g<1>127.0.0.1:{port}", config)
    assert binds == 1, "deploy/haproxy.cfg binds one frontend on :8400"
    return config


class HAProxy:
    """``haproxy -f deploy-derived.cfg -f admin.cfg -db``; its log is the process's output."""

    def __init__(self, directory: Path, servers: Mapping[str, int], port: int) -> None:
        self.port = port
        self.socket_path = directory / "haproxy.sock"
        config = directory / "haproxy.cfg"
        config.write_text(loopback_config(servers, port))
        admin = directory / "haproxy-admin.cfg"
        admin.write_text(f"global\n  stats socket {self.socket_path} mode 600 level admin\n")
        self.server = ServerProcess(
            "haproxy",
            [haproxy_binary(), "-f", str(config), "-f", str(admin), "-db"],
            # Ready once a broker behind it is: HAProxy answers /readyz through a broker.
            f"{self.url}/readyz",
            directory / "haproxy.log",
        )

    @property
    def url(self) -> str:
        """The frontend's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        """Everything HAProxy logged so far (one line a request: ``option httplog``)."""
        return self.server.log_path.read_text(errors="replace")

    def _admin(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(self.socket_path))
            sock.sendall(command.encode() + b"\n")
            return b"".join(iter(lambda: sock.recv(65536), b"")).decode()

    def server_states(self) -> dict[str, str]:
        """Each broker's status as HAProxy's checks see it: ``UP``, ``DOWN``, ``UP 1/2``, ..."""
        rows = csv.DictReader(self._admin("show stat").removeprefix("# ").splitlines())
        return {
            row["svname"]: row["status"]
            for row in rows
            if row["pxname"] == BACKEND and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def wait_for(self, name: str, status: str, timeout: float = 60) -> None:
        """Return once HAProxy's checks put server ``name`` in ``status``."""
        eventually(
            lambda: True if self.server_states().get(name) == status else None,
            timeout,
            f"HAProxy to see {name} {status}",
        )
