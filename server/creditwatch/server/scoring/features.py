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
import operator
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from creditwatch.server.domain.financials import LINE_ITEMS, FinancialStatement

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

Column = npt.NDArray[np.float64]
# A line item or ratio: one statement's float, or a column with one per statement.
Value = TypeVar("Value", float, Column)

_ITEMS = operator.attrgetter(*LINE_ITEMS)


def _div(numerator: float, denominator: float) -> float:
    """Quotient, or NaN when either side is missing or the denominator is zero
    (a NaN is true, and NaN divides or is divided into NaN)."""
    return numerator / denominator if denominator else _NAN


def _log10(value: float) -> float:
    return math.log10(value) if value > 0.0 else _NAN


def _item(value: float | None) -> float:
    return _NAN if value is None else float(value)


def _div_columns(numerator: Column, denominator: Column) -> Column:
    """`_div` for columns (NaN propagates through the division by itself)."""
    zero = denominator == 0.0
    return np.where(zero, _NAN, numerator / np.where(zero, 1.0, denominator))


def _log10_columns(value: Column) -> Column:
    positive = value > 0.0
    return np.where(positive, np.log10(np.where(positive, value, 1.0)), _NAN)


def _ratios(
    item: dict[str, Value],
    scale: Value,
    div: Callable[[Value, Value], Value],
    log10: Callable[[Value], Value],
) -> tuple[Value, ...]:
    """The 64 features, in order, from line items (NaN = missing) and `scale`
    (training-currency thousands per statement-currency unit); one formula for
    one statement (floats) and for many (columns)."""
    ta = item["total_assets"]
    tl = item["total_liabilities"]
    stl = item["short_term_liabilities"]
    ltl = item["long_term_liabilities"]
    ca = item["current_assets"]
    fa = item["fixed_assets"]
    inv = item["inventory"]
    rec = item["receivables"]
    cash = item["cash"]
    sts = item["short_term_securities"]
    eq = item["equity"]
    sc = item["share_capital"]
    re_ = item["retained_earnings"]
    cc = item["constant_capital"]  # derived from equity + long-term liabilities if missing
    s = item["sales"]
    s_prev = item["sales_previous_year"]
    ts = item["total_sales"]
    cogs = item["cost_of_products_sold"]
    opex = item["operating_expenses"]
    tc = item["total_costs"]
    gp = item["gross_profit"]
    gp3 = item["gross_profit_last_3_years"]
    pos = item["profit_on_sales"]
    op = item["operating_profit"]
    ebit = item["ebit"]
    dep = item["depreciation"]
    finexp = item["financial_expenses"]
    interest = item["interest"]
    extra = item["extraordinary_items"]
    np_ = item["net_profit"]

    wc = ca - stl
    receivable_days = div(rec * 365.0, s)
    inventory_days = div(inv * 365.0, s)

    return (
        div(np_, ta),  # X1
        div(tl, ta),
        div(wc, ta),
        div(ca, stl),
        div(cash + sts + rec - stl, opex - dep) * 360.0,  # X5, data: 360 days
        div(re_, ta),
        div(ebit, ta),
        div(eq, tl),
        div(s, ta),
        div(eq, ta),  # X10
        div(gp + extra + finexp, ta),
        div(gp, stl),
        div(gp + dep, s),
        div(gp + interest, ta),
        div(tl * 365.0, gp + dep),
        div(gp + dep, tl),
        div(ta, tl),
        div(gp, ta),
        div(gp, s),
        inventory_days,  # X20
        div(s, s_prev),
        div(op, ta),
        div(np_, s),
        div(gp3, ta),
        div(eq - sc, ta),
        div(np_ + dep, tl),
        div(op, finexp),
        div(wc, fa),
        log10(ta * scale),  # X29, base 10, thousands of PLN
        div(tl - cash, s),  # X30
        div(gp + interest, s),
        div(stl * 365.0, cogs),
        div(opex, stl),
        div(opex, tl),
        div(pos, ta),
        div(ts, ta),
        div(ca - inv, ltl),
        div(cc, ta),
        div(pos, s),
        div(ca - inv - rec, stl),  # X40
        div(tl, (op + dep) * (365.0 / 12.0)),  # X41, data: 365/12, not 12/365
        div(op, s),
        receivable_days + inventory_days,
        receivable_days,
        div(np_, inv),
        div(ca - inv, stl),
        div(inv * 365.0, cogs),
        # X48/X49: the name says EBITDA but defines it as operating profit
        # *minus* depreciation, and the data agrees with the definition.
        div(op - dep, ta),
        div(op - dep, s),
        div(ca, tl),  # X50
        div(stl, ta),
        div(stl, cogs),  # X52, data: no * 365
        div(eq, fa),
        div(cc, fa),
        wc * scale,  # X55, thousands of PLN
        div(s - cogs, s),
        div(np_, eq),  # X57, data: net profit / equity
        div(tc, ts),
        div(ltl, eq),
        div(s, inv),  # X60
        div(s, rec),
        div(stl * 365.0, s),
        div(s, stl),
        div(s, fa),
    )


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
    item = {name: _item(value) for name, value in zip(LINE_ITEMS, _ITEMS(stmt), strict=True)}
    if math.isnan(item["constant_capital"]):
        item["constant_capital"] = item["equity"] + item["long_term_liabilities"]
    values = _ratios(item, to_training_currency / TRAINING_AMOUNT_UNIT, _div, _log10)
    # Huge quotients overflow float64 or the float32 cast; the model has no
    # notion of infinity, so they become missing like any undefined ratio.
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.array(values, dtype=np.float64).astype(np.float32)
    out[~np.isfinite(out)] = np.nan
    return out


def compute_feature_matrix(
    statements: Sequence[FinancialStatement],
    *,
    to_training_currency: float | Sequence[float] | npt.NDArray[np.float64] = 1.0,
) -> npt.NDArray[np.float32]:
    """`compute_features` for many statements at once: float32, shape
    ``(len(statements), 64)``, row ``i`` equal to ``compute_features(statements[i])``.

    The arithmetic runs on columns (one numpy operation per formula step for
    all statements), not statement by statement. ``to_training_currency`` is
    one rate for all statements or one per statement.
    """
    # None becomes NaN in a float array; one contiguous row per line item.
    table = np.array([_ITEMS(stmt) for stmt in statements], dtype=np.float64).T.copy()
    return compute_feature_table(
        table.reshape(len(LINE_ITEMS), len(statements)), to_training_currency=to_training_currency
    )


def compute_feature_table(
    table: npt.NDArray[np.float64],
    *,
    to_training_currency: float | Sequence[float] | npt.NDArray[np.float64] = 1.0,
) -> npt.NDArray[np.float32]:
    """`compute_feature_matrix` from line items already in columns: ``table`` has
    one row per `LINE_ITEMS` entry, in that order, and one column per statement
    (NaN = missing). Callers that read statements in bulk (from Postgres, from a
    streamed upload) fill such a table directly and skip building statements.
    ``table`` is not modified.
    """
    if table.ndim != 2 or table.shape[0] != len(LINE_ITEMS):
        raise ValueError(f"table must have shape ({len(LINE_ITEMS)}, n), got {table.shape}")
    count = table.shape[1]
    rates = np.broadcast_to(np.asarray(to_training_currency, dtype=np.float64), (count,))
    if not (np.isfinite(rates) & (rates > 0.0)).all():
        raise ValueError(f"to_training_currency must be positive, got {to_training_currency!r}")
    out = np.empty((count, N_FEATURES), dtype=np.float32)
    if count == 0:
        return out
    item = dict(zip(LINE_ITEMS, table, strict=True))
    derived = item["equity"] + item["long_term_liabilities"]
    item["constant_capital"] = np.where(
        np.isnan(item["constant_capital"]), derived, item["constant_capital"]
    )
    with np.errstate(all="ignore"):
        values = _ratios(item, rates / TRAINING_AMOUNT_UNIT, _div_columns, _log10_columns)
        for column, value in enumerate(values):
            out[:, column] = value
    out[~np.isfinite(out)] = np.nan
    return out
