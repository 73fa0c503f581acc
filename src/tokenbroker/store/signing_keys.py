"""The signing-keys aggregate: the issuer's keys as stored rows, private JWKs sealed.

Sealing and unsealing are keystore.py's; this module only reads and replaces the rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenbroker.store.engine import Connections
from tokenbroker.store.tables import signing_keys

_SIGNING_KEYS_LOCK_ID = 0x746B6B657973  # "tkkeys"


@dataclass(frozen=True, slots=True)
class SigningKeyRow:
    """A stored signing key: public data in the clear, the private JWK sealed."""

    kid: str
    alg: str
    state: str
    created_at: datetime
    retired_at: datetime | None
    public_jwk: Mapping[str, object]
    private_jwk_sealed: str = field(repr=False)


class SigningKeys:
    """The ``signing_keys`` table; change it inside one ``Store.transaction()``: lock, read,
    replace."""

    def __init__(self, connections: Connections) -> None:
        self._connections = connections

    async def rows(self) -> list[SigningKeyRow]:
        """Every stored signing key, oldest first."""
        async with self._connections.reading() as conn:
            rows = await conn.execute(
                select(signing_keys).order_by(signing_keys.c.created_at, signing_keys.c.kid)
            )
            return [
                SigningKeyRow(
                    kid=row.kid,
                    alg=row.alg,
                    state=row.state,
                    created_at=row.created_at,
                    retired_at=row.retired_at,
                    public_jwk=dict(row.public_jwk),
                    private_jwk_sealed=row.private_jwk_sealed,
                )
                for row in rows
            ]

    async def lock(self) -> None:
        """Keep other writers of the signing keys out until this transaction ends.

        Take it before reading keys you mean to change. PostgreSQL: a transaction-scoped
        advisory lock. SQLite: the write transaction (BEGIN IMMEDIATE) already holds the
        database's single write lock, so there is nothing more to take.
        """
        async with self._connections.writing() as conn:
            await _lock(conn)

    async def replace(self, rows: Iterable[SigningKeyRow]) -> None:
        """Make the stored set exactly ``rows`` (taking :meth:`lock` if not held)."""
        values = [
            {
                "kid": row.kid,
                "alg": row.alg,
                "state": row.state,
                "created_at": row.created_at,
                "retired_at": row.retired_at,
                "public_jwk": dict(row.public_jwk),
                "private_jwk_sealed": row.private_jwk_sealed,
            }
            for row in rows
        ]
        async with self._connections.writing() as conn:
            # Instances saving at once take turns; otherwise both could delete, then collide.
            # Taking the advisory lock again in one transaction is allowed and costs nothing.
            await _lock(conn)
            await conn.execute(delete(signing_keys))
            if values:
                await conn.execute(insert(signing_keys), values)


async def _lock(conn: AsyncConnection) -> None:
    if conn.dialect.name == "postgresql":
        await conn.execute(select(func.pg_advisory_xact_lock(_SIGNING_KEYS_LOCK_ID)))
