"""The reuse window held by leases: retries, coalescing, and two brokers on one store.

Each test runs on SQLite and on PostgreSQL (tests/store/conftest.py's ``store_url``). Two
``Store`` objects opened on one database stand for two brokers of a fleet: nothing but the
database connects them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from sqlalchemy import event

from tests.store.conftest import store, store_url  # noqa: F401 (fixtures)
from tests.store.helpers import postgresql, terminate_backend, watch_checkouts
from tokenbroker.backends.base import IssuedCredential
from tokenbroker.backends.registry import INSTALLED
from tokenbroker.clock import FrozenClock
from tokenbroker.errors import TemporarilyUnavailable
from tokenbroker.exchange.reuse import Issue, LeaseFacts, ReuseKey, ReuseWindow
from tokenbroker.policy.models import AuditEvent, Credential
from tokenbroker.store import Store

NOW = 1_800_000_000.0
KEY = ReuseKey("sha256:a", 1, "v1")
CREDENTIAL = Credential(
    1, "acme", "prod-vault", "vault_oidc", "passthrough", None, {"address": "https://v"}
)
FACTS = LeaseFacts(
    organization="acme",
    project="p",
    issuer="dev-env0",
    subject="sub",
    job="job-1",
    request_id="req",
    revocable=True,
)
SECRET = "s.very-secret-vault-token"


async def ignore_orphan(lease_id: str, issued: IssuedCredential) -> None:
    """No caller of these tests is cancelled mid-issue."""


class CountingIssuer:
    """A backend stand-in that counts its calls and can be held until released."""

    def __init__(self, lifetime: float = 3600) -> None:
        self.calls = 0
        self.lifetime = lifetime
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, lease_id: str) -> IssuedCredential:
        self.calls += 1
        self.started.set()
        await self.release.wait()
        return IssuedCredential(
            values={"VAULT_TOKEN": f"{SECRET}-{self.calls}"},
            expires_at=datetime.fromtimestamp(NOW + self.lifetime, UTC),
            revocation_handle=f"{SECRET}-{self.calls}",
        )


@dataclass
class Broker:
    """One broker's store and reuse window."""

    store: Store
    window: ReuseWindow


def broker(store: Store, clock: FrozenClock, **options: float) -> Broker:  # noqa: F811
    return Broker(
        store, ReuseWindow(store.leases, store.audit, clock, encryption_key="k" * 32, **options)
    )


async def issue(on: Broker, issuer: CountingIssuer, key: ReuseKey = KEY) -> tuple[Issue, bool]:
    """Get or issue, and activate a fresh issue as the service does with its audit event."""
    result, reused = await on.window.get_or_issue(key, CREDENTIAL, FACTS, issuer, ignore_orphan)
    if result.fresh:
        event = AuditEvent(
            time=datetime.fromtimestamp(NOW, UTC),
            request_id="req",
            outcome="success",
            reason="issued",
            latency_ms=1.0,
            lease_id=result.lease_id,
        )
        await on.window.activate(result, NOW + 86400, event)
    return result, reused


@contextlib.contextmanager
def statements_on(store: Store) -> Iterator[list[str]]:  # noqa: F811
    """The SQL statements ``store`` sends while the block runs."""
    statements: list[str] = []

    def sent(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    engine = store._engine.sync_engine
    event.listen(engine, "before_cursor_execute", sent)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", sent)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
def reuse(store: Store, clock: FrozenClock) -> Broker:  # noqa: F811
    return broker(store, clock)


@pytest.fixture
async def second_broker(store_url: str, store: Store) -> AsyncIterator[Store]:  # noqa: F811
    """Another broker's store on the same database (already migrated by ``store``)."""
    other = await Store.open(store_url, credential_types=INSTALLED)
    yield other
    await other.close()


async def test_a_retry_with_the_same_token_gets_the_same_credential(
    reuse: Broker,
) -> None:
    issuer = CountingIssuer()
    first, reused_first = await issue(reuse, issuer)
    second, reused_second = await issue(reuse, issuer)
    assert issuer.calls == 1
    assert second.issued.values == first.issued.values
    assert second.lease_id == first.lease_id
    assert (reused_first, reused_second) == (False, True)


async def test_different_tokens_and_changed_credentials_never_share(reuse: Broker) -> None:
    issuer = CountingIssuer()
    await issue(reuse, issuer)
    await issue(reuse, issuer, ReuseKey("sha256:b", 1, "v1"))
    await issue(reuse, issuer, ReuseKey("sha256:a", 1, "v2"))
    assert issuer.calls == 3


async def test_concurrent_retries_read_their_lease_states_in_one_read_or_on_sqlite3(
    reuse: Broker,
    store: Store,  # noqa: F811
) -> None:
    issuer = CountingIssuer()
    keys = [ReuseKey(f"sha256:{n}", 1, "v1") for n in range(8)]
    firsts = [(await issue(reuse, issuer, key))[0] for key in keys]
    revoked = firsts[3]
    assert await store.leases.end(
        revoked.lease_id, state="revoked", now=datetime.fromtimestamp(NOW, UTC), by="test"
    )
    with statements_on(store) as statements:
        retries = await asyncio.gather(*(issue(reuse, issuer, key) for key in keys))
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT") and "leases" in s]
    if store.dialect == "postgresql":
        # One read for the eight remembered issues, then the revoked one's new claim.
        assert len([r for r in reads if " IN " in r.upper()]) == 1
    else:
        # Each read on the sqlite3 connection itself, in the turn that asks.
        assert reads == []
    assert [reused for _, reused in retries] == [n != 3 for n in range(8)]
    assert retries[3][0].lease_id != revoked.lease_id
    assert issuer.calls == 9


@postgresql
async def test_on_postgresql_retries_read_their_lease_states_on_one_held_connection(
    reuse: Broker,
    store: Store,  # noqa: F811
) -> None:
    issuer = CountingIssuer()
    first, _ = await issue(reuse, issuer)
    checkouts = watch_checkouts(store._engine)
    retries = [await issue(reuse, issuer) for _ in range(3)]
    assert [(again.lease_id, reused) for again, reused in retries] == [(first.lease_id, True)] * 3
    # One checkout (and one pre-ping) for the three rounds, not one each.
    assert len(checkouts.backends) == 1


@postgresql
async def test_on_postgresql_a_retry_whose_read_connection_died_reads_again_on_a_fresh_one(
    reuse: Broker,
    store: Store,  # noqa: F811
    store_url: str,  # noqa: F811
) -> None:
    issuer = CountingIssuer()
    first, _ = await issue(reuse, issuer)
    checkouts = watch_checkouts(store._engine)
    await issue(reuse, issuer)
    (held,) = checkouts.backends
    await terminate_backend(store_url, held)
    again, reused = await issue(reuse, issuer)
    assert (again.lease_id, reused, issuer.calls) == (first.lease_id, True, 1)
    assert checkouts.backends[-1] != held


async def test_a_repeat_after_the_reuse_window_is_a_new_issue(
    store: Store,  # noqa: F811
    clock: FrozenClock,
) -> None:
    reuse = broker(store, clock, reuse_seconds=60)
    issuer = CountingIssuer()
    first, _ = await issue(reuse, issuer)
    clock.advance(59)
    assert (await issue(reuse, issuer))[0].lease_id == first.lease_id
    clock.advance(2)
    later, reused = await issue(reuse, issuer)
    assert (later.lease_id != first.lease_id, reused, issuer.calls) == (True, False, 2)


async def test_concurrent_identical_requests_share_one_backend_call(reuse: Broker) -> None:
    issuer = CountingIssuer()
    issuer.release.clear()
    tasks = [asyncio.create_task(issue(reuse, issuer)) for _ in range(5)]
    await issuer.started.wait()
    issuer.release.set()
    results = await asyncio.gather(*tasks)
    assert issuer.calls == 1
    assert len({result.lease_id for result, _ in results}) == 1
    assert sorted(reused for _, reused in results) == [False, True, True, True, True]


async def test_a_failed_issue_lets_the_slot_go(reuse: Broker, store: Store) -> None:  # noqa: F811
    async def failing(lease_id: str) -> IssuedCredential:
        raise RuntimeError("backend down")

    with pytest.raises(RuntimeError):
        await reuse.window.get_or_issue(KEY, CREDENTIAL, FACTS, failing, ignore_orphan)
    issuer = CountingIssuer()
    _, reused = await issue(reuse, issuer)
    assert (issuer.calls, reused) == (1, False)
    states = sorted(lease.state for lease in await store.leases.listing(filters={}))
    assert states == ["active", "failed"]


@pytest.mark.parametrize("revoked_by", ["this broker", "another broker"])
async def test_a_revoked_lease_is_never_handed_out_again(
    reuse: Broker,
    store: Store,  # noqa: F811
    second_broker: Store,
    revoked_by: str,
) -> None:
    # The issuing broker remembers its issue for retries; it must still see the revocation.
    issuer = CountingIssuer()
    first, _ = await issue(reuse, issuer)
    revoker = store if revoked_by == "this broker" else second_broker
    assert await revoker.leases.end(
        first.lease_id, state="revoked", now=datetime.fromtimestamp(NOW, UTC), by="test"
    )
    again, reused = await issue(reuse, issuer)
    assert (again.lease_id != first.lease_id, reused, issuer.calls) == (True, False, 2)


async def test_a_retry_on_another_broker_gets_the_first_brokers_credential(
    reuse: Broker, second_broker: Store, clock: FrozenClock
) -> None:
    issuer = CountingIssuer()
    first, _ = await issue(reuse, issuer)
    other = broker(second_broker, clock)
    retried, reused = await issue(other, issuer)
    assert (reused, issuer.calls) == (True, 1)
    assert retried.issued.values == first.issued.values
    # Its next retries there are served from memory: one lease-state read, no claim (on
    # SQLite the read runs on the sqlite3 connection itself, where no statement is seen).
    with statements_on(second_broker) as statements:
        again, reused = await issue(other, issuer)
    assert (again.lease_id, reused) == (first.lease_id, True)
    read = ["SELECT"] if second_broker.dialect == "postgresql" else []
    assert [s.split()[0].upper() for s in statements] == read


async def test_identical_requests_split_over_two_brokers_make_one_backend_call(
    reuse: Broker, second_broker: Store, clock: FrozenClock
) -> None:
    other = broker(second_broker, clock)
    issuer = CountingIssuer()
    issuer.release.clear()
    tasks = [asyncio.create_task(issue(broker, issuer)) for broker in [reuse, other] * 10]
    await issuer.started.wait()
    issuer.release.set()
    results = await asyncio.gather(*tasks)
    assert issuer.calls == 1
    assert len({result.issued.values["VAULT_TOKEN"] for result, _ in results}) == 1


async def test_a_broker_gives_up_waiting_with_a_retryable_503(
    store: Store,  # noqa: F811
    second_broker: Store,
    clock: FrozenClock,
) -> None:
    slow = broker(store, clock)
    issuer = CountingIssuer()
    issuer.release.clear()
    holder = asyncio.create_task(issue(slow, issuer))
    await issuer.started.wait()
    impatient = broker(second_broker, clock, wait_seconds=0)
    with pytest.raises(TemporarilyUnavailable) as caught:
        await impatient.window.get_or_issue(KEY, CREDENTIAL, FACTS, issuer, ignore_orphan)
    assert caught.value.reason == "issue_in_progress"
    issuer.release.set()
    await holder
    assert issuer.calls == 1


async def test_the_store_keeps_no_credential_in_plaintext(
    reuse: Broker,
    store: Store,  # noqa: F811
) -> None:
    await issue(reuse, CountingIssuer())
    async with store.reading() as unit:
        rows = await unit.connection.exec_driver_sql("SELECT * FROM leases")
        dumped = repr(rows.all())
    assert SECRET not in dumped
