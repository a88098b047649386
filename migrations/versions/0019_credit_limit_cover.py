"""Credit limits remember the days they covered

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-01 15:00:00

An overdue invoice is insured if the limit was ACTIVE on its invoice date.
That was read off the limit's current row (granted by then, not withdrawn or
lapsed before), so a limit withdrawn (or lapsed) and later granted again
counted invoices dated in the gap as insured. `cover` keeps the periods the
limit was in force: a JSON array of [first day, last day] pairs (ISO dates,
UTC days), oldest first; a grant while in force extends the last period, a
grant after a gap starts a new one, a withdrawal ends the last one the day
before.

Existing limits get the one period their row still tells: from the day they
were created to the day before their withdrawal, or to their `valid_until`.
NULL is read the same way (limits inserted by replicas of an earlier release
during a rolling upgrade). Their updates leave `cover` as it was; the reader
reconciles it with the row (store.limits._cover): a withdrawal is read from
the state and `update_time`, a grant extends the last period or starts one.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WITHDRAWN = 2  # LimitState.WITHDRAWN


def upgrade() -> None:
    op.add_column("credit_limits", sa.Column("cover", postgresql.JSONB(), nullable=True))
    op.execute(
        f"""
        UPDATE credit_limits SET cover = CASE WHEN last_day < first_day THEN '[]'::jsonb
            ELSE jsonb_build_array(jsonb_build_array(first_day::text, last_day::text)) END
        FROM (
            SELECT tenant_id AS t, id AS i,
                   (create_time AT TIME ZONE 'UTC')::date AS first_day,
                   CASE WHEN state = {WITHDRAWN}
                        THEN (update_time AT TIME ZONE 'UTC')::date - 1
                        ELSE (valid_until AT TIME ZONE 'UTC')::date END AS last_day
            FROM credit_limits
        ) AS days
        WHERE tenant_id = days.t AND id = days.i
        """
    )


def downgrade() -> None:
    op.drop_column("credit_limits", "cover")
