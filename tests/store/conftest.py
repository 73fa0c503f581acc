"""One store suite, run on SQLite and on PostgreSQL.

The PostgreSQL runs use the local server when it answers at 127.0.0.1:5432 (database ``test``),
or the one ``TOKENBROKER_TEST_POSTGRES_URL`` names (tests/support/services.py). Each test gets a
fresh schema, dropped afterwards; a named server that does not answer fails the run.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.services import postgres_url
from tokenbroker.policy.models import Organization
from tokenbroker.store import Store

_RUN = secrets.token_hex(4)
_SCHEMAS = itertools.count()


def _postgres_urls(raw: str, schema: str) -> tuple[str, str]:
    """(URL of the database, URL of the store inside ``schema``) from the env var's URL."""
    url = make_url(raw).set(drivername="postgresql+asyncpg")
    in_schema = url.update_query_dict({"search_path": schema})
    return (
        url.render_as_string(hide_password=False),
        in_schema.render_as_string(hide_password=False),
    )


async def _run_sql(database_url: str, statement: str) -> None:
    engine = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A URL of an empty database: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'data' / 'store.db'}"
        return
    raw = postgres_url()
    schema = f"tb_{_RUN}_{next(_SCHEMAS)}"
    database_url, url = _postgres_urls(raw, schema)
    # No try/except: a set but unreachable server must fail the test, not skip it.
    await _run_sql(database_url, f'CREATE SCHEMA "{schema}"')
    yield url
    await _run_sql(database_url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """A migrated, empty store."""
    opened = await Store.open(store_url)
    await opened.upgrade()
    yield opened
    await opened.close()


@pytest.fixture
async def acme(store: Store) -> Organization:
    """An organization signing in through the env0 issuer."""
    return await store.policy.create_organization("acme", "env0", "org-uuid-1")
