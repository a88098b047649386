"""Financial statements as the scoring model needs them, and their validation.

A `FinancialStatement` carries the balance-sheet and income-statement line
items from which the default model's 64 ratios are computed
(`creditwatch.server.scoring.features`). Amounts are in the statement's own
currency units (not thousands); `None` means "not reported", which is not the
same as zero: a missing item makes the ratios that need it undefined, while a
reported zero is a real value.

The item names follow the ratio definitions of the Polish bankruptcy data set
the model is trained on (Polish accounting terms translated to English), so a
few of them mean something more specific than the English word suggests; each
field's docstring says what to put there.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True, kw_only=True)
class FinancialStatement:
    """One fiscal period's financial statement of one company.

    Balance-sheet items are stocks at `period_end`; income-statement items are
    flows over `period_start`..`period_end` (normally twelve months).
    """

    period_start: date
    """First day of the fiscal period the statement covers."""
    period_end: date
    """Last day of the fiscal period (balance-sheet date)."""
    currency: str
    """ISO 4217 code of the currency all amounts are in, e.g. ``"NOK"``."""

    # --- Balance sheet: assets -------------------------------------------
    total_assets: float | None = None
    """Balance-sheet total (equals equity plus total liabilities)."""
    fixed_assets: float | None = None
    """Non-current assets: property, plant, equipment, intangibles and long-term investments."""
    current_assets: float | None = None
    """Assets expected to turn into cash within a year (inventory, receivables, cash, ...)."""
    inventory: float | None = None
    """Inventories: raw materials, work in progress, finished goods and goods for resale."""
    receivables: float | None = None
    """Short-term receivables (trade debtors and other amounts owed within a year)."""
    cash: float | None = None
    """Cash and cash equivalents."""
    short_term_securities: float | None = None
    """Short-term financial assets other than cash (marketable securities, short loans given)."""

    # --- Balance sheet: equity and liabilities ---------------------------
    equity: float | None = None
    """Book value of equity (shareholders' funds); negative when losses exceed capital."""
    share_capital: float | None = None
    """Subscribed (registered) share capital."""
    retained_earnings: float | None = None
    """Accumulated profits or losses of previous years kept in the company; may be negative."""
    total_liabilities: float | None = None
    """All liabilities and provisions (balance-sheet total minus equity)."""
    long_term_liabilities: float | None = None
    """Liabilities due after more than one year."""
    short_term_liabilities: float | None = None
    """Current liabilities: liabilities due within one year."""
    constant_capital: float | None = None
    """Long-term capital: equity plus long-term liabilities. When not reported, the
    features derive it from those two items (the identity holds for every row of the
    training data)."""

    # --- Income statement ------------------------------------------------
    sales: float | None = None
    """Net sales revenue of the period (products, goods and materials)."""
    sales_previous_year: float | None = None
    """Net sales revenue of the preceding fiscal year, for sales growth."""
    total_sales: float | None = None
    """Total revenues: net sales plus other operating income and financial income."""
    cost_of_products_sold: float | None = None
    """Cost of products, goods and materials sold."""
    operating_expenses: float | None = None
    """Operating expenses (costs of ordinary operating activity)."""
    total_costs: float | None = None
    """All costs of the period (operating, other operating and financial costs)."""
    gross_profit: float | None = None
    """Profit before income tax ("zysk brutto" in Polish accounts); negative for a loss.
    Not sales minus cost of sales: that is `profit_on_sales`."""
    gross_profit_last_3_years: float | None = None
    """Sum of `gross_profit` over the last three fiscal years, this one included."""
    profit_on_sales: float | None = None
    """Net sales minus cost of sales and selling and administrative costs; may be negative."""
    operating_profit: float | None = None
    """Profit on operating activities: profit on sales plus other operating income minus
    other operating costs; may be negative."""
    ebit: float | None = None
    """Earnings before interest and taxes; may be negative."""
    depreciation: float | None = None
    """Depreciation and amortisation charged in the period."""
    financial_expenses: float | None = None
    """Financial costs: interest, losses on investments and other finance costs."""
    interest: float | None = None
    """Interest expense of the period."""
    extraordinary_items: float | None = None
    """Extraordinary gains minus extraordinary losses; may be negative."""
    net_profit: float | None = None
    """Profit after tax (net income); negative for a loss."""


LINE_ITEMS: tuple[str, ...] = (
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
"""Names of all line-item fields of `FinancialStatement`, in declaration order."""

REQUIRED_ITEMS: tuple[str, ...] = (
    "total_assets",
    "total_liabilities",
    "sales",
    "net_profit",
)
"""Items every statement must report. They are the least any published statement
shows and they anchor the size, leverage, turnover and profitability ratios; every
other item may be missing (the model treats the ratios it feeds as missing)."""

NON_NEGATIVE_ITEMS: frozenset[str] = frozenset(
    {
        "total_assets",
        "fixed_assets",
        "current_assets",
        "inventory",
        "receivables",
        "cash",
        "short_term_securities",
        "share_capital",
        "total_liabilities",
        "long_term_liabilities",
        "short_term_liabilities",
        "sales",
        "sales_previous_year",
        "total_sales",
        "cost_of_products_sold",
        "operating_expenses",
        "total_costs",
        "depreciation",
        "financial_expenses",
        "interest",
    }
)
"""Items that cannot be negative. Profits, equity, retained earnings, constant
capital and extraordinary items can, so they are not listed."""

CURRENCY_CODE = re.compile(r"[A-Z]{3}")
"""What a currency code must look like (ISO 4217: three capital letters)."""


def validate_statement(stmt: FinancialStatement) -> list[tuple[str, str]]:
    """Return the statement's violations as ``(field_name, description)`` pairs.

    An empty list means the statement can be stored and scored. Every problem is
    reported, not only the first, so a caller can fix them all in one round trip.
    """
    violations: list[tuple[str, str]] = []
    if stmt.period_end < stmt.period_start:
        violations.append(
            (
                "period_end",
                f"period_end {stmt.period_end.isoformat()} is before "
                f"period_start {stmt.period_start.isoformat()}",
            )
        )
    if not CURRENCY_CODE.fullmatch(stmt.currency):
        violations.append(
            ("currency", f"currency must be an ISO 4217 code such as 'EUR', got {stmt.currency!r}")
        )
    for name in LINE_ITEMS:
        value: float | None = getattr(stmt, name)
        if value is None:
            if name in REQUIRED_ITEMS:
                violations.append((name, f"{name} is required"))
            continue
        if not math.isfinite(value):
            violations.append((name, f"{name} must be a finite number, got {value!r}"))
        elif name == "total_assets" and value <= 0:
            # Every ratio is scaled by total assets; a company without assets
            # has no meaningful statement to score.
            violations.append((name, f"total_assets must be greater than 0, got {value!r}"))
        elif name in NON_NEGATIVE_ITEMS and value < 0:
            violations.append((name, f"{name} cannot be negative, got {value!r}"))
    return violations
