"""The flood ledger and the client key: pure parts of the per-client-address limit."""

from __future__ import annotations

import pytest

from tokenbroker.exchange.floods import OVERFLOW_CLIENT, FloodLedger, client_key

T0 = 1_800_000_000.0


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        (None, ""),
    ],
)
def test_a_client_counts_by_its_address_and_an_ipv6_client_by_its_64(
    address: str | None, key: str
) -> None:
    assert client_key(address) == key


def test_refusals_inside_an_interval_are_one_flood() -> None:
    ledger = FloodLedger(60)
    assert ledger.note("a", T0, "r1") is None
    assert ledger.note("a", T0 + 59, "r2") is None
    [flood] = ledger.drain()
    assert (flood.count, flood.first, flood.last, flood.request_id) == (2, T0, T0 + 59, "r1")


def test_the_first_refusal_after_the_interval_ends_the_flood_and_opens_the_next() -> None:
    ledger = FloodLedger(60)
    ledger.note("a", T0, "r1")
    ended = ledger.note("a", T0 + 60, "r2")
    assert ended is not None
    assert ended.count == 1
    [current] = ledger.drain()
    assert (current.first, current.request_id) == (T0 + 60, "r2")


def test_ended_returns_only_the_floods_whose_interval_is_over() -> None:
    ledger = FloodLedger(60)
    ledger.note("old", T0, "r1")
    ledger.note("new", T0 + 30, "r2")
    assert [flood.client for flood in ledger.ended(T0 + 60)] == ["old"]
    assert len(ledger) == 1


def test_clients_beyond_the_ledgers_size_share_one_overflow_flood() -> None:
    ledger = FloodLedger(60, max_open=2)
    for client in ("a", "b", "c", "d", "c"):
        ledger.note(client, T0, "r")
    floods = {flood.client: flood.count for flood in ledger.drain()}
    assert floods == {"a": 1, "b": 1, OVERFLOW_CLIENT: 3}


def test_the_summary_event_is_a_flood_with_its_counts_in_detail() -> None:
    ledger = FloodLedger(60)
    ledger.note("192.0.2.7", T0, "r1")
    ledger.note("192.0.2.7", T0 + 5, "r2")
    [flood] = ledger.drain()
    event = flood.event(60)
    assert (event.kind, event.outcome, event.reason) == ("flood", "denied", "client_rate_limited")
    assert (event.client_address, event.request_id) == ("192.0.2.7", "r1")
    assert event.time.timestamp() == T0 + 5
    assert event.detail == {
        "count": 2,
        "first": "2027-01-15T08:00:00+00:00",
        "last": "2027-01-15T08:00:05+00:00",
        "reason": "client_rate_limited",
        "interval_seconds": 60,
        "client": "192.0.2.7",
    }
