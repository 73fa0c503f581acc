"""Input from tokens and admin requests that a database could choke on gets a clean answer."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.store.helpers import VAULT_SETTINGS
from tokenbroker.errors import NotFound, UnprocessableEntity
from tokenbroker.policy.models import AuditEvent, Organization
from tokenbroker.store import Store

NUL = "a\x00b"


async def test_a_nul_in_token_claims_finds_nothing_rather_than_failing(
    store: Store, acme: Organization
) -> None:
    assert await store.policy.find_organization("env0", NUL) is None
    assert await store.policy.find_organization(NUL, "org-uuid-1") is None
    assert await store.policy.assigned_credentials(acme.id, NUL) == []


async def test_a_nul_in_admin_names_is_not_found(store: Store, acme: Organization) -> None:
    await store.policy.create_credential(
        "acme", "prod-vault", "vault_oidc", settings=VAULT_SETTINGS
    )
    with pytest.raises(NotFound):
        await store.policy.get_organization(NUL)
    with pytest.raises(NotFound):
        await store.policy.get_credential("acme", NUL)
    with pytest.raises(NotFound):
        await store.policy.unassign("acme", NUL, "prod-vault")
    assert await store.policy.list_assignments("acme", NUL) == []


async def test_a_nul_in_new_values_is_a_422(store: Store, acme: Organization) -> None:
    with pytest.raises(UnprocessableEntity):
        await store.policy.create_organization("other", "env0", NUL)
    with pytest.raises(UnprocessableEntity):
        await store.policy.create_credential(
            "acme", "v", "vault_oidc", settings={**VAULT_SETTINGS, "role": NUL}
        )


@pytest.mark.parametrize("field", ["organization", "project", "credential"])
async def test_a_nul_in_an_audit_filter_is_a_422(store: Store, field: str) -> None:
    with pytest.raises(UnprocessableEntity):
        await store.audit.events(**{field: NUL})  # type: ignore[arg-type]


async def test_a_before_id_beyond_64_bits_is_a_422(store: Store) -> None:
    with pytest.raises(UnprocessableEntity):
        await store.audit.events(before_id=2**63)


async def test_audit_text_from_a_token_is_made_to_fit_and_never_refused(store: Store) -> None:
    await store.audit.record(
        AuditEvent(
            time=datetime(2026, 1, 1, tzinfo=UTC),
            request_id="r" * 500,
            outcome="denied",
            reason="credential_not_assigned",
            latency_ms=1.0,
            subject="s\x00" * 1000,
            credential="c" * 5000,
        )
    )
    (event,) = await store.audit.events()
    assert event.request_id == "r" * 128
    assert event.credential == "c" * 128
    assert event.subject is not None
    assert "\x00" not in event.subject
    assert len(event.subject) == 1024
