"""``kill -9`` in the middle of a burst: every lease has its audit event, and every success its
lease. A real ``tokenbroker serve`` on SQLite, really signed tokens from a dev issuer process."""

from __future__ import annotations

import concurrent.futures
import signal
from contextlib import ExitStack
from pathlib import Path

from tests.support.serve import IssuerProcess, eventually, exchange, policy, start_broker

from tokenbroker.backends.registry import INSTALLED
from tokenbroker.store import Store

# Minted locally: no backend, so the burst is as fast as the broker goes.
CREDENTIAL = {"name": "ci-token", "type": "oidc_token", "token": "mint", "audience": "ci"}
BURST = 200


async def test_a_kill_9_mid_burst_leaves_no_lease_without_its_event_and_no_success_without_lease(
    tmp_path: Path, issuer_process: IssuerProcess
) -> None:
    tokens = [issuer_process.mint() for _ in range(BURST)]
    answered: list[int] = []
    with ExitStack() as stack, concurrent.futures.ThreadPoolExecutor(8) as pool:
        broker = start_broker(tmp_path, stack, policy(issuer_process, [CREDENTIAL]))
        futures = [
            pool.submit(exchange, broker.url, token, "ci-token", timeout=30) for token in tokens
        ]
        # Killed once some answers are out and others are in flight.
        eventually(
            lambda: True if sum(f.done() for f in futures) >= BURST // 4 else None,
            60,
            "a quarter of the burst answered",
        )
        broker.server.signal(signal.SIGKILL)
        for future in futures:
            try:
                answered.append(future.result(60).status)
            except OSError:
                answered.append(0)  # the connection died with the broker
    assert 0 < answered.count(200) < BURST
    database = broker.config_path.parent / "broker-data" / "tokenbroker.db"
    store = await Store.open(f"sqlite+aiosqlite:///{database}", credential_types=INSTALLED)
    try:
        leases = await store.leases.listing(filters={}, limit=1000)
        events = await store.audit.events(limit=1000)
    finally:
        await store.close()
    issued = {e.lease_id for e in events if e.outcome == "success" and e.reason == "issued"}
    handed_out = {lease.id for lease in leases if lease.state != "pending"}
    # An active lease is one whose issue was audited, in the same transaction, and back.
    assert handed_out == issued
    assert None not in issued
    # Every answered 200 was an audited issue (retries of one token would be "reused").
    assert len(issued) >= answered.count(200)
