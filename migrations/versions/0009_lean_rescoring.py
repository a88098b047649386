"""Statements' line items as a float8 array; scores without a foreign key; json, not jsonb

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 16:00:00

A re-score of a million companies reads every latest statement and appends a
score per company; three costs dominated its PostgreSQL side:

* `financial_statements.line_items` is a stored generated column: the
  `items` jsonb as a float8 array in the scorer's line-item order (NaN = not
  reported, so that every element has the same size in the binary array a
  re-score reads), computed once when a statement is written instead of 30 jsonb
  look-ups per statement on every re-score. The order is frozen here; a
  change of the scorer's items needs a migration that redefines the column
  (a test compares the two).
* `scores` loses its foreign key to `companies`: the per-row check was half
  the cost of appending a score. Every writer of scores creates the company
  row first in the same transaction (`facts.add_score`; intakes and
  re-scores also lock it: `facts.lock_company`, `rescoring.ensure_and_lock`,
  the re-score's lock), and companies are never deleted, so no score can
  name a missing company (the downgrade, which puts the key back, would fail
  on one).
* `scores.reasons` and the alerts' `previous_score`, `score` and `trigger`
  are `json`, not `jsonb`: the text is only ever stored and read back whole
  (never queried into), and jsonb's parse on write and print on read cost
  more than the rest of the row.
* `alerts` keeps rows of up to 8 KB inline and uncompressed
  (toast_tuple_target): an alert carries two scores with their reasons, about
  3 KB, and compressing each cost more CPU than the disk it saved is worth.
  Alert ids are made by PostgreSQL (gen_random_uuid), not by Python's uuid4.

Upgrading rewrites `financial_statements`, `scores` and `alerts` under an
exclusive lock, in one transaction: on a large database, plan for the
minutes it takes (nothing can read those tables meanwhile). Stop replicas
older than this revision before bulk score writes run: they do not
understand the many-key score-cache notices that come with it (see
`store.score_cache`) and would keep serving cached scores a re-score replaced.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# creditwatch.server.domain.financials.LINE_ITEMS when this revision was written.
LINE_ITEMS = (
    "total_assets",
    "fixed_assets",
    "current_assets",
    "inventory",
    "receivables",
    "cash",
    "short_term_securities",
    "equity",
    "share_capital",
    "retained_earnings",
    "total_liabilities",
    "long_term_liabilities",
    "short_term_liabilities",
    "constant_capital",
    "sales",
    "sales_previous_year",
    "total_sales",
    "cost_of_products_sold",
    "operating_expenses",
    "total_costs",
    "gross_profit",
    "gross_profit_last_3_years",
    "profit_on_sales",
    "operating_profit",
    "ebit",
    "depreciation",
    "financial_expenses",
    "interest",
    "extraordinary_items",
    "net_profit",
)

LINE_ITEMS_SQL = (
    "ARRAY[" + ", ".join(f"coalesce((items ->> '{i}')::float8, 'NaN')" for i in LINE_ITEMS) + "]"
)


def upgrade() -> None:
    op.execute(
        "ALTER TABLE financial_statements ADD COLUMN line_items float8[] "
        f"GENERATED ALWAYS AS ({LINE_ITEMS_SQL}) STORED"
    )
    op.drop_constraint("scores_country_register_number_fkey", "scores", type_="foreignkey")
    op.execute("ALTER TABLE scores ALTER COLUMN reasons TYPE json USING reasons::json")
    op.execute(
        "ALTER TABLE alerts ALTER COLUMN previous_score TYPE json USING previous_score::json, "
        "ALTER COLUMN score TYPE json USING score::json, "
        "ALTER COLUMN trigger TYPE json USING trigger::json"
    )
    op.execute("ALTER TABLE alerts SET (toast_tuple_target = 8160)")
    op.execute("ALTER TABLE alerts ALTER COLUMN id SET DEFAULT gen_random_uuid()")


def downgrade() -> None:
    op.execute("ALTER TABLE alerts ALTER COLUMN id DROP DEFAULT")
    op.execute("ALTER TABLE alerts RESET (toast_tuple_target)")
    op.execute(
        "ALTER TABLE alerts ALTER COLUMN previous_score TYPE jsonb USING previous_score::jsonb, "
        "ALTER COLUMN score TYPE jsonb USING score::jsonb, "
        "ALTER COLUMN trigger TYPE jsonb USING trigger::jsonb"
    )
    op.execute("ALTER TABLE scores ALTER COLUMN reasons TYPE jsonb USING reasons::jsonb")
    op.create_foreign_key(
        "scores_country_register_number_fkey",
        "scores",
        "companies",
        ["country", "register_number"],
        ["country", "register_number"],
    )
    op.drop_column("financial_statements", "line_items")
