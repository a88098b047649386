"""Alerts: no foreign key to tenants; a tenant's alerts go with it by trigger

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 18:30:00

Every alert row's foreign-key check locks its tenant's row (FOR KEY SHARE).
Re-score workers write alerts of the same tenant in concurrent transactions,
so that row's lock becomes a multixact shared by all of them, and each check
has to look through it: a re-score in which 10 % of the companies alert ran
at about 19,000 companies/s with the key and about 27,000 without it (same
machine, same data; bench/bench_alerts.py).

What the key gave stays, in another form:

* Deleting a tenant deletes its alerts: a row trigger on `tenants` does what
  ON DELETE CASCADE did.
* Alerts name only tenants that exist: they are written only for watch lists
  read in the same transaction (`store.alerts.watchers`), and watch lists keep
  their own key to tenants. An alert written while its tenant is being
  deleted can outlive it; nothing reads it (every read is by the caller's
  tenant) and alert retention deletes it.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint("alerts_tenant_id_fkey", "alerts", type_="foreignkey")
    op.execute(
        """
        CREATE FUNCTION creditwatch_delete_tenant_alerts() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM alerts WHERE tenant_id = OLD.id;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER tenants_delete_alerts AFTER DELETE ON tenants "
        "FOR EACH ROW EXECUTE FUNCTION creditwatch_delete_tenant_alerts()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER tenants_delete_alerts ON tenants")
    op.execute("DROP FUNCTION creditwatch_delete_tenant_alerts()")
    op.execute(
        "DELETE FROM alerts a WHERE NOT EXISTS (SELECT 1 FROM tenants t WHERE t.id = a.tenant_id)"
    )
    op.create_foreign_key(
        "alerts_tenant_id_fkey", "alerts", "tenants", ["tenant_id"], ["id"], ondelete="CASCADE"
    )
