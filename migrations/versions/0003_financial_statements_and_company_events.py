"""Financial statements and company events (facts the scores are computed from)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 12:40:00

Company facts are keyed by company, carry no tenant data (who submitted them
is recorded for audit only), and are what a re-score reads.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "financial_statements",
        sa.Column("country", sa.CHAR(length=2), nullable=False),
        sa.Column("register_number", sa.String(length=16), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("currency", sa.CHAR(length=3), nullable=False),
        sa.Column("items", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("submitted_by", sa.UUID(), nullable=True),
        sa.Column(
            "submit_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["country", "register_number"],
            ["companies.country", "companies.register_number"],
        ),
        sa.PrimaryKeyConstraint("country", "register_number", "period_end"),
    )
    op.create_table(
        "company_events",
        sa.Column("country", sa.CHAR(length=2), nullable=False),
        sa.Column("register_number", sa.String(length=16), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("type", sa.SmallInteger(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reference", sa.Text(), nullable=False),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("recorded_by", sa.UUID(), nullable=True),
        sa.Column(
            "record_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["country", "register_number"],
            ["companies.country", "companies.register_number"],
        ),
        sa.PrimaryKeyConstraint("country", "register_number", "event_id"),
    )


def downgrade() -> None:
    op.drop_table("company_events")
    op.drop_table("financial_statements")
