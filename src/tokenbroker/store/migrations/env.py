"""Alembic environment: migrations run on the connection the store hands over.

``Store.upgrade()`` (and ``tokenbroker db upgrade``) put an open connection in
``config.attributes["connection"]``. Run by the ``alembic`` command instead (to write a new
revision), the URL comes from ``-x url=...`` or ``TOKENBROKER_STORE__URL``.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import Connection

from tokenbroker.store.engine import create_engine
from tokenbroker.store.tables import metadata


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite alters tables by copying them; batch mode does that for later migrations.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _migrate_from_url(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_migrate)
    finally:
        await engine.dispose()


def _run() -> None:
    if context.is_offline_mode():
        raise SystemExit(
            "offline (--sql) migrations are not supported; run `tokenbroker db upgrade`"
        )
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get(
        "TOKENBROKER_STORE__URL"
    )
    if not url:
        raise SystemExit("give the database as `alembic -x url=...` or TOKENBROKER_STORE__URL")
    asyncio.run(_migrate_from_url(url))


_run()
