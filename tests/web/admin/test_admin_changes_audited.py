"""Every change through the admin API is audited (kind admin, the token's name, what changed,
never a secret) and logged at INFO."""

from __future__ import annotations

import logging

import pytest

from tokenbroker.config.models import GLOBAL_ADMIN_NAME
from tokenbroker.policy.models import AuditEvent

from .conftest import Admin

SECRET_ROLE = "role-value-never-in-the-audit"


async def admin_events(admin: Admin) -> list[AuditEvent]:
    """The admin events of the store, oldest first."""
    events = await admin.store.audit.events(limit=500)
    return [e for e in reversed(events) if e.kind == "admin"]


async def test_each_change_is_one_admin_event_naming_the_actor_and_the_fields(
    admin: Admin,
) -> None:
    await admin.create_org("acme")
    await admin.create_vault(
        "prod-vault",
        settings={"address": "https://vault.example.com", "role": SECRET_ROLE},
        bound_claims={"environmentId": "prod-*"},
    )
    assert (
        await admin.patch(
            "/organizations/acme/credentials/prod-vault", {"settings": {"namespace": "team-a"}}
        )
    ).status == 200
    assert (await admin.put("/organizations/acme/projects/p1/credentials/prod-vault")).status == 200
    assert (
        await admin.delete("/organizations/acme/projects/p1/credentials/prod-vault")
    ).status == 204
    assert (await admin.delete("/organizations/acme/credentials/prod-vault")).status == 204
    assert (await admin.patch("/organizations/acme", {"platform_org_id": "org-2"})).status == 200
    assert (await admin.delete("/organizations/acme")).status == 204

    events = await admin_events(admin)
    assert [e.reason for e in events] == [
        "organization_created",
        "credential_created",
        "credential_updated",
        "credential_assigned",
        "credential_unassigned",
        "credential_deleted",
        "organization_updated",
        "organization_deleted",
    ]
    assert {e.actor for e in events} == {GLOBAL_ADMIN_NAME}
    assert {e.outcome for e in events} == {"success"}
    assert {e.organization for e in events} == {"acme"}
    created, updated, assigned = events[1], events[2], events[3]
    assert created.detail == {
        "object": "credential",
        "name": "prod-vault",
        "type": "vault_oidc",
        "fields": ["token", "settings.address", "settings.role", "bound_claims.environmentId"],
    }
    assert updated.detail is not None
    assert updated.detail["fields"] == ["settings.namespace"]
    assert assigned.project == "p1"
    assert assigned.credential == "prod-vault"
    for event in events:
        assert SECRET_ROLE not in repr(event)
        assert "team-a" not in repr(event)


async def test_a_refused_change_is_not_audited_as_done(admin: Admin) -> None:
    reply = await admin.post(
        "/organizations", {"name": "acme", "issuer": "nope", "platform_org_id": "x"}
    )
    assert reply.status == 422
    assert await admin_events(admin) == []


async def test_a_change_is_logged_at_info_with_the_actor_and_without_values(
    admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    await admin.create_org("acme")
    with caplog.at_level(logging.INFO, logger="tokenbroker.web.admin.actions"):
        await admin.create_vault(
            settings={"address": "https://vault.example.com", "role": SECRET_ROLE}
        )
    records = [r for r in caplog.records if r.name == "tokenbroker.web.admin.actions"]
    assert len(records) == 1
    record = records[0]
    assert record.levelno == logging.INFO
    assert record.getMessage() == f"admin credential_created by {GLOBAL_ADMIN_NAME}"
    assert record.actor == GLOBAL_ADMIN_NAME  # type: ignore[attr-defined]
    assert record.organization == "acme"  # type: ignore[attr-defined]
    assert SECRET_ROLE not in repr(record.__dict__)


async def test_admin_events_are_listed_by_the_audit_api_with_their_detail(admin: Admin) -> None:
    await admin.create_org("acme")
    reply = await admin.get("/audit")
    [event] = reply.json["events"]  # type: ignore[misc]
    assert event["kind"] == "admin"
    assert event["actor"] == GLOBAL_ADMIN_NAME
    assert event["reason"] == "organization_created"
    assert event["detail"] == {
        "object": "organization",
        "name": "acme",
        "fields": ["issuer", "platform_org_id"],
    }
