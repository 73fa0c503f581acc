"""The initial schema: organizations, credentials, assignments, audit events, signing keys.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types in tables.py: a migration must not change when tables.py does.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create every table."""
    op.create_table(
        "organizations",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("issuer", sa.String(128), nullable=False),
        sa.Column("platform_org_id", sa.String(256), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_organizations"),
        sa.UniqueConstraint("name", name="uq_organizations_name"),
        sa.UniqueConstraint(
            "issuer", "platform_org_id", name="uq_organizations_issuer_platform_org_id"
        ),
    )
    op.create_table(
        "credentials",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("organization_id", _ID, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("token", sa.String(16), nullable=False),
        sa.Column("audience", sa.String(1024), nullable=True),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("bound_claims", sa.JSON(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_credentials"),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name="fk_credentials_organization_id_organizations",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("organization_id", "name", name="uq_credentials_organization_id_name"),
    )
    op.create_table(
        "assignments",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("organization_id", _ID, nullable=False),
        sa.Column("project", sa.String(256), nullable=False),
        sa.Column("credential_id", _ID, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_assignments"),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name="fk_assignments_organization_id_organizations",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["credential_id"],
            ["credentials.id"],
            name="fk_assignments_credential_id_credentials",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "organization_id",
            "project",
            "credential_id",
            name="uq_assignments_organization_id_project_credential_id",
        ),
    )
    op.create_index("ix_assignments_credential_id", "assignments", ["credential_id"])
    op.create_table(
        "audit_events",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("time", _TIME, nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(128), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("issuer", sa.String(512), nullable=True),
        sa.Column("organization", sa.String(128), nullable=True),
        sa.Column("project", sa.String(256), nullable=True),
        sa.Column("subject", sa.String(1024), nullable=True),
        sa.Column("credential", sa.String(128), nullable=True),
        sa.Column("credential_type", sa.String(128), nullable=True),
        sa.Column("token_fingerprint", sa.String(128), nullable=True),
        sa.Column("client_address", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
    )
    op.create_index("ix_audit_events_time", "audit_events", ["time"])
    op.create_index("ix_audit_events_organization_id", "audit_events", ["organization", "id"])
    op.create_index("ix_audit_events_project_id", "audit_events", ["project", "id"])
    op.create_index("ix_audit_events_credential_id", "audit_events", ["credential", "id"])
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(128), nullable=False),
        sa.Column("alg", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("retired_at", _TIME, nullable=True),
        sa.Column("public_jwk", sa.JSON(), nullable=False),
        sa.Column("private_jwk_sealed", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("kid", name="pk_signing_keys"),
    )


def downgrade() -> None:
    """Drop every table."""
    op.drop_table("signing_keys")
    op.drop_index("ix_audit_events_credential_id", table_name="audit_events")
    op.drop_index("ix_audit_events_project_id", table_name="audit_events")
    op.drop_index("ix_audit_events_organization_id", table_name="audit_events")
    op.drop_index("ix_audit_events_time", table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_index("ix_assignments_credential_id", table_name="assignments")
    op.drop_table("assignments")
    op.drop_table("credentials")
    op.drop_table("organizations")
