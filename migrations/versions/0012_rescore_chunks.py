"""Re-score chunks: a re-scoring run's work, shared by every replica

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 03:10:00

The replica that leads a re-scoring run (advisory lock) pages through the due
companies and writes them here in chunks; every replica's workers claim
chunks with `SELECT ... FOR UPDATE SKIP LOCKED` and re-score a chunk in the
transaction that holds its row, marking it done in that same transaction. A
replica that dies mid-chunk rolls back, which releases the row for another.
The leader sums the done chunks when the run ends, then deletes them.

A coordination table of a few rows per run: under Citus it stays a local
table on the coordinator (docs/scaling.md).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rescore_chunks",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("model_version", sa.Text(), nullable=False),
        # The companies as two comma-separated lists (store.rescoring.Keys).
        sa.Column("countries", sa.Text(), nullable=False),
        sa.Column("numbers", sa.Text(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        # A company whose score is from `model_version` and newer than this
        # when its chunk is re-scored was re-scored since (by an intake): skipped.
        sa.Column("stale_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "create_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("done_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("done_by", sa.Text(), nullable=True),
        sa.Column("scored", sa.Integer(), nullable=True),
        sa.Column("alerts", sa.Integer(), nullable=True),
        sa.Column("skipped_locked", sa.Integer(), nullable=True),
        # Attempts that failed (an error, not a lost replica): at
        # store.database.CHUNK_FAILURES the chunk is given up.
        sa.Column("failures", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_rescore_chunks_pending",
        "rescore_chunks",
        ["id"],
        postgresql_where=sa.text("done_time IS NULL"),
    )
    op.create_index("ix_rescore_chunks_run", "rescore_chunks", ["run_id"])


def downgrade() -> None:
    op.drop_table("rescore_chunks")
