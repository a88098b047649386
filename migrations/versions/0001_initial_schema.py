"""initial schema: tenants, api keys, watch lists, companies, scores

Revision ID: 0001
Revises:
Create Date: 2026-11-24 11:03:46.032378
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "companies",
        sa.Column("country", sa.CHAR(length=2), nullable=False),
        sa.Column("register_number", sa.String(length=16), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("industry_code", sa.Text(), nullable=False),
        sa.Column("legal_form", sa.Text(), nullable=False),
        sa.Column("status", sa.SmallInteger(), nullable=False),
        sa.Column(
            "create_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "update_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("country", "register_number"),
    )
    op.create_table(
        "tenants",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column(
            "create_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "api_keys",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("secret_sha256", sa.LargeBinary(length=32), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column(
            "create_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("revoke_time", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", "id"),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "create_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", "method", "request_id"),
    )
    op.create_table(
        "scores",
        sa.Column("country", sa.CHAR(length=2), nullable=False),
        sa.Column("register_number", sa.String(length=16), nullable=False),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("probability_of_default", sa.Double(), nullable=False),
        sa.Column("risk_class", sa.SmallInteger(), nullable=False),
        sa.Column("model_risk_class", sa.SmallInteger(), nullable=False),
        sa.Column("reasons", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("model_version", sa.Text(), nullable=False),
        sa.Column("data_as_of", sa.DateTime(timezone=True), nullable=True),
        sa.Column("score_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["country", "register_number"],
            ["companies.country", "companies.register_number"],
        ),
        sa.PrimaryKeyConstraint("country", "register_number", "id"),
    )
    op.create_table(
        "watch_lists",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("pd_threshold", sa.Double(), nullable=False),
        sa.Column("alert_rules", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("labels", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("entry_count", sa.BigInteger(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", "id"),
    )
    op.create_table(
        "watch_list_entries",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("watch_list_id", sa.UUID(), nullable=False),
        sa.Column("country", sa.CHAR(length=2), nullable=False),
        sa.Column("register_number", sa.String(length=16), nullable=False),
        sa.Column("exposure_currency", sa.CHAR(length=3), nullable=True),
        sa.Column("exposure_amount", sa.Numeric(precision=29, scale=9), nullable=True),
        sa.Column("credit_limit_currency", sa.CHAR(length=3), nullable=True),
        sa.Column("credit_limit_amount", sa.Numeric(precision=29, scale=9), nullable=True),
        sa.Column("external_reference", sa.Text(), nullable=False),
        sa.Column("labels", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "watch_list_id", "country", "register_number"),
    )
    op.create_index(
        "ix_watch_list_entries_company",
        "watch_list_entries",
        ["country", "register_number"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_watch_list_entries_company", table_name="watch_list_entries")
    op.drop_table("watch_list_entries")
    op.drop_table("watch_lists")
    op.drop_table("scores")
    op.drop_table("idempotency_keys")
    op.drop_table("api_keys")
    op.drop_table("tenants")
    op.drop_table("companies")
