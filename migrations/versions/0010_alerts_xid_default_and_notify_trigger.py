"""Alerts: the writing transaction's id by default, NOTIFY by trigger

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 18:00:00

Writing alerts cost two round trips besides the COPY itself: one to ask for
the transaction's id (the first half of an alert's position) and one to
NOTIFY the replicas' hubs. Both now happen inside PostgreSQL:

* `alerts.xid` defaults to `pg_current_xact_id()`, evaluated per row in the
  writing transaction: the value the writer used to fetch and send. Readers'
  settled-position logic (`store.alerts`) is unchanged.
* A statement-level trigger sends `NOTIFY creditwatch_alerts` after every
  statement that inserts alerts (a COPY of any number of rows is one
  statement); PostgreSQL delivers it at commit, once per transaction, as
  before. The hubs never rely on it arriving (they also poll).

Writers of earlier revisions still send both themselves; a second NOTIFY in
one transaction is folded into the first, so they can run beside this one.
Writers of this version leave `xid` out, so the database must be migrated
before they run (the server migrates at start unless told not to).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE alerts ALTER COLUMN xid SET DEFAULT pg_current_xact_id()::text::bigint")
    op.execute(
        """
        CREATE FUNCTION creditwatch_notify_alerts() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            NOTIFY creditwatch_alerts;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER alerts_notify AFTER INSERT ON alerts "
        "FOR EACH STATEMENT EXECUTE FUNCTION creditwatch_notify_alerts()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER alerts_notify ON alerts")
    op.execute("DROP FUNCTION creditwatch_notify_alerts()")
    op.execute("ALTER TABLE alerts ALTER COLUMN xid DROP DEFAULT")
