"""Overdue payments keep the policy version their claims clock runs on

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-01 19:00:00

The claims clock recomputed every waiting payment with the tenant's current
credit policy, so a change of the waiting periods moved claim dates already
given out in earlier responses. A payment now keeps the version current when
its invoice was first reported. Existing payments get the version current
now (what their clock ran on until now); NULL, written by replicas of an
earlier release during a rolling upgrade, is read as the current one.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("overdue_payments", sa.Column("policy_version", sa.Integer(), nullable=True))
    op.execute(
        """
        UPDATE overdue_payments o SET policy_version = p.version
        FROM (SELECT tenant_id, max(version) AS version FROM credit_policies
              GROUP BY tenant_id) p
        WHERE o.tenant_id = p.tenant_id
        """
    )


def downgrade() -> None:
    op.drop_column("overdue_payments", "policy_version")
