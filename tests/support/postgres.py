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
from bench.postgres import postgres_urls, run_sql

from tests.support.services import postgres_url

_RUN = secrets.token_hex(4)
_SCHEMAS = itertools.count()


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
