"""Running the broker: in this process, or as ``server.workers`` processes under a supervisor.

Workers each bind the port with SO_REUSEPORT, so the kernel spreads connections across them.
The supervisor starts one worker first (it runs the migrations and the declarative config),
then the others once it is ready; it restarts a worker that dies, logging why, with a backoff
when one dies soon after starting; on SIGTERM or SIGINT it passes SIGTERM to every worker,
which drains (``web.serving``), and exits 0 once all have exited 0. A worker that cannot start
the first time stops the whole thing: it printed why, and a restart would fail the same way.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType

from prometheus_client import multiprocess

from tokenbroker.cli.common import CliError, config_error, fail
from tokenbroker.config import Settings
from tokenbroker.errors import ConfigError
from tokenbroker.issuer.keys import KeyStoreError
from tokenbroker.logs import configure_logging
from tokenbroker.metrics import MULTIPROCESS_DIR_VARIABLE
from tokenbroker.web.app import create_app
from tokenbroker.web.loop import loop_name, new_event_loop
from tokenbroker.web.serving import serve_until_stopped

log = logging.getLogger(__name__)

# A worker that dies sooner than this after starting is restarted after a growing pause.
_HEALTHY_AFTER_SECONDS = 10.0
_MAX_RESTART_PAUSE_SECONDS = 30.0
# After the grace, how long workers get to exit before the supervisor kills them.
_EXIT_MARGIN_SECONDS = 10.0


def serve_in_this_process(
    settings: Settings, *, reuse_port: bool, on_listening: Callable[[str, int], None]
) -> int:
    """Serve until SIGTERM on this process's own event loop; start-up problems are CliErrors."""
    server = settings.server
    # Until the loop's own handlers take over (serve_until_stopped), a SIGTERM stops the start:
    # nothing is served yet, so nothing is cut off, and it is a clean exit.
    signal.signal(signal.SIGTERM, _exit_before_serving)
    try:
        loop_factory = _loop_factory(settings)
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            log.info("event loop: %s", loop_name(runner.get_loop()))
            runner.run(
                serve_until_stopped(
                    create_app(settings),
                    host=server.host,
                    port=server.port,
                    reuse_port=reuse_port,
                    grace_seconds=server.shutdown_grace_seconds,
                    on_listening=on_listening,
                )
            )
    except ConfigError as exc:
        # Raised while starting (the store, declarative config, the key store): report it
        # like a config file that does not load, one line a problem, no traceback.
        raise config_error(exc) from None
    except KeyStoreError as exc:
        raise CliError(f"signing keys: {exc}") from None
    return 0


def _exit_before_serving(signum: int, frame: FrameType | None) -> None:
    log.info("SIGTERM while starting: stopping")
    raise SystemExit(0)


def _loop_factory(settings: Settings) -> Callable[[], asyncio.AbstractEventLoop]:
    new_event_loop(settings.server.event_loop).close()  # a missing uvloop fails here, at once
    return lambda: new_event_loop(settings.server.event_loop)


def refuse_sqlite_workers(settings: Settings, count: int) -> None:
    """More than one worker on SQLite is a CliError: SQLite has one writer at a time."""
    url = settings.store.resolved_url(settings.server.data_dir)
    if count > 1 and url.startswith("sqlite"):
        raise CliError(
            f"server.workers = {count} needs a PostgreSQL store ([store] url): on SQLite the "
            "workers would contend for its single write lock on every audit event; "
            "run one worker, or point the store at PostgreSQL"
        )


@dataclass
class _Worker:
    """One slot of the supervisor: the process serving it now, and its restart bookkeeping."""

    index: int
    process: BaseProcess | None = None
    ready_pipe: Connection | None = None
    started_at: float = 0.0
    ready: bool = False
    quick_deaths: int = 0
    restart_at: float | None = None


class Supervisor:
    """Starts ``count`` workers on one port, restarts those that die, stops them on SIGTERM."""

    def __init__(self, settings: Settings, count: int) -> None:
        self._settings = settings
        self._workers = [_Worker(index) for index in range(count)]
        self._context = multiprocessing.get_context("spawn")
        self._stopping = False
        self._stop_deadline: float | None = None
        self._serving = False
        self._failed = False
        self._metrics_dir = ""
        self._wake_read, self._wake_write = os.pipe()

    def run(self) -> int:
        """Supervise until stopped; the exit code."""
        server = self._settings.server
        # Held for the supervisor's life: resolves port 0 once for every worker, and a port in
        # use fails here, before any worker starts.
        reservation = _reserve_port(server.host, server.port)
        port = reservation.getsockname()[1]
        self._settings = self._settings.model_copy(
            update={"server": server.model_copy(update={"port": port})}
        )
        self._metrics_dir = tempfile.mkdtemp(prefix="tokenbroker-metrics-")
        os.environ[MULTIPROCESS_DIR_VARIABLE] = self._metrics_dir
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._start(self._workers[0])
            return self._supervise()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._kill_all()
            os.environ.pop(MULTIPROCESS_DIR_VARIABLE, None)
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
            reservation.close()
            os.close(self._wake_read)
            os.close(self._wake_write)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # A second signal is passed on too: each worker then cuts its drain short.
        again = " again" if self._stopping else ""
        log.info("%s%s: passing SIGTERM to the workers", signal.Signals(signum).name, again)
        self._stop_all()
        os.write(self._wake_write, b"\0")

    def _supervise(self) -> int:
        while True:
            live = [w for w in self._workers if w.process is not None]
            if self._stopping and not live:
                return 1 if self._failed else 0
            waitables: list[object] = [self._wake_read]
            waitables += [w.process.sentinel for w in live if w.process is not None]
            waitables += [w.ready_pipe for w in live if w.ready_pipe is not None]
            for item in wait(waitables, self._next_timeout()):  # type: ignore[arg-type]
                if item == self._wake_read:
                    os.read(self._wake_read, 64)
            for worker in live:
                self._check(worker)
            if self._failed and not self._stopping:
                self._stop_all()
            self._restart_due()
            self._kill_late()

    def _next_timeout(self) -> float | None:
        now = time.monotonic()
        if self._stopping and self._stop_deadline is None:
            grace = self._settings.server.shutdown_grace_seconds
            self._stop_deadline = now + grace + _EXIT_MARGIN_SECONDS
        due = [w.restart_at for w in self._workers if w.restart_at is not None]
        if self._stop_deadline is not None:
            due.append(self._stop_deadline)
        return max(0.0, min(due) - now) if due else None

    def _start(self, worker: _Worker) -> None:
        receive, send = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_worker_main,
            args=(self._settings, worker.index, send),
            name=f"tokenbroker-worker-{worker.index}",
        )
        process.start()
        send.close()
        worker.process, worker.ready_pipe = process, receive
        worker.started_at, worker.ready, worker.restart_at = time.monotonic(), False, None

    def _check(self, worker: _Worker) -> None:
        process = worker.process
        if worker.ready_pipe is not None and process is not None and worker.ready_pipe.poll():
            self._read_ready(worker, worker.ready_pipe, process)
        if process is None or process.exitcode is None:
            return
        process.join()
        if worker.ready_pipe is not None:
            worker.ready_pipe.close()
            worker.ready_pipe = None
        worker.process = None
        assert process.pid is not None
        multiprocess.mark_process_dead(process.pid, self._metrics_dir)  # type: ignore[no-untyped-call]
        how = _describe_exit(process.exitcode)
        if self._stopping:
            log.info("worker %d (pid %d) %s", worker.index, process.pid, how)
            # Killed by the SIGTERM passed on while it was still importing: it served nothing.
            stopped_starting = not worker.ready and process.exitcode == -signal.SIGTERM
            if process.exitcode != 0 and not stopped_starting:
                self._failed = True
            return
        if not self._serving:
            log.error("worker %d (pid %d) %s starting; stopping", worker.index, process.pid, how)
            self._failed = True
            return
        lived = time.monotonic() - worker.started_at
        worker.quick_deaths = worker.quick_deaths + 1 if lived < _HEALTHY_AFTER_SECONDS else 0
        pause = min(2.0 ** (worker.quick_deaths - 1), _MAX_RESTART_PAUSE_SECONDS)
        pause = pause if worker.quick_deaths else 0.0
        log.warning(
            "worker %d (pid %d) %s after %.1f s; restarting it in %.0f s",
            worker.index,
            process.pid,
            how,
            lived,
            pause,
        )
        worker.restart_at = time.monotonic() + pause

    def _read_ready(self, worker: _Worker, pipe: Connection, process: BaseProcess) -> None:
        worker.ready_pipe = None
        try:
            host, port = pipe.recv()
        except EOFError:  # it died before it was ready: its sentinel says how
            return
        finally:
            pipe.close()
        worker.ready = True
        log.info("worker %d (pid %d) ready", worker.index, process.pid)
        if not self._serving:
            self._serving = True
            log.info(
                "listening on http://%s:%d (%d workers, supervisor pid %d)",
                host,
                port,
                len(self._workers),
                os.getpid(),
            )
            for other in self._workers[1:]:
                if not self._stopping:
                    self._start(other)

    def _restart_due(self) -> None:
        now = time.monotonic()
        for worker in self._workers:
            if worker.restart_at is not None and worker.restart_at <= now and not self._stopping:
                self._start(worker)

    def _stop_all(self) -> None:
        self._stopping = True
        for worker in self._workers:
            worker.restart_at = None
            if worker.process is not None and worker.process.pid is not None:
                os.kill(worker.process.pid, signal.SIGTERM)

    def _kill_late(self) -> None:
        if self._stop_deadline is None or time.monotonic() < self._stop_deadline:
            return
        for worker in self._workers:
            if worker.process is not None and worker.process.exitcode is None:
                log.error(
                    "worker %d (pid %d) did not exit in time; killing it",
                    worker.index,
                    worker.process.pid,
                )
                worker.process.kill()
        self._stop_deadline = time.monotonic() + _EXIT_MARGIN_SECONDS

    def _kill_all(self) -> None:
        for worker in self._workers:
            if worker.process is not None and worker.process.exitcode is None:
                worker.process.kill()
                worker.process.join()


def _reserve_port(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def _describe_exit(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def _worker_main(settings: Settings, index: int, ready: Connection) -> None:
    """A worker process: serve with SO_REUSEPORT, tell the supervisor once listening."""
    # Its own process group: a terminal's Ctrl-C reaches the supervisor alone, which passes
    # one SIGTERM on (the signal and a forwarded copy would count as two: a cut-short drain).
    os.setpgrp()
    configure_logging(settings.logging.level, settings.logging.format)
    _stop_when_orphaned()

    def on_listening(host: str, port: int) -> None:
        ready.send((host, port))
        ready.close()

    try:
        code = serve_in_this_process(settings, reuse_port=True, on_listening=on_listening)
    except CliError as exc:
        fail(str(exc))
        code = exc.exit_code
    sys.exit(code)


def _stop_when_orphaned() -> None:
    """SIGTERM this worker when its supervisor dies (even by SIGKILL), so none is left serving."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch(sentinel: int) -> None:
        wait([sentinel])
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, args=(parent.sentinel,), daemon=True).start()
