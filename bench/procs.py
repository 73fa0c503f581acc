"""Processes of the benchmark: free ports, servers started as subprocesses, their RSS."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from tokenbroker.devstack.processes import log_tail, stop_process

_START_TIMEOUT_SECONDS = 60.0
_STOP_TIMEOUT_SECONDS = 10.0


def free_port() -> int:
    """A TCP port on loopback nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_kib(pid: int) -> int:
    """The resident set size of a process, from ``/proc/<pid>/status`` (VmRSS, in KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


class ServerProcess:
    """A server run as its own process (own CPU loop), output to a log file, stopped on exit."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        ready_url: str,
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.ready_url = ready_url
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def python(
        cls,
        name: str,
        module_args: Sequence[str],
        ready_url: str,
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> ServerProcess:
        """A ``python -m ...`` server with this interpreter (``env``: its whole environment)."""
        return cls(name, [sys.executable, "-m", *module_args], ready_url, log_path, env)

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self._process is not None, f"{self.name} is not running"
        return self._process.pid

    def start(self) -> None:
        """Start the process and wait until ``ready_url`` answers 2xx."""
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
            )
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.ready_url, timeout=2) as response:  # noqa: S310 - loopback
                    if 200 <= response.status < 300:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready:\n{self.tail()}")

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the running process."""
        assert self._process is not None, f"{self.name} is not running"
        self._process.send_signal(signum)

    def poll(self) -> int | None:
        """The exit code if it has exited, else None."""
        assert self._process is not None, f"{self.name} was not started"
        return self._process.poll()

    def wait(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for it to exit on its own; the exit code."""
        assert self._process is not None, f"{self.name} was not started"
        return self._process.wait(timeout)

    def tail(self) -> str:
        """The end of the process's output, for error messages."""
        return log_tail(self.log_path, 3000)

    def stop(self) -> None:
        """Terminate the process and wait for it."""
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, _STOP_TIMEOUT_SECONDS)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: fields[11] is utime, fields[12] stime, in clock ticks.
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time every CPU of the machine has spent busy so far (not idle, not waiting on I/O;
    time the hypervisor gave to others counts as busy), from ``/proc/stat``: what wrk, the
    servers and everything else used together."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(value) for value in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and of every live descendant (a supervisor and its workers)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # gone while listed
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, total = [pid], 0.0
    while tree:
        current = tree.pop()
        try:
            total += cpu_seconds(current)
        except OSError:
            continue
        tree += [child for child, parent in parents.items() if parent == current]
    return total
