"""Insured overdue payments and their claims clock

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24 15:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "overdue_payments",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("credit_limit_id", sa.UUID(), nullable=False),
        sa.Column("country", sa.CHAR(length=2), nullable=False),
        sa.Column("register_number", sa.String(length=16), nullable=False),
        sa.Column("invoice_id", sa.Text(), nullable=False),
        sa.Column("invoice_date", sa.Date(), nullable=False),
        sa.Column("due_date", sa.Date(), nullable=False),
        sa.Column("currency", sa.CHAR(length=3), nullable=False),
        sa.Column("amount", sa.Numeric(29, 9), nullable=False),
        sa.Column("settled_date", sa.Date(), nullable=True),
        sa.Column("claim_basis", sa.SmallInteger(), nullable=False),
        sa.Column("claim_eligible_date", sa.Date(), nullable=True),
        sa.Column("state", sa.SmallInteger(), nullable=False),
        sa.Column("alerted", sa.Boolean(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "credit_limit_id"],
            ["credit_limits.tenant_id", "credit_limits.id"],
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id"),
        sa.UniqueConstraint("tenant_id", "credit_limit_id", "invoice_id"),
    )
    # The claims-clock job: payments still waiting, by the day they become eligible.
    op.create_index(
        "ix_overdue_payments_waiting",
        "overdue_payments",
        ["claim_eligible_date"],
        postgresql_where=sa.text("state = 1"),
    )


def downgrade() -> None:
    op.drop_index("ix_overdue_payments_waiting", table_name="overdue_payments")
    op.drop_table("overdue_payments")
