"""Serving one application on one port until SIGTERM, then draining it.

The first SIGTERM (or SIGINT) turns ``/readyz`` to 503 and closes the listener at once. Requests
already in flight, and the next request on each kept-alive connection (answered with
``Connection: close``), get ``server.shutdown_grace_seconds`` to finish. A second signal, or the
grace running out, cancels what is left. Either way the application's cleanup contexts then run,
so the store closes and the audit writer flushes what it holds. No response is lost from the
audit: every exchange's event is committed before its response is written (``AuditWriter``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Awaitable, Callable

from aiohttp import web

from tokenbroker.web.server import BrokerAppRunner

log = logging.getLogger(__name__)

# After the grace, how long cancelled handlers and responses being written get to end.
_CUT_OFF_SECONDS = 2.0


class ServingState:
    """Whether the application is draining, and the requests it is handling."""

    def __init__(self) -> None:
        self.draining = False
        self.in_flight: set[asyncio.Task[object]] = set()


SERVING_STATE = web.AppKey("serving_state", ServingState)


@web.middleware
async def serving_state_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Count the request as in flight; while draining, close its connection after answering."""
    state = request.app[SERVING_STATE]
    task = asyncio.current_task()
    if task is not None:
        state.in_flight.add(task)
    try:
        response = await handler(request)
    finally:
        if task is not None:
            state.in_flight.discard(task)
    if state.draining:
        response.force_close()
    return response


class _StopSignals:
    """Counts SIGTERM and SIGINT: the first asks for a drain, the second cuts it short."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.first = asyncio.Event()
        self.second = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._received, signum)

    def _received(self, signum: int) -> None:
        if self.first.is_set():
            log.warning("%s again: cutting off the requests still in flight", _name(signum))
            self.second.set()
        else:
            log.info("%s: draining (readiness 503, not accepting)", _name(signum))
            self.first.set()

    def remove(self) -> None:
        """Stop counting: SIGINT gets its default handler back, SIGTERM is ignored from here.

        Called once cleanup is done: a SIGTERM arriving between then and the process's exit
        must not turn a clean stop into a death by signal.
        """
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._loop.remove_signal_handler(signum)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _name(signum: int) -> str:
    return signal.Signals(signum).name


async def serve_until_stopped(
    app: web.Application,
    *,
    host: str,
    port: int,
    reuse_port: bool,
    grace_seconds: float,
    on_listening: Callable[[str, int], None],
) -> None:
    """Start ``app`` (its cleanup contexts), serve it until SIGTERM, drain it, clean it up.

    ``on_listening(host, port)`` is called once the socket accepts, with the bound address.
    Start-up errors (a config the store refuses, an unusable key) propagate after cleanup.
    """
    loop = asyncio.get_running_loop()
    signals = _StopSignals(loop)
    state = app[SERVING_STATE]
    runner = BrokerAppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=_CUT_OFF_SECONDS
    )
    try:
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        # What start-up made (the config, the policy, the libraries' modules and tables) lives
        # as long as the process: out of the collector's view, its full passes walk only what
        # serving makes, not every object the process holds.
        gc.freeze()
        on_listening(bound_host, bound_port)
        await signals.first.wait()
        state.draining = True
        await site.stop()
        await _finish_in_flight(state, grace_seconds, signals.second)
    finally:
        try:
            await runner.cleanup()
        finally:
            signals.remove()


async def _finish_in_flight(state: ServingState, grace_seconds: float, cut: asyncio.Event) -> None:
    """Wait for in-flight requests until none is left, the grace runs out, or ``cut`` is set."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_seconds
    cut_waiter = asyncio.ensure_future(cut.wait())
    try:
        # A request arriving on a kept-alive connection meanwhile joins the set: loop until empty.
        while state.in_flight and not cut.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.wait(
                {*state.in_flight, cut_waiter},
                timeout=remaining,
                return_when=asyncio.FIRST_COMPLETED,
            )
    finally:
        cut_waiter.cancel()
    left = list(state.in_flight)
    if not left:
        log.info("every in-flight request finished")
        return
    reason = "second signal" if cut.is_set() else f"grace of {grace_seconds:g} s over"
    log.warning("%s: cancelling %d request(s) still in flight", reason, len(left))
    for task in left:
        task.cancel()
    await asyncio.wait(left, timeout=_CUT_OFF_SECONDS)
