"""Audit events through the admin API: filters, newest first, cursor pagination."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tokenbroker.policy.models import AuditEvent, Outcome

from .conftest import Admin

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def event(
    n: int,
    *,
    organization: str = "acme",
    project: str = "p1",
    credential: str = "prod-vault",
    outcome: Outcome = "success",
    reason: str = "issued",
) -> AuditEvent:
    """The n-th event, n minutes after T0."""
    return AuditEvent(
        time=T0 + timedelta(minutes=n),
        request_id=f"req-{n}",
        outcome=outcome,
        reason=reason,
        latency_ms=12.5,
        issuer="env0",
        organization=organization,
        project=project,
        subject=f"subject-{n}",
        credential=credential,
        credential_type="vault_oidc",
        token_fingerprint="sha256:" + "ab" * 32,
        client_address="127.0.0.1",
    )


@pytest.fixture
async def trail(admin: Admin) -> Admin:
    """Ten events: 0-4 acme/p1 successes, 5-6 acme/p2 denials, 7-9 beta/p1 errors."""
    for n in range(5):
        await admin.store.audit.record(event(n))
    for n in (5, 6):
        await admin.store.audit.record(
            event(n, project="p2", outcome="denied", reason="bound_claims_mismatch")
        )
    for n in (7, 8, 9):
        await admin.store.audit.record(
            event(n, organization="beta", credential="aws", outcome="error", reason="upstream")
        )
    return admin


def request_ids(body: dict[str, object]) -> list[str]:
    events = body["events"]
    assert isinstance(events, list)
    return [e["request_id"] for e in events]


async def test_events_come_newest_first_with_every_field(trail: Admin) -> None:
    reply = await trail.get("/audit")
    assert reply.status == 200
    assert request_ids(reply.json) == [f"req-{n}" for n in range(9, -1, -1)]
    assert reply.json["next"] is None
    events = reply.json["events"]
    assert isinstance(events, list)
    oldest = events[-1]
    assert isinstance(oldest["id"], int)
    assert {k: v for k, v in oldest.items() if k != "id"} == {
        "time": "2026-11-01T12:00:00Z",
        "request_id": "req-0",
        "outcome": "success",
        "reason": "issued",
        "latency_ms": 12.5,
        "issuer": "env0",
        "organization": "acme",
        "project": "p1",
        "subject": "subject-0",
        "credential": "prod-vault",
        "credential_type": "vault_oidc",
        "token_fingerprint": "sha256:" + "ab" * 32,
        "client_address": "127.0.0.1",
        "kind": "exchange",
        "lease_id": None,
        "actor": None,
        "detail": None,
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("organization=beta", [9, 8, 7]),
        ("organization=acme&project=p2", [6, 5]),
        ("project=p1", [9, 8, 7, 4, 3, 2, 1, 0]),
        ("credential=aws", [9, 8, 7]),
        ("outcome=denied", [6, 5]),
        ("outcome=error&organization=acme", []),
        ("since=2026-11-01T12:07:00Z", [9, 8, 7]),
        ("until=2026-11-01T12:02:00Z", [1, 0]),
        ("since=2026-11-01T12:03:00Z&until=2026-11-01T12:06:00Z", [5, 4, 3]),
        ("since=2026-11-01T13:03:00%2B01:00&until=2026-11-01T12:04:00Z", [3]),
        ("organization=nobody", []),
    ],
)
async def test_filters_narrow_the_events(trail: Admin, query: str, expected: list[int]) -> None:
    reply = await trail.get(f"/audit?{query}")
    assert reply.status == 200, reply.body
    assert request_ids(reply.json) == [f"req-{n}" for n in expected]


async def test_pages_follow_the_next_cursor_to_the_end(trail: Admin) -> None:
    seen: list[str] = []
    url = "/audit?limit=4"
    pages = 0
    while True:
        reply = await trail.get(url)
        assert reply.status == 200
        seen += request_ids(reply.json)
        pages += 1
        cursor = reply.json["next"]
        if cursor is None:
            break
        url = f"/audit?limit=4&before={cursor}"
    assert pages == 3
    assert seen == [f"req-{n}" for n in range(9, -1, -1)]


async def test_a_full_last_page_has_no_next(trail: Admin) -> None:
    reply = await trail.get("/audit?limit=10")
    assert len(request_ids(reply.json)) == 10
    assert reply.json["next"] is None


async def test_paging_keeps_the_filters(trail: Admin) -> None:
    first = await trail.get("/audit?organization=acme&limit=3")
    assert request_ids(first.json) == ["req-6", "req-5", "req-4"]
    second = await trail.get(f"/audit?organization=acme&limit=3&before={first.json['next']}")
    assert request_ids(second.json) == ["req-3", "req-2", "req-1"]


async def test_an_empty_trail_is_an_empty_page(admin: Admin) -> None:
    reply = await admin.get("/audit")
    assert reply.json == {"events": [], "next": None}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("outcome=maybe", "outcome"),
        ("since=yesterday", "since"),
        ("since=2026-11-01T12:00:00", "since"),
        ("until=2026-13-01T00:00:00Z", "until"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("before=0", "before"),
        ("before=-3", "before"),
        ("before=abc", "before"),
        ("organization=", "organization"),
        ("project=" + "p" * 257, "project"),
        ("org=acme", "org"),
        ("outcome=denied&outcome=error", "outcome"),
    ],
)
async def test_bad_audit_queries_are_422_naming_the_parameter(
    trail: Admin, query: str, field: str
) -> None:
    reply = await trail.get(f"/audit?{query}")
    assert reply.status == 422, reply.body
    assert reply.fields == [field]


async def test_the_audit_trail_needs_the_admin_token(trail: Admin) -> None:
    assert (await trail.get("/audit", token=None)).status == 401
    assert (await trail.get("/audit", token="wrong")).status == 403
