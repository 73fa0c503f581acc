"""Leases: a record of every issued credential; replay-once token uses; audit events name
their kind and lease.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tokenbroker.store.tables import Id, UtcDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the audit columns and create the leases table."""
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(16), nullable=False, server_default="exchange")
        )
        batch.add_column(sa.Column("lease_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("actor", sa.String(128), nullable=True))
        batch.add_column(sa.Column("detail", sa.JSON(), nullable=True))
    op.create_table(
        "leases",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("organization", sa.String(128), nullable=False),
        sa.Column("project", sa.String(256), nullable=True),
        sa.Column("credential", sa.String(128), nullable=False),
        sa.Column("credential_id", Id, nullable=False),
        sa.Column("credential_version", sa.String(32), nullable=False),
        sa.Column("credential_type", sa.String(128), nullable=False),
        sa.Column("issuer", sa.String(128), nullable=False),
        sa.Column("subject", sa.String(1024), nullable=False),
        sa.Column("job", sa.String(256), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("issued_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=True),
        sa.Column("reuse_until", UtcDateTime(), nullable=True),
        sa.Column("reuse_slot", sa.String(256), nullable=True),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
        sa.Column("revoked_by", sa.String(128), nullable=True),
        sa.Column("revoke_reason", sa.String(256), nullable=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("token_fingerprint", sa.String(128), nullable=False),
        sa.Column("sealed", sa.Text(), nullable=True),
        sa.Column("sealed_until", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_leases"),
        sa.UniqueConstraint("reuse_slot", name="uq_leases_reuse_slot"),
    )
    op.create_index("ix_leases_job", "leases", ["job"])
    op.create_index("ix_leases_state_expires_at", "leases", ["state", "expires_at"])
    op.create_index("ix_leases_sealed_until", "leases", ["sealed_until"])
    op.create_index("ix_leases_organization_issued_at", "leases", ["organization", "issued_at"])
    op.create_table(
        "token_uses",
        sa.Column("token_key", sa.String(512), nullable=False),
        sa.Column("reuse_slot", sa.String(256), nullable=False),
        sa.Column("until", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("token_key", name="pk_token_uses"),
    )
    op.create_index("ix_token_uses_until", "token_uses", ["until"])


def downgrade() -> None:
    """Drop the leases and token-use tables and the audit columns."""
    op.drop_table("token_uses")
    op.drop_table("leases")
    with op.batch_alter_table("audit_events") as batch:
        for name in ("detail", "actor", "lease_id", "kind"):
            batch.drop_column(name)
