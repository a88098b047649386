"""Watched companies read whole from a register

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-01 18:00:00

A register feed brings changes. A company put on a watch list while already
bankrupt (or in dissolution, or deleted) showed none of it until the
register changed the unit again. The registers job now reads the current
state of each watched company it has not read before, once, and records
that here. Companies watched before this migration are read over the next
runs, a batch per run.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "register_units",
        sa.Column("register", sa.Text(), primary_key=True),
        sa.Column("country", sa.CHAR(2), primary_key=True),
        sa.Column("register_number", sa.String(16), primary_key=True),
        sa.Column(
            "read_time", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )


def downgrade() -> None:
    op.drop_table("register_units")
