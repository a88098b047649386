"""Event ids are unique per sender (and company), as the contract says

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01 13:00:00

`CompanyEvent.event_id` is "unique per calling tenant": two feeds that both
number their events 1, 2, 3 must not collide. The key of `company_events` was
(country, register_number, event_id), so feed B's event 1001 about a company
was refused as "recorded earlier with different content" when feed A had
sent its own 1001 about it. The key now includes `recorded_by`, the sending
tenant; events that creditwatch records itself (register feeds, statuses set
by UpsertCompany), which had none, get the nil UUID, a sender of their own.

Replicas of an earlier release that record such events during a rolling
upgrade write NULL and fail until they are replaced (their register feed
retries on its next run); events sent through RecordEvents always carry
their tenant. Downgrading keeps the first recorded of events that share an
id across senders.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NO_SENDER = "00000000-0000-0000-0000-000000000000"


def upgrade() -> None:
    op.execute(f"UPDATE company_events SET recorded_by = '{NO_SENDER}' WHERE recorded_by IS NULL")
    op.alter_column(
        "company_events",
        "recorded_by",
        nullable=False,
        server_default=sa.text(f"'{NO_SENDER}'::uuid"),
    )
    op.drop_constraint("company_events_pkey", "company_events", type_="primary")
    op.create_primary_key(
        "company_events_pkey",
        "company_events",
        ["country", "register_number", "recorded_by", "event_id"],
    )


def downgrade() -> None:
    op.execute(
        """
        DELETE FROM company_events a USING company_events b
        WHERE a.country = b.country AND a.register_number = b.register_number
          AND a.event_id = b.event_id AND a.recorded_by <> b.recorded_by
          AND (a.record_time, a.recorded_by) > (b.record_time, b.recorded_by)
        """
    )
    op.drop_constraint("company_events_pkey", "company_events", type_="primary")
    op.create_primary_key(
        "company_events_pkey", "company_events", ["country", "register_number", "event_id"]
    )
    op.alter_column("company_events", "recorded_by", nullable=True, server_default=None)
    op.execute(f"UPDATE company_events SET recorded_by = NULL WHERE recorded_by = '{NO_SENDER}'")
