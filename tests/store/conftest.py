"""One store suite, run on SQLite and on PostgreSQL.

The PostgreSQL runs use the local server when it answers at 127.0.0.1:5432 (database ``test``),
or the one ``TOKENBROKER_TEST_POSTGRES_URL`` names (tests/support/services.py). Each test gets a
fresh schema, dropped afterwards; a named server that does not answer fails the run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.postgres import fresh_postgres_schema
from tokenbroker.backends.registry import INSTALLED
from tokenbroker.policy.models import Organization
from tokenbroker.store import Store


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A URL of an empty database: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'data' / 'store.db'}"
        return
    async with fresh_postgres_schema() as url:
        yield url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """A migrated, empty store."""
    opened = await Store.open(store_url, credential_types=INSTALLED)
    await opened.upgrade()
    yield opened
    await opened.close()


@pytest.fixture
async def acme(store: Store) -> Organization:
    """An organization signing in through the env0 issuer."""
    return await store.policy.create_organization("acme", "env0", "org-uuid-1")
