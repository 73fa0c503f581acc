"""Audit events: recorded as given, filtered, newest first, paged by id."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tokenbroker.errors import UnprocessableEntity
from tokenbroker.policy.models import AuditEvent
from tokenbroker.store import Store

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _event(minute: int, **fields: str) -> AuditEvent:
    return AuditEvent(
        time=T0 + timedelta(minutes=minute),
        request_id=f"req-{minute}",
        outcome=fields.pop("outcome", "success"),  # type: ignore[arg-type]
        reason=fields.pop("reason", "issued"),
        latency_ms=12.5,
        **fields,  # type: ignore[arg-type]
    )


@pytest.fixture
async def history(store: Store) -> None:
    """Six events across two organizations, projects and outcomes, one a minute."""
    events = [
        _event(0, organization="acme", project="p1", credential="prod-vault"),
        _event(
            1,
            organization="acme",
            project="p2",
            credential="prod-vault",
            outcome="denied",
            reason="not_assigned",
        ),
        _event(2, organization="other", project="p1", credential="aws"),
        _event(
            3,
            organization="acme",
            project="p1",
            credential="dev-vault",
            outcome="error",
            reason="upstream_error",
        ),
        _event(4, organization="acme", project="p1", credential="prod-vault"),
        _event(5, outcome="denied", reason="token_expired"),
    ]
    for event in events:
        await store.audit.record(event)


async def test_recorded_event_reads_back_with_an_id_and_utc_time(store: Store) -> None:
    event = AuditEvent(
        time=datetime(2026, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))),
        request_id="req-1",
        outcome="success",
        reason="issued",
        latency_ms=3.25,
        issuer="https://login.app.env0.com/",
        organization="acme",
        project="p1",
        subject="user:1",
        credential="prod-vault",
        credential_type="vault_oidc",
        token_fingerprint="sha256:abc",
        client_address="10.0.0.1",
    )
    await store.audit.record(event)
    (stored,) = await store.audit.events()
    assert stored.id is not None
    assert stored.time == T0
    assert stored.time.tzinfo is not None
    assert stored.time.utcoffset() == timedelta(0)
    assert replace(stored, id=None, time=event.time) == event


@pytest.mark.usefixtures("history")
async def test_events_are_listed_newest_first(store: Store) -> None:
    assert [e.request_id for e in await store.audit.events()] == [
        f"req-{m}" for m in (5, 4, 3, 2, 1, 0)
    ]


@pytest.mark.usefixtures("history")
@pytest.mark.parametrize(
    ("filters", "minutes"),
    [
        ({"organization": "acme"}, [4, 3, 1, 0]),
        ({"organization": "acme", "project": "p1"}, [4, 3, 0]),
        ({"credential": "prod-vault"}, [4, 1, 0]),
        ({"outcome": "denied"}, [5, 1]),
        ({"since": T0 + timedelta(minutes=2)}, [5, 4, 3, 2]),
        ({"until": T0 + timedelta(minutes=2)}, [1, 0]),
        (
            {
                "since": T0 + timedelta(minutes=1),
                "until": T0 + timedelta(minutes=4),
                "project": "p1",
            },
            [3, 2],
        ),
        ({"organization": "nobody"}, []),
    ],
)
async def test_filters_combine(
    store: Store, filters: dict[str, object], minutes: list[int]
) -> None:
    events = await store.audit.events(**filters)  # type: ignore[arg-type]
    assert [e.request_id for e in events] == [f"req-{m}" for m in minutes]


@pytest.mark.usefixtures("history")
async def test_pages_follow_on_by_the_last_id_without_gaps_or_repeats(store: Store) -> None:
    seen: list[str] = []
    before_id: int | None = None
    while True:
        page = await store.audit.events(limit=4, before_id=before_id)
        if not page:
            break
        assert len(page) <= 4
        seen += [e.request_id for e in page]
        before_id = page[-1].id
    assert seen == [f"req-{m}" for m in (5, 4, 3, 2, 1, 0)]


@pytest.mark.usefixtures("history")
async def test_a_page_keeps_its_place_when_new_events_arrive(store: Store) -> None:
    first = await store.audit.events(limit=2)
    await store.audit.record(_event(9))
    second = await store.audit.events(limit=2, before_id=first[-1].id)
    assert [e.request_id for e in second] == ["req-3", "req-2"]


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ({"outcome": "maybe"}, "outcome"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"before_id": 0}, "before_id"),
        ({"since": datetime(2026, 1, 1)}, "since"),
    ],
)
async def test_bad_audit_query_is_a_422(
    store: Store, filters: dict[str, object], field: str
) -> None:
    with pytest.raises(UnprocessableEntity) as caught:
        await store.audit.events(**filters)  # type: ignore[arg-type]
    assert caught.value.details["fields"][0]["field"] == field  # type: ignore[index]
