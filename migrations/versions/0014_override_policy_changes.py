"""Override policy changes: which policy the replicas score with, since when

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 10:30:00

A replica that starts with an override policy (CREDITWATCH_OVERRIDE_POLICY_FILE,
or the built-in one) other than the newest row's adds a row. The scheduled
re-score treats every score made before the newest row's `apply_time` as
stale, so a changed policy reaches the watched companies' stored scores as a
new model version does. The first row ever is dated at the epoch: the policy
in force before any was recorded is taken to be the one found.

A few rows in all: under Citus a reference table (docs/scaling.md).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "override_policy_changes",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("version", sa.Text(), nullable=False),
        sa.Column("policy", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "apply_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("override_policy_changes")
