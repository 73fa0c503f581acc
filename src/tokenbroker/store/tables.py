"""The schema as SQLAlchemy Core tables: what the queries are written against.

Migrations in ``migrations/versions`` create the same schema; a test compares the two.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

# Named constraints, so migrations can refer to them on every database.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite has no 64-bit autoincrement type other than INTEGER PRIMARY KEY.
Id = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that goes in and comes out as an aware UTC ``datetime`` on every database."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse naive datetimes; SQLite keeps no zone, so it gets naive UTC."""
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Attach UTC where the database returned a naive value."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


organizations = Table(
    "organizations",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False),
    Column("issuer", String(128), nullable=False),
    Column("platform_org_id", String(256), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    UniqueConstraint("name"),
    # Every exchange finds its organization by (issuer, platform org id).
    UniqueConstraint("issuer", "platform_org_id"),
)

credentials = Table(
    "credentials",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column(
        "organization_id",
        Id,
        ForeignKey("organizations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("name", String(128), nullable=False),
    Column("type", String(128), nullable=False),
    Column("token", String(16), nullable=False),
    Column("audience", String(1024), nullable=True),
    Column("settings", JSON(), nullable=False),
    Column("bound_claims", JSON(), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    UniqueConstraint("organization_id", "name"),
)

assignments = Table(
    "assignments",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column(
        "organization_id",
        Id,
        ForeignKey("organizations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("project", String(256), nullable=False),
    Column(
        "credential_id",
        Id,
        ForeignKey("credentials.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("created_at", UtcDateTime(), nullable=False),
    # Its leading (organization_id, project) columns serve every exchange's lookup of what a
    # project is assigned.
    UniqueConstraint("organization_id", "project", "credential_id"),
    # Deleting a credential finds its assignments without a scan.
    Index(None, "credential_id"),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("time", UtcDateTime(), nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("reason", String(128), nullable=False),
    Column("latency_ms", Float(), nullable=False),
    Column("issuer", String(512), nullable=True),
    # Names, not foreign keys: the trail outlives what it mentions.
    Column("organization", String(128), nullable=True),
    Column("project", String(256), nullable=True),
    Column("subject", String(1024), nullable=True),
    Column("credential", String(128), nullable=True),
    Column("credential_type", String(128), nullable=True),
    Column("token_fingerprint", String(128), nullable=True),
    Column("client_address", String(128), nullable=True),
    # exchange | revocation | admin | flood: what kind of decision the event records.
    Column("kind", String(16), nullable=False, server_default="exchange"),
    Column("lease_id", String(64), nullable=True),
    # Who decided an admin change: the admin token's name, never the token.
    Column("actor", String(128), nullable=True),
    # What an admin change changed (names and fields, never secrets), or a flood's counts.
    Column("detail", JSON(), nullable=True),
    Index(None, "time"),
    Index(None, "organization", "id"),
    Index(None, "project", "id"),
    Index(None, "credential", "id"),
)

# One row (id 1): incremented by every write transaction, polled by other instances' policy
# caches (policy_cache.py) to notice changes without reading the policy itself.
policy_revision = Table(
    "policy_revision",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=False),
    Column("revision", BigInteger(), nullable=False),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(128), primary_key=True),
    Column("alg", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("retired_at", UtcDateTime(), nullable=True),
    Column("public_jwk", JSON(), nullable=False),
    # The private JWK sealed with store.encryption_key (issuer/sealing.py), never plaintext.
    Column("private_jwk_sealed", Text(), nullable=False),
)

# One row per credential the broker issued (or is issuing: ``pending``). What is needed to revoke
# or deliver it again is sealed (issuer/sealing.py, bound to the lease id) and dropped at expiry
# or revocation. ``reuse_slot`` holds the request key (token fingerprint, credential, version)
# while the reuse window is open: unique, so one broker of a fleet claims the backend call.
leases = Table(
    "leases",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("organization", String(128), nullable=False),
    Column("project", String(256), nullable=True),
    Column("credential", String(128), nullable=False),
    Column("credential_id", Id, nullable=False),
    Column("credential_version", String(32), nullable=False),
    Column("credential_type", String(128), nullable=False),
    Column("issuer", String(128), nullable=False),
    Column("subject", String(1024), nullable=False),
    Column("job", String(256), nullable=False),
    Column("state", String(16), nullable=False),
    Column("issued_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=True),
    Column("reuse_until", UtcDateTime(), nullable=True),
    Column("reuse_slot", String(256), nullable=True),
    Column("revoked_at", UtcDateTime(), nullable=True),
    Column("revoked_by", String(128), nullable=True),
    Column("revoke_reason", String(256), nullable=True),
    Column("request_id", String(128), nullable=False),
    Column("token_fingerprint", String(128), nullable=False),
    Column("sealed", Text(), nullable=True),
    # The sweeper drops the sealed material then: the credential's expiry where it can be
    # revoked (the handle is needed until then), the end of the reuse window otherwise.
    Column("sealed_until", UtcDateTime(), nullable=True),
    UniqueConstraint("reuse_slot"),
    Index(None, "job"),
    Index(None, "state", "expires_at"),
    Index(None, "sealed_until"),
    Index(None, "organization", "issued_at"),
)

# Platform tokens of ``replay = "once"`` issuers, by issuer and jti (else fingerprint): the
# first request's reuse slot, kept until the token expires. Unique, so a fleet agrees on it.
token_uses = Table(
    "token_uses",
    metadata,
    Column("token_key", String(512), primary_key=True),
    Column("reuse_slot", String(256), nullable=False),
    Column("until", UtcDateTime(), nullable=False),
    Index(None, "until"),
)
