"""SIGTERM on ``tokenbroker serve`` as a real process: readiness 503 at once, the port closed,
the in-flight exchange finished and audited, exit 0; a second SIGTERM or the grace cuts it short.

The exchange is held in flight by a Vault stand-in that answers its login only when released.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tests.fakes.http import send_json
from tests.fakes.vault import login_ok
from tests.support.serve import (
    BrokerProcess,
    ExchangeAnswer,
    IssuerProcess,
    eventually,
    exchange,
    policy,
    start_broker,
)

from tokenbroker.backends.registry import INSTALLED
from tokenbroker.store import Store

# Bounds on a process that should stop in well under a second once nothing holds it.
_EXIT_TIMEOUT_SECONDS = 30


@dataclass
class HeldVault:
    """Answers Vault logins while ``gate`` is set; a login arriving while it is clear waits."""

    server: ThreadingHTTPServer
    gate: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Event = field(default_factory=threading.Event)

    @property
    def address(self) -> str:
        """The Vault address to configure."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def held_vault() -> Iterator[HeldVault]:
    """A Vault stand-in on loopback, open (answering at once) until a test clears its gate."""
    holder: list[HeldVault] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            vault = holder[0]
            vault.arrived.set()
            vault.gate.wait(_EXIT_TIMEOUT_SECONDS)
            send_json(self, login_ok().body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    vault = HeldVault(server)
    vault.gate.set()
    holder.append(vault)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield vault
    vault.gate.set()
    server.shutdown()
    server.server_close()


def _broker(
    tmp_path: Path,
    stack: ExitStack,
    issuer: IssuerProcess,
    vault: HeldVault,
    grace_seconds: float,
) -> BrokerProcess:
    credential = {
        "name": "prod-vault",
        "type": "vault_oidc",
        "settings": {"address": vault.address, "role": "deployer"},
    }
    return start_broker(
        tmp_path,
        stack,
        policy(issuer, [credential]),
        server={"shutdown_grace_seconds": grace_seconds},
    )


def _hold_an_exchange(
    pool: concurrent.futures.ThreadPoolExecutor,
    broker: BrokerProcess,
    issuer: IssuerProcess,
    vault: HeldVault,
) -> concurrent.futures.Future[ExchangeAnswer]:
    vault.gate.clear()
    vault.arrived.clear()
    held = pool.submit(exchange, broker.url, issuer.mint(), "prod-vault")
    assert vault.arrived.wait(_EXIT_TIMEOUT_SECONDS), broker.output()
    return held


def _readyz(connection: http.client.HTTPConnection) -> http.client.HTTPResponse:
    connection.request("GET", "/readyz")
    response = connection.getresponse()
    response.read()
    return response


def _assert_exits_0_cutting(
    broker: BrokerProcess, held: concurrent.futures.Future[ExchangeAnswer]
) -> None:
    """The broker exits 0 and the exchange it held gets no answer: its connection is cut."""
    assert broker.server.wait(_EXIT_TIMEOUT_SECONDS) == 0, broker.output()
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        held.result(_EXIT_TIMEOUT_SECONDS)


def _draining_seen_on(connection: http.client.HTTPConnection) -> http.client.HTTPResponse:
    """Ask ``/readyz`` on a kept-alive connection until it answers 503 (the signal is async)."""
    return eventually(
        lambda: response if (response := _readyz(connection)).status == 503 else None,
        _EXIT_TIMEOUT_SECONDS,
        "readiness 503 after SIGTERM",
    )


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


async def _audited_request_ids(broker: BrokerProcess) -> set[str]:
    database = broker.config_path.parent / "broker-data" / "tokenbroker.db"
    store = await Store.open(f"sqlite+aiosqlite:///{database}", credential_types=INSTALLED)
    try:
        return {event.request_id for event in await store.audit.events(limit=1000)}
    finally:
        await store.close()


async def test_sigterm_drains_an_in_flight_exchange_then_exits_0_with_it_audited(
    tmp_path: Path, issuer_process: IssuerProcess, held_vault: HeldVault
) -> None:
    with ExitStack() as stack, concurrent.futures.ThreadPoolExecutor(1) as pool:
        broker = _broker(tmp_path, stack, issuer_process, held_vault, grace_seconds=60)
        kept_alive = http.client.HTTPConnection("127.0.0.1", broker.port, timeout=10)
        assert _readyz(kept_alive).status == 200
        held = _hold_an_exchange(pool, broker, issuer_process, held_vault)

        broker.server.signal(signal.SIGTERM)

        draining = _draining_seen_on(kept_alive)
        assert draining.getheader("Connection") == "close"
        assert _refused(broker.port)  # the listener closed before readiness answered 503
        assert broker.server.poll() is None  # still serving the held exchange
        held_vault.gate.set()
        answer = held.result(_EXIT_TIMEOUT_SECONDS)
        assert answer.status == 200, answer.body
        assert answer.body["values"]["VAULT_TOKEN"] == login_ok().body["auth"]["client_token"]  # type: ignore[index]
        assert broker.server.wait(_EXIT_TIMEOUT_SECONDS) == 0, broker.output()
    assert answer.request_id in await _audited_request_ids(broker)
    assert "every in-flight request finished" in broker.output()


async def test_a_second_sigterm_cuts_the_drain_short_and_keeps_the_answered_audit(
    tmp_path: Path, issuer_process: IssuerProcess, held_vault: HeldVault
) -> None:
    with ExitStack() as stack, concurrent.futures.ThreadPoolExecutor(1) as pool:
        broker = _broker(tmp_path, stack, issuer_process, held_vault, grace_seconds=600)
        answered = exchange(broker.url, issuer_process.mint(), "prod-vault")
        assert answered.status == 200, answered.body
        kept_alive = http.client.HTTPConnection("127.0.0.1", broker.port, timeout=10)
        # Connected (and kept alive) before the signal closes the listener.
        assert _readyz(kept_alive).status == 200
        held = _hold_an_exchange(pool, broker, issuer_process, held_vault)

        broker.server.signal(signal.SIGTERM)
        _draining_seen_on(kept_alive)
        broker.server.signal(signal.SIGTERM)

        # Far inside the 600 s grace: the second signal ended it.
        _assert_exits_0_cutting(broker, held)
    assert answered.request_id in await _audited_request_ids(broker)
    assert "second signal: cancelling 1 request(s) still in flight" in broker.output()


async def test_the_grace_running_out_cuts_the_drain_short_and_exits_0(
    tmp_path: Path, issuer_process: IssuerProcess, held_vault: HeldVault
) -> None:
    with ExitStack() as stack, concurrent.futures.ThreadPoolExecutor(1) as pool:
        broker = _broker(tmp_path, stack, issuer_process, held_vault, grace_seconds=1)
        held = _hold_an_exchange(pool, broker, issuer_process, held_vault)

        broker.server.signal(signal.SIGTERM)

        _assert_exits_0_cutting(broker, held)
    assert "grace of 1 s over: cancelling 1 request(s) still in flight" in broker.output()
