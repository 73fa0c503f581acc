"""PostgreSQL for tests: a fresh schema of the test database (tests/support/services.py).

Each test gets its own schema, dropped afterwards; a named but unreachable server fails the
test, never skips it.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.services import postgres_url

_RUN = secrets.token_hex(4)
_SCHEMAS = itertools.count()


def postgres_urls(raw: str, schema: str) -> tuple[str, str]:
    """(URL of the database, URL of the store inside ``schema``) from the env var's URL."""
    url = make_url(raw).set(drivername="postgresql+asyncpg")
    in_schema = url.update_query_dict({"search_path": schema})
    return (
        url.render_as_string(hide_password=False),
        in_schema.render_as_string(hide_password=False),
    )


async def run_sql(database_url: str, statement: str) -> None:
    """Run one statement in autocommit."""
    engine = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@asynccontextmanager
async def fresh_postgres_schema() -> AsyncIterator[str]:
    """A store URL of a fresh, empty PostgreSQL schema, dropped on exit."""
    schema = f"tb_{_RUN}_{next(_SCHEMAS)}"
    database_url, url = postgres_urls(postgres_url(), schema)
    # No try/except: a set but unreachable server must fail the test, not skip it.
    await run_sql(database_url, f'CREATE SCHEMA "{schema}"')
    try:
        yield url
    finally:
        await run_sql(database_url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
async def postgres_store_url() -> AsyncIterator[str]:
    """A store URL of a fresh, empty PostgreSQL schema (see ``fresh_postgres_schema``)."""
    async with fresh_postgres_schema() as url:
        yield url
