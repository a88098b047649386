"""Credit policies (versioned, per tenant) and standing credit limits

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 15:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_AMOUNT = sa.Numeric(29, 9)


def upgrade() -> None:
    op.create_table(
        "credit_policies",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("policy", postgresql.JSONB(), nullable=False),
        sa.Column(
            "update_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", "version"),
    )
    op.create_table(
        "credit_limits",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("country", sa.CHAR(length=2), nullable=False),
        sa.Column("register_number", sa.String(length=16), nullable=False),
        sa.Column("external_reference", sa.Text(), nullable=False),
        sa.Column("state", sa.SmallInteger(), nullable=False),
        sa.Column("currency", sa.CHAR(length=3), nullable=False),
        sa.Column("amount", _AMOUNT, nullable=False),
        sa.Column("max_payment_terms_days", sa.Integer(), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("exposure_currency", sa.CHAR(length=3), nullable=True),
        sa.Column("exposure_amount", _AMOUNT, nullable=True),
        sa.Column("latest_decision", postgresql.JSONB(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", "id"),
        sa.UniqueConstraint("tenant_id", "country", "register_number"),
    )
    # "Which standing limits does this company have?" — asked when its risk worsens.
    op.create_index("ix_credit_limits_company", "credit_limits", ["country", "register_number"])


def downgrade() -> None:
    op.drop_index("ix_credit_limits_company", table_name="credit_limits")
    op.drop_table("credit_limits")
    op.drop_table("credit_policies")
