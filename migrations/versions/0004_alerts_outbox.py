"""Alert outbox, durable consumers, payment experiences, job leases, company address

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 14:30:00

Alert positions are (xid, seq): `xid` is the writing transaction's id
(`pg_current_xact_id()`), `seq` an identity. Readers only read rows whose
transaction is settled (xid below the snapshot's xmin), in (xid, seq) order,
so a row that commits late can never appear behind a position a reader has
already passed (see `creditwatch.server.store.alerts`).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_AMOUNT = sa.Numeric(29, 9)


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("xid", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("watch_list_id", sa.UUID(), nullable=False),
        sa.Column("country", sa.CHAR(length=2), nullable=False),
        sa.Column("register_number", sa.String(length=16), nullable=False),
        sa.Column("type", sa.SmallInteger(), nullable=False),
        sa.Column("severity", sa.SmallInteger(), nullable=False),
        sa.Column("priority", sa.Double(), nullable=False),
        sa.Column("company_legal_name", sa.Text(), nullable=False),
        sa.Column("external_reference", sa.Text(), nullable=False),
        sa.Column("exposure_currency", sa.CHAR(length=3), nullable=True),
        sa.Column("exposure_amount", _AMOUNT, nullable=True),
        sa.Column("previous_score", postgresql.JSONB(), nullable=True),
        sa.Column("score", postgresql.JSONB(), nullable=True),
        sa.Column("trigger", postgresql.JSONB(), nullable=False),
        sa.Column("suggested_action", sa.SmallInteger(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("occurred_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "create_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", "xid", "seq"),
        sa.UniqueConstraint("tenant_id", "id"),
    )
    # Every replica's tail reads all tenants in position order.
    op.create_index("ix_alerts_position", "alerts", ["xid", "seq"])
    op.create_index(
        "ix_alerts_tenant_create_time", "alerts", ["tenant_id", sa.text("create_time DESC")]
    )
    op.create_index(
        "ix_alerts_tenant_priority",
        "alerts",
        [
            "tenant_id",
            sa.text("priority DESC"),
            sa.text("severity DESC"),
            sa.text("create_time DESC"),
        ],
    )
    op.create_table(
        "alert_consumers",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("xid", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column(
            "update_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", "name"),
    )
    # One row: the newest position retention has deleted; older cursors are expired.
    op.create_table(
        "alert_retention",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("purged_xid", sa.BigInteger(), nullable=False),
        sa.Column("purged_seq", sa.BigInteger(), nullable=False),
        sa.Column(
            "update_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("id = 1"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute("INSERT INTO alert_retention (id, purged_xid, purged_seq) VALUES (1, 0, 0)")
    op.create_table(
        "payment_experiences",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("invoice_id", sa.Text(), nullable=False),
        sa.Column("country", sa.CHAR(length=2), nullable=False),
        sa.Column("register_number", sa.String(length=16), nullable=False),
        sa.Column("due_date", sa.Date(), nullable=False),
        sa.Column("days_past_due", sa.Integer(), nullable=False),
        sa.Column("currency", sa.CHAR(length=3), nullable=False),
        sa.Column("amount", _AMOUNT, nullable=False),
        sa.Column("settled_date", sa.Date(), nullable=True),
        sa.Column(
            "report_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", "invoice_id"),
    )
    op.create_index(
        "ix_payment_experiences_company", "payment_experiences", ["country", "register_number"]
    )
    op.add_column(
        "companies",
        sa.Column(
            "address", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
    )
    op.add_column("companies", sa.Column("registration_date", sa.Date(), nullable=True))


def downgrade() -> None:
    op.drop_column("companies", "registration_date")
    op.drop_column("companies", "address")
    op.drop_index("ix_payment_experiences_company", table_name="payment_experiences")
    op.drop_table("payment_experiences")
    op.drop_table("alert_retention")
    op.drop_table("alert_consumers")
    op.drop_table("alerts")
