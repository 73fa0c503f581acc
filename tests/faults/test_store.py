"""The store unwritable: the audit table vanishes under a SQLite broker, then comes back.

A Vault credential at a real OpenBao shows that nothing is issued while no decision can be
audited: the token a login created is revoked before the 503 goes out.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient

from tests.faults.conftest import (
    Figures,
    start_vault_fault,
    vault_tokens,
)
from tests.support.openbao import OpenBaoDevServer
from tests.support.platform import ServedDevIssuer
from tokenbroker.web import keys

pytestmark = pytest.mark.openbao


async def rename_table(database: Path, table: str, to: str) -> None:
    """Rename a table under the running broker; in a thread, so the broker's own writes (on
    this loop) can finish and let go of the file while the rename waits for it."""

    def rename() -> None:
        with sqlite3.connect(database, timeout=30) as db:
            db.execute(f"ALTER TABLE {table} RENAME TO {to}")

    await asyncio.to_thread(rename)


async def test_an_unwritable_audit_table_is_a_503_that_issues_nothing_and_heals(
    tmp_path: Path,
    dev_issuer: ServedDevIssuer,
    openbao: OpenBaoDevServer,
    aiohttp_client: AiohttpClient,
    figures: Figures,
) -> None:
    broker = (await start_vault_fault(tmp_path, dev_issuer, openbao, aiohttp_client)).broker
    database = tmp_path / "tokenbroker.db"
    before = await vault_tokens(openbao)

    await rename_table(database, "audit_events", "audit_events_away")
    during = await broker.exchange("vault")
    assert (during.status, during.body["error"], during.reason) == (
        503,
        "temporarily_unavailable",
        "audit_unavailable",
    )
    assert during.retry_after is not None
    assert during.retry_after.isdigit()
    assert not during.issued_anything
    # Vault did issue a token for the login; the broker revoked it when the audit failed.
    assert await vault_tokens(openbao) == before
    ready = await broker.client.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["checks"]["audit"].startswith("failing")

    await rename_table(database, "audit_events_away", "audit_events")
    recovery = await broker.recovers("vault")
    events = await broker.app[keys.STORE].audit.events(limit=10)
    assert events[0].outcome == "success"
    figures.record(
        "store unwritable (SQLite audit table renamed away)",
        during,
        recovery,
        "nothing: the Vault token of the login was revoked before the 503",
    )
