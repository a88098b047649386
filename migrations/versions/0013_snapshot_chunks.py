"""Snapshot chunks: a day's portfolio snapshots, shared by every replica

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 04:10:00

The replica that leads the day's snapshots (advisory lock) groups the watch
lists without a snapshot of the day into chunks of about the same number of
entries, each of one tenant's lists, and writes them here; every replica's workers claim chunks with
`SELECT ... FOR UPDATE SKIP LOCKED` and snapshot a chunk's lists in the
transaction that holds its row, marking it done in that same transaction. A
replica that dies mid-chunk rolls back, which releases the row for another.
The leader sums the day's done chunks when all are done, then deletes them.

A coordination table of a few rows per day: under Citus it stays a local
table on the coordinator (docs/scaling.md).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "snapshot_chunks",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("snapshot_date", sa.Date(), nullable=False),
        # The chunk's watch lists, all of one tenant (one shard under Citus).
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("watch_list_ids", postgresql.ARRAY(sa.UUID()), nullable=False),
        # Their entries when the chunk was planned.
        sa.Column("entries", sa.BigInteger(), nullable=False),
        sa.Column(
            "create_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("done_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("done_by", sa.Text(), nullable=True),
        sa.Column("written", sa.BigInteger(), nullable=True),
        # Attempts that failed (an error, not a lost replica): at
        # store.database.CHUNK_FAILURES the chunk is given up.
        sa.Column("failures", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_snapshot_chunks_pending",
        "snapshot_chunks",
        ["id"],
        postgresql_where=sa.text("done_time IS NULL"),
    )
    op.create_index("ix_snapshot_chunks_day", "snapshot_chunks", ["snapshot_date"])


def downgrade() -> None:
    op.drop_table("snapshot_chunks")
