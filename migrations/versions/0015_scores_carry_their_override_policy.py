"""Scores carry the override policy they were made with

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 12:00:00

0014 dated a policy change and took every score made before it as stale; but
during a rolling deploy replicas still on the old policy go on scoring after
that date, and their scores looked fresh for ever. Now every score stores its
policy's tag (`OverridePolicy.tag`, 16 hex digits of its fingerprint) as it
stores its model version, and the scheduled re-score compares tags, not times.

Scores made before this revision get the tag of the built-in policy
`overrides-2026.11.1`, the only one before 0014 (0014 was never released; a
database that ran it with a policy file has its watched companies re-scored
once after this revision, their alerts saying POLICY_CHANGED), and so does a
score that a replica of an earlier release writes during a rolling upgrade
(the column's default, a constant recorded in the catalogue, not written into
every row). This release's writers always name the tag. A
re-score chunk queued by an earlier release gets an empty tag, which only
earlier releases claim; the next run's leader drops it.

`override_policy_changes` keeps one row per fingerprint (the newest of any
repeats), first recorded when a replica starts with a policy never seen before;
the newest row is the policy the replicas should run.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# OverridePolicy().tag of overrides-2026.11.1, the built-in policy (tested).
BUILT_IN_TAG = "0e9b52c933dff796"


def upgrade() -> None:
    op.add_column(
        "scores",
        sa.Column("override_policy", sa.Text(), nullable=False, server_default=BUILT_IN_TAG),
    )
    op.add_column(
        "rescore_chunks",
        sa.Column("override_policy", sa.Text(), nullable=False, server_default=""),
    )
    op.execute(
        """
        DELETE FROM override_policy_changes a
        USING override_policy_changes b
        WHERE a.fingerprint = b.fingerprint AND a.id < b.id
        """
    )
    op.create_index(
        "ix_override_policy_changes_fingerprint",
        "override_policy_changes",
        ["fingerprint"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("ix_override_policy_changes_fingerprint", "override_policy_changes")
    op.drop_column("rescore_chunks", "override_policy")
    op.drop_column("scores", "override_policy")
