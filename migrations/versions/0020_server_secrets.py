"""A secret the replicas share, for sealing alert cursors

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-01 17:00:00

Alert cursors carried their position in plain: the cluster's transaction id
and the outbox's sequence, so a tenant could read the whole cluster's write
rate off its heartbeats and count other tenants' alerts in the gaps between
its own. Cursors are now sealed for their tenant with keys derived from a
deployment secret (domain.cursors). The first replica to start makes the
secret and stores it here (store.secrets); the migration only makes the table,
so no secret is ever part of the code or its history.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "server_secrets",
        sa.Column("name", sa.Text(), primary_key=True),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.Column(
            "create_time",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
    )


def downgrade() -> None:
    op.drop_table("server_secrets")
