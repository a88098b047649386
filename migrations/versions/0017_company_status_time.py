"""Companies remember when their register status was set

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01 13:30:00

An event reported late (a liquidation of 2019 sent today) must not undo a
status set since: the status an event implies is applied only if the event
is not older than the status it would replace. Statuses set by events had
their event's date to compare with; a status set by UpsertCompany ("handled
like the matching event dated now") had none. `status_time` is when the
current status took effect: the event's time, or the UpsertCompany call's.
NULL for statuses set before this revision (then only stored events count).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("companies", sa.Column("status_time", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("companies", "status_time")
