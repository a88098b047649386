"""Idempotency keys remember which request they were used for

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01 14:00:00

A repeated `request_id` replayed the first call's result whatever the repeat
asked for, so a client that reused an id by mistake (a second order under the
first one's number, say) got the first answer and no error. `fingerprint` is
the sha256 of what the first call asked (its request without `request_id`):
a repeat that asks the same replays as before; one that asks something else
is refused with INVALID_ARGUMENT on `request_id`.

NULL for keys stored before this revision, and for keys that replicas of an
earlier release store during a rolling upgrade: those replay whatever the
repeat asks, as they did. (An earlier release that takes over a key past its
24 hours keeps the old fingerprint, so a retry of that call reaching this
release is refused; only during the upgrade, and only for a reused id.)
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("idempotency_keys", sa.Column("fingerprint", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("idempotency_keys", "fingerprint")
