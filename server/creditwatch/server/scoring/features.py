"""The default model's 64 input features, computed from a financial statement.

The model is trained on the UCI "Polish companies bankruptcy" data
(`data/polish-bankruptcy/5year.arff`), whose 64 attributes are financial ratios
named by their formula. `FEATURE_FORMULAS` lists those names in the data's
order, which is also the order of the model's input vector.

Each ratio follows its name, with the line items of `FinancialStatement`:
"current liabilities" are short-term liabilities, "inventories" is inventory,
"book value of equity" is equity. Where the published values contradict the
name, the code follows the values, because the model learnt the values; each
such case was checked against the data's own identities (for example
X57 * equity / net profit == 1 in 99 % of rows) and is marked "data:" below:

* X5 multiplies by 360 days, not 365 (every row is 360/365 of the named value);
* X41 divides by (operating profit + depreciation) * (365/12), not * (12/365);
* X52 is short-term liabilities / cost of products sold, without * 365
  (X32, its twin, carries the 365: X32 == 365 * X52);
* X57 is net profit / equity (return on equity), not the liquidity ratio named;
* X29 is the base-10 logarithm of total assets and, with X55 (working capital),
  is the only size-dependent feature: the data's amounts are thousands of PLN
  (median total assets 10^4.2 = 15,000, i.e. PLN 15 million for a
  manufacturing company), so these two are computed in thousands.

A ratio is NaN (the model's "missing") when an item it needs is missing, when
its denominator is zero — as in the data, where such ratios are '?' — or when
the result is not finite. It is never infinite.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from creditwatch.server.domain.financials import FinancialStatement

FEATURE_FORMULAS: tuple[str, ...] = (
    "net profit / total assets",
    "total liabilities / total assets",
    "working capital / total assets",
    "current assets / short-term liabilities",
    "[(cash + short-term securities + receivables - short-term liabilities)"
    " / (operating expenses - depreciation)] * 365",
    "retained earnings / total assets",
    "EBIT / total assets",
    "book value of equity / total liabilities",
    "sales / total assets",
    "equity / total assets",
    "(gross profit + extraordinary items + financial expenses) / total assets",
    "gross profit / short-term liabilities",
    "(gross profit + depreciation) / sales",
    "(gross profit + interest) / total assets",
    "(total liabilities * 365) / (gross profit + depreciation)",
    "(gross profit + depreciation) / total liabilities",
    "total assets / total liabilities",
    "gross profit / total assets",
    "gross profit / sales",
    "(inventory * 365) / sales",
    "sales (n) / sales (n-1)",
    "profit on operating activities / total assets",
    "net profit / sales",
    "gross profit (in 3 years) / total assets",
    "(equity - share capital) / total assets",
    "(net profit + depreciation) / total liabilities",
    "profit on operating activities / financial expenses",
    "working capital / fixed assets",
    "logarithm of total assets",
    "(total liabilities - cash) / sales",
    "(gross profit + interest) / sales",
    "(current liabilities * 365) / cost of products sold",
    "operating expenses / short-term liabilities",
    "operating expenses / total liabilities",
    "profit on sales / total assets",
    "total sales / total assets",
    "(current assets - inventories) / long-term liabilities",
    "constant capital / total assets",
    "profit on sales / sales",
    "(current assets - inventory - receivables) / short-term liabilities",
    "total liabilities / ((profit on operating activities + depreciation) * (12/365))",
    "profit on operating activities / sales",
    "rotation receivables + inventory turnover in days",
    "(receivables * 365) / sales",
    "net profit / inventory",
    "(current assets - inventory) / short-term liabilities",
    "(inventory * 365) / cost of products sold",
    "EBITDA (profit on operating activities - depreciation) / total assets",
    "EBITDA (profit on operating activities - depreciation) / sales",
    "current assets / total liabilities",
    "short-term liabilities / total assets",
    "(short-term liabilities * 365) / cost of products sold",
    "equity / fixed assets",
    "constant capital / fixed assets",
    "working capital",
    "(sales - cost of products sold) / sales",
    "(current assets - inventory - short-term liabilities) / (sales - gross profit - depreciation)",
    "total costs /total sales",
    "long-term liabilities / equity",
    "sales / inventory",
    "sales / receivables",
    "(short-term liabilities *365) / sales",
    "sales / short-term liabilities",
    "sales / fixed assets",
)
"""The 64 attribute names of `5year.arff`, verbatim and in order (odd spacing included)."""

N_FEATURES = len(FEATURE_FORMULAS)

TRAINING_AMOUNT_UNIT = 1000.0
"""Currency units per unit of the training data's amounts (it reports thousands)."""

_NAN = math.nan


def _div(numerator: float, denominator: float) -> float:
    """Quotient, or NaN when either side is missing or the denominator is zero."""
    if math.isnan(numerator) or math.isnan(denominator) or denominator == 0.0:
        return _NAN
    return numerator / denominator


def _log10(value: float) -> float:
    return math.log10(value) if value > 0.0 else _NAN


def _item(value: float | None) -> float:
    return _NAN if value is None else float(value)


def compute_features(
    stmt: FinancialStatement, *, to_training_currency: float = 1.0
) -> npt.NDArray[np.float32]:
    """The model's input vector for one statement: float32, shape ``(64,)``.

    ``to_training_currency`` converts the statement's currency to PLN, the training
    data's currency (PLN per one unit of ``stmt.currency``). It only affects the
    two size features, X29 and X55; the other 62 are ratios of one currency.
    """
    if not (math.isfinite(to_training_currency) and to_training_currency > 0.0):
        raise ValueError(f"to_training_currency must be positive, got {to_training_currency!r}")
    ta = _item(stmt.total_assets)
    tl = _item(stmt.total_liabilities)
    stl = _item(stmt.short_term_liabilities)
    ltl = _item(stmt.long_term_liabilities)
    ca = _item(stmt.current_assets)
    fa = _item(stmt.fixed_assets)
    inv = _item(stmt.inventory)
    rec = _item(stmt.receivables)
    cash = _item(stmt.cash)
    sts = _item(stmt.short_term_securities)
    eq = _item(stmt.equity)
    sc = _item(stmt.share_capital)
    re_ = _item(stmt.retained_earnings)
    cc = _item(stmt.constant_capital)
    if math.isnan(cc):
        cc = eq + ltl
    s = _item(stmt.sales)
    s_prev = _item(stmt.sales_previous_year)
    ts = _item(stmt.total_sales)
    cogs = _item(stmt.cost_of_products_sold)
    opex = _item(stmt.operating_expenses)
    tc = _item(stmt.total_costs)
    gp = _item(stmt.gross_profit)
    gp3 = _item(stmt.gross_profit_last_3_years)
    pos = _item(stmt.profit_on_sales)
    op = _item(stmt.operating_profit)
    ebit = _item(stmt.ebit)
    dep = _item(stmt.depreciation)
    finexp = _item(stmt.financial_expenses)
    interest = _item(stmt.interest)
    extra = _item(stmt.extraordinary_items)
    np_ = _item(stmt.net_profit)

    wc = ca - stl
    scale = to_training_currency / TRAINING_AMOUNT_UNIT
    receivable_days = _div(rec * 365.0, s)
    inventory_days = _div(inv * 365.0, s)

    values = (
        _div(np_, ta),  # X1
        _div(tl, ta),
        _div(wc, ta),
        _div(ca, stl),
        _div(cash + sts + rec - stl, opex - dep) * 360.0,  # X5, data: 360 days
        _div(re_, ta),
        _div(ebit, ta),
        _div(eq, tl),
        _div(s, ta),
        _div(eq, ta),  # X10
        _div(gp + extra + finexp, ta),
        _div(gp, stl),
        _div(gp + dep, s),
        _div(gp + interest, ta),
        _div(tl * 365.0, gp + dep),
        _div(gp + dep, tl),
        _div(ta, tl),
        _div(gp, ta),
        _div(gp, s),
        inventory_days,  # X20
        _div(s, s_prev),
        _div(op, ta),
        _div(np_, s),
        _div(gp3, ta),
        _div(eq - sc, ta),
        _div(np_ + dep, tl),
        _div(op, finexp),
        _div(wc, fa),
        _log10(ta * scale),  # X29, base 10, thousands of PLN
        _div(tl - cash, s),  # X30
        _div(gp + interest, s),
        _div(stl * 365.0, cogs),
        _div(opex, stl),
        _div(opex, tl),
        _div(pos, ta),
        _div(ts, ta),
        _div(ca - inv, ltl),
        _div(cc, ta),
        _div(pos, s),
        _div(ca - inv - rec, stl),  # X40
        _div(tl, (op + dep) * (365.0 / 12.0)),  # X41, data: 365/12, not 12/365
        _div(op, s),
        receivable_days + inventory_days,
        receivable_days,
        _div(np_, inv),
        _div(ca - inv, stl),
        _div(inv * 365.0, cogs),
        # X48/X49: the name says EBITDA but defines it as operating profit
        # *minus* depreciation, and the data agrees with the definition.
        _div(op - dep, ta),
        _div(op - dep, s),
        _div(ca, tl),  # X50
        _div(stl, ta),
        _div(stl, cogs),  # X52, data: no * 365
        _div(eq, fa),
        _div(cc, fa),
        wc * scale,  # X55, thousands of PLN
        _div(s - cogs, s),
        _div(np_, eq),  # X57, data: net profit / equity
        _div(tc, ts),
        _div(ltl, eq),
        _div(s, inv),  # X60
        _div(s, rec),
        _div(stl * 365.0, s),
        _div(s, stl),
        _div(s, fa),
    )
    # Huge quotients overflow float64 or the float32 cast; the model has no
    # notion of infinity, so they become missing like any undefined ratio.
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.array(values, dtype=np.float64).astype(np.float32)
    out[~np.isfinite(out)] = np.nan
    return out


def compute_feature_matrix(
    statements: Sequence[FinancialStatement], *, to_training_currency: float = 1.0
) -> npt.NDArray[np.float32]:
    """`compute_features` for many statements: float32, shape ``(len(statements), 64)``."""
    matrix = np.full((len(statements), N_FEATURES), np.nan, dtype=np.float32)
    for row, stmt in enumerate(statements):
        matrix[row] = compute_features(stmt, to_training_currency=to_training_currency)
    return matrix
