"""Daily portfolio snapshots: each watch list entry's exposure and score per day

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 15:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "portfolio_snapshots",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("watch_list_id", sa.UUID(), nullable=False),
        sa.Column("snapshot_date", sa.Date(), nullable=False),
        sa.Column("country", sa.CHAR(length=2), nullable=False),
        sa.Column("register_number", sa.String(length=16), nullable=False),
        sa.Column("exposure_currency", sa.CHAR(length=3), nullable=True),
        sa.Column("exposure_amount", sa.Numeric(29, 9), nullable=True),
        sa.Column("probability_of_default", sa.Double(), nullable=True),
        sa.Column("risk_class", sa.SmallInteger(), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint(
            "tenant_id", "watch_list_id", "snapshot_date", "country", "register_number"
        ),
    )
    # Which days have a snapshot (one marker row per watch list and day).
    op.create_table(
        "portfolio_snapshot_days",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("watch_list_id", sa.UUID(), nullable=False),
        sa.Column("snapshot_date", sa.Date(), nullable=False),
        sa.Column("entry_count", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", "watch_list_id", "snapshot_date"),
    )


def downgrade() -> None:
    op.drop_table("portfolio_snapshot_days")
    op.drop_table("portfolio_snapshots")
