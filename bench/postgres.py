"""PostgreSQL schemas of their own: a store URL that keeps the tables in one fresh schema.

The benchmark's brokers with several workers need a PostgreSQL store (SQLite serves one worker);
the tests use the same helpers for their fresh schemas (tests/support/postgres.py).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine


def postgres_urls(raw: str, schema: str) -> tuple[str, str]:
    """(URL of the database, URL of the store inside ``schema``) from a PostgreSQL URL."""
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


async def _server_pid(database_url: str) -> int | None:
    engine = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            backend = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            try:
                # Read while the backend lives: it ends with its connection.
                proc = Path(f"/proc/{backend}")
                if (proc / "comm").read_text().strip() != "postgres":
                    return None  # another machine's backend: this id is some other process
                stat = (proc / "stat").read_text()
            except OSError:  # another machine's process id
                return None
    finally:
        await engine.dispose()
    return int(stat.rsplit(")", 1)[1].split()[1])


def local_server_pid(raw: str) -> int | None:
    """The PostgreSQL server process (the postmaster, parent of every backend) at ``raw``
    when it runs on this machine, so that its CPU can be measured; None when it does not."""
    return asyncio.run(_server_pid(postgres_urls(raw, "public")[0]))


@contextmanager
def schema_of_its_own(raw: str, prefix: str = "bench") -> Iterator[str]:
    """The store URL of a new, empty schema in the database at ``raw``; dropped on exit."""
    schema = f"{prefix}_{secrets.token_hex(4)}"
    database_url, url = postgres_urls(raw, schema)
    asyncio.run(run_sql(database_url, f'CREATE SCHEMA "{schema}"'))
    try:
        yield url
    finally:
        asyncio.run(run_sql(database_url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
