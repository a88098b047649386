"""The model's 64 features computed from financial statements, and statement validation."""

from __future__ import annotations

import dataclasses
import math
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from creditwatch.server.domain.financials import (
    LINE_ITEMS,
    NON_NEGATIVE_ITEMS,
    REQUIRED_ITEMS,
    FinancialStatement,
    validate_statement,
)
from creditwatch.server.scoring.features import (
    FEATURE_FORMULAS,
    compute_feature_matrix,
    compute_feature_table,
    compute_features,
)

ARFF = Path(__file__).resolve().parents[2] / "data" / "polish-bankruptcy" / "5year.arff"

PERIOD: dict[str, Any] = {
    "period_start": date(2025, 1, 1),
    "period_end": date(2025, 12, 31),
    "currency": "PLN",
}

# A healthy mid-sized manufacturer, amounts in PLN.
HEALTHY: dict[str, Any] = {
    **PERIOD,
    "total_assets": 1_000_000.0,
    "fixed_assets": 400_000.0,
    "current_assets": 600_000.0,
    "inventory": 150_000.0,
    "receivables": 200_000.0,
    "cash": 100_000.0,
    "short_term_securities": 50_000.0,
    "equity": 500_000.0,
    "share_capital": 100_000.0,
    "retained_earnings": 250_000.0,
    "total_liabilities": 500_000.0,
    "long_term_liabilities": 200_000.0,
    "short_term_liabilities": 300_000.0,
    "sales": 2_000_000.0,
    "sales_previous_year": 1_600_000.0,
    "total_sales": 2_100_000.0,
    "cost_of_products_sold": 1_500_000.0,
    "operating_expenses": 1_800_000.0,
    "total_costs": 1_950_000.0,
    "gross_profit": 150_000.0,
    "gross_profit_last_3_years": 400_000.0,
    "profit_on_sales": 180_000.0,
    "operating_profit": 170_000.0,
    "ebit": 160_000.0,
    "depreciation": 50_000.0,
    "financial_expenses": 20_000.0,
    "interest": 10_000.0,
    "extraordinary_items": 0.0,
    "net_profit": 120_000.0,
}


def statement(**changes: Any) -> FinancialStatement:
    return FinancialStatement(**{**HEALTHY, **changes})


def feature(values: np.ndarray, number: int) -> float:
    """Feature X<number> (1-based, as the data set numbers them)."""
    return float(values[number - 1])


def test_formulas_are_the_training_data_attributes_in_order() -> None:
    header = [
        line.split("'")[1]
        for line in ARFF.read_text().splitlines()
        if line.startswith("@attribute '")
    ]
    assert tuple(header) == FEATURE_FORMULAS
    assert len(FEATURE_FORMULAS) == 64


def test_output_is_float32_vector_of_64() -> None:
    values = compute_features(statement())
    assert values.dtype == np.float32
    assert values.shape == (64,)
    assert np.isfinite(values).all()


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (1, 120 / 1000),  # net profit / total assets
        (2, 500 / 1000),  # total liabilities / total assets
        (3, (600 - 300) / 1000),  # working capital / total assets
        (4, 600 / 300),  # current assets / short-term liabilities
        (5, (100 + 50 + 200 - 300) / (1800 - 50) * 360),  # 360 days, as in the data
        (7, 160 / 1000),  # EBIT / total assets
        (9, 2000 / 1000),  # sales / total assets
        (11, (150 + 0 + 20) / 1000),  # (gross profit + extraordinary + financial exp.) / TA
        (14, (150 + 10) / 1000),  # (gross profit + interest) / total assets
        (15, 500 * 365 / (150 + 50)),  # (total liabilities * 365) / (gross profit + dep.)
        (20, 150 * 365 / 2000),  # inventory days
        (21, 2000 / 1600),  # sales growth
        (24, 400 / 1000),  # gross profit over 3 years / total assets
        (25, (500 - 100) / 1000),  # (equity - share capital) / total assets
        (27, 170 / 20),  # operating profit / financial expenses
        (29, 3.0),  # log10 of total assets in thousands: 1,000,000 PLN -> 1,000
        (30, (500 - 100) / 2000),  # (total liabilities - cash) / sales
        (32, 300 * 365 / 1500),  # (current liabilities * 365) / cost of products sold
        (37, (600 - 150) / 200),  # (current assets - inventories) / long-term liabilities
        (38, (500 + 200) / 1000),  # constant capital, derived as equity + long-term liab.
        (40, (600 - 150 - 200) / 300),  # quick cash ratio
        (41, 500 / ((170 + 50) * 365 / 12)),  # as in the data: * 365/12
        (43, 200 * 365 / 2000 + 150 * 365 / 2000),  # receivable days + inventory days
        (44, 200 * 365 / 2000),  # receivable days
        (48, (170 - 50) / 1000),  # "EBITDA" as the data defines it: op. profit - dep.
        (52, 300 / 1500),  # as in the data: no * 365
        (55, 300.0),  # working capital in thousands
        (56, (2000 - 1500) / 2000),  # gross margin
        (57, 120 / 500),  # as in the data: net profit / equity
        (58, 1950 / 2100),  # total costs / total sales
        (59, 200 / 500),  # long-term liabilities / equity
        (61, 2000 / 200),  # sales / receivables
        (64, 2000 / 400),  # sales / fixed assets
    ],
)
def test_healthy_statement_ratios_by_hand(number: int, expected: float) -> None:
    values = compute_features(statement())
    assert feature(values, number) == pytest.approx(expected, rel=1e-6)


def test_reported_constant_capital_wins_over_the_derived_one() -> None:
    values = compute_features(statement(constant_capital=650_000.0))
    assert feature(values, 38) == pytest.approx(0.65)
    assert feature(values, 54) == pytest.approx(650 / 400)


def test_zero_short_term_liabilities_give_nan_not_inf() -> None:
    values = compute_features(statement(short_term_liabilities=0.0))
    for number in (4, 12, 33, 40, 46, 63):  # every "... / short-term liabilities"
        assert math.isnan(feature(values, number)), number
    assert not np.isinf(values).any()
    assert feature(values, 62) == 0.0  # zero in the numerator is a real zero


def test_zero_sales_give_nan_for_every_per_sales_ratio() -> None:
    values = compute_features(statement(sales=0.0))
    for number in (13, 19, 20, 23, 30, 31, 39, 42, 43, 44, 49, 56, 62):
        assert math.isnan(feature(values, number)), number
    assert feature(values, 9) == 0.0  # sales / total assets is simply 0
    assert not np.isinf(values).any()


def test_zero_denominator_built_from_a_difference_gives_nan() -> None:
    values = compute_features(statement(operating_expenses=50_000.0, depreciation=50_000.0))
    assert math.isnan(feature(values, 5))
    values = compute_features(statement(operating_profit=-50_000.0, depreciation=50_000.0))
    assert math.isnan(feature(values, 41))


def test_missing_item_makes_only_its_ratios_nan() -> None:
    values = compute_features(statement(inventory=None))
    uses_inventory = {20, 37, 40, 43, 45, 46, 47, 60}
    for number in range(1, 65):
        assert math.isnan(feature(values, number)) == (number in uses_inventory), number


def test_missing_interest_does_not_touch_ebit() -> None:
    values = compute_features(statement(interest=None))
    assert math.isnan(feature(values, 14))
    assert math.isnan(feature(values, 31))
    assert feature(values, 7) == pytest.approx(0.16)


@pytest.mark.parametrize(
    ("previous", "expected"),
    [(1_600_000.0, 1.25), (2_500_000.0, 0.8), (0.0, math.nan), (None, math.nan)],
)
def test_sales_growth(previous: float | None, expected: float) -> None:
    growth = feature(compute_features(statement(sales_previous_year=previous)), 21)
    if math.isnan(expected):
        assert math.isnan(growth)
    else:
        assert growth == pytest.approx(expected)


@pytest.mark.parametrize(
    ("total_assets", "expected"),
    [(1_000_000.0, 3.0), (15_000_000.0, math.log10(15_000)), (1000.0, 0.0), (0.0, math.nan)],
)
def test_log_of_total_assets_is_base_10_in_thousands(total_assets: float, expected: float) -> None:
    value = feature(compute_features(statement(total_assets=total_assets)), 29)
    if math.isnan(expected):
        assert math.isnan(value)
    else:
        assert value == pytest.approx(expected, abs=1e-6)


def test_currency_conversion_only_moves_the_two_size_features() -> None:
    in_pln = compute_features(statement())
    in_eur = compute_features(statement(currency="EUR"), to_training_currency=4.0)
    assert feature(in_eur, 29) == pytest.approx(math.log10(4000))
    assert feature(in_eur, 55) == pytest.approx(1200.0)
    others = [i for i in range(64) if i not in (28, 54)]
    np.testing.assert_array_equal(in_eur[others], in_pln[others])


def test_rejects_a_non_positive_conversion_rate() -> None:
    with pytest.raises(ValueError, match="to_training_currency"):
        compute_features(statement(), to_training_currency=0.0)


def test_overflowing_ratio_becomes_nan() -> None:
    values = compute_features(statement(current_assets=1e300, short_term_liabilities=1e-300))
    assert math.isnan(feature(values, 4))  # beyond float32 as well as float64
    assert not np.isinf(values).any()


def test_matrix_rows_equal_single_statements() -> None:
    stmts = [statement(), statement(inventory=None), statement(sales=0.0)]
    matrix = compute_feature_matrix(stmts)
    assert matrix.shape == (3, 64)
    assert matrix.dtype == np.float32
    for row, stmt in zip(matrix, stmts, strict=True):
        np.testing.assert_array_equal(row, compute_features(stmt))
    assert compute_feature_matrix([]).shape == (0, 64)


# Each one hits a different way for a ratio to be undefined or extreme.
AWKWARD: list[dict[str, Any]] = [
    {},
    {"short_term_liabilities": 0.0},
    {"sales": 0.0},
    {"total_assets": 0.0},
    {"total_liabilities": 0.0},
    {"fixed_assets": 0.0, "inventory": 0.0, "receivables": 0.0, "equity": 0.0},
    {"operating_expenses": 50_000.0, "depreciation": 50_000.0},  # X5: difference is 0
    {"operating_profit": -50_000.0, "depreciation": 50_000.0},  # X41
    {"gross_profit": -50_000.0, "depreciation": 50_000.0},  # X13, X15, X16
    {"inventory": None, "receivables": None, "cash": None},
    {"constant_capital": 650_000.0},
    {"constant_capital": None, "equity": None},
    {"sales_previous_year": 0.0, "cost_of_products_sold": 0.0, "total_sales": 0.0},
    {"financial_expenses": 0.0, "long_term_liabilities": 0.0},
    {"equity": -300_000.0, "net_profit": -400_000.0, "retained_earnings": -900_000.0},
    {"total_assets": -1.0},
    {"current_assets": 1e300, "short_term_liabilities": 1e-300},  # overflows float64
    {"current_assets": 1e39, "short_term_liabilities": 1.0},  # overflows float32 only
    {"total_assets": 1e-320, "net_profit": 1e-320},  # subnormal
    {name: None for name in LINE_ITEMS},
    {name: 0.0 for name in LINE_ITEMS},
]


def test_matrix_equals_single_statements_on_awkward_statements() -> None:
    stmts = [statement(**changes) for changes in AWKWARD]
    rates = [1.0, 4.25, 0.37] * 7
    matrix = compute_feature_matrix(stmts, to_training_currency=rates)
    for row, stmt, rate in zip(matrix, stmts, rates, strict=True):
        np.testing.assert_array_equal(row, compute_features(stmt, to_training_currency=rate))
    assert np.isnan(matrix).any() and not np.isinf(matrix).any()


def test_table_of_line_item_columns_gives_the_same_matrix() -> None:
    stmts = [statement(**changes) for changes in AWKWARD]
    rates = [0.5 + i for i in range(len(stmts))]
    table = np.array(
        [[np.nan if (v := getattr(s, name)) is None else v for s in stmts] for name in LINE_ITEMS]
    )
    before = table.copy()
    matrix = compute_feature_table(table, to_training_currency=rates)
    np.testing.assert_array_equal(matrix, compute_feature_matrix(stmts, to_training_currency=rates))
    np.testing.assert_array_equal(table, before)  # the caller's table is left as it was
    with pytest.raises(ValueError, match="shape"):
        compute_feature_table(table[:-1])


def test_matrix_rejects_a_non_positive_conversion_rate() -> None:
    with pytest.raises(ValueError, match="to_training_currency"):
        compute_feature_matrix([statement(), statement()], to_training_currency=[1.0, 0.0])


# --- The feature code reproduces the training data --------------------------------


def _load_ratios() -> np.ndarray:
    lines = ARFF.read_text().splitlines()
    start = lines.index("@data") + 1
    rows = [line.split(",")[:64] for line in lines[start:] if line.strip()]
    return np.array([[math.nan if v == "?" else float(v) for v in row] for row in rows])


def _statement_from_ratios(x: np.ndarray) -> FinancialStatement:
    """Line items (in PLN) that a row's own ratios imply, rebuilt from a few of them."""
    with np.errstate(all="ignore"):
        r = {i + 1: np.float64(v) for i, v in enumerate(x)}
        ta = 1000 * r[55] / r[3]  # working capital is in thousands, X3 = it / TA
        stl = r[51] * ta
        sales = r[63] * stl
        gp = r[18] * ta
        dep = r[13] * sales - gp
        items = {
            "total_assets": ta,
            "short_term_liabilities": stl,
            "total_liabilities": r[2] * ta,
            "current_assets": r[4] * stl,
            "equity": r[10] * ta,
            "net_profit": r[1] * ta,
            "sales": sales,
            "inventory": r[20] * sales / 365,
            "receivables": r[44] * sales / 365,
            "cost_of_products_sold": stl * 365 / r[32],
            "operating_profit": r[22] * ta,
            "depreciation": dep,
        }
    amounts: dict[str, Any] = {k: float(v) if math.isfinite(v) else None for k, v in items.items()}
    return FinancialStatement(**PERIOD, **amounts)


@pytest.fixture(scope="module")
def data_and_features() -> tuple[np.ndarray, np.ndarray]:
    ratios = _load_ratios()
    return ratios, compute_feature_matrix([_statement_from_ratios(x) for x in ratios])


@pytest.mark.parametrize(
    ("number", "min_agreement"),
    [
        (29, 0.95),  # log10, thousands
        (41, 0.98),  # * 365/12 (the data uses 30 or 365/12 days a month)
        (43, 0.98),
        (45, 0.98),
        (47, 0.9),
        (52, 0.9),  # no * 365
        (56, 0.95),
        (57, 0.98),  # net profit / equity
        (60, 0.98),
        (61, 0.98),
    ],
)
def test_features_reproduce_the_training_data(
    data_and_features: tuple[np.ndarray, np.ndarray], number: int, min_agreement: float
) -> None:
    """Statements rebuilt from a row's ratios give back the row's other ratios.

    Only a dozen items are rebuilt (from X1-X4, X10, X13, X18, X20, X22, X32, X44,
    X51, X55, X63), so the features checked here are computed from items, not
    copied; the literal reading of X41, X52 or X57 agrees with almost no row.
    """
    ratios, computed = data_and_features
    ours = computed[:, number - 1].astype(np.float64)
    theirs = ratios[:, number - 1]
    both = np.isfinite(ours) & np.isfinite(theirs)
    assert both.sum() > 5000
    relative = np.abs(ours[both] - theirs[both]) / np.maximum(np.abs(theirs[both]), 1e-3)
    assert np.mean(relative < 0.02) >= min_agreement


# --- Properties -------------------------------------------------------------------

_amount = st.floats(min_value=-1e15, max_value=1e15, allow_nan=False, allow_infinity=False)
_maybe_amount = st.none() | _amount | st.just(0.0)
_positive = st.floats(min_value=1.0, max_value=1e10, allow_nan=False, allow_infinity=False)


@st.composite
def statements(draw: st.DrawFn, amounts: st.SearchStrategy[float | None]) -> FinancialStatement:
    drawn: dict[str, Any] = {name: draw(amounts) for name in LINE_ITEMS}
    return FinancialStatement(**PERIOD, **drawn)


@given(statements(_maybe_amount))
def test_never_infinite_and_always_64_float32(stmt: FinancialStatement) -> None:
    values = compute_features(stmt)
    assert values.shape == (64,)
    assert values.dtype == np.float32
    assert not np.isinf(values).any()


@given(statements(_positive))
def test_finite_for_positive_complete_statements(stmt: FinancialStatement) -> None:
    # With every item positive the only denominator that can vanish is X5's
    # (operating expenses - depreciation).
    assume(stmt.operating_expenses != stmt.depreciation)
    assert np.isfinite(compute_features(stmt)).all()


@given(
    st.lists(
        st.tuples(
            statements(_maybe_amount | _positive),
            st.floats(min_value=1e-3, max_value=1e3, allow_nan=False),
        ),
        max_size=20,
    )
)
def test_matrix_rows_equal_compute_features(rows: list[tuple[FinancialStatement, float]]) -> None:
    stmts = [stmt for stmt, _ in rows]
    rates = np.array([rate for _, rate in rows])
    matrix = compute_feature_matrix(stmts, to_training_currency=rates)
    assert matrix.shape == (len(rows), 64)
    for row, (stmt, rate) in zip(matrix, rows, strict=True):
        np.testing.assert_array_equal(row, compute_features(stmt, to_training_currency=rate))


@given(statements(_maybe_amount))
def test_validation_names_real_fields(stmt: FinancialStatement) -> None:
    field_names = {f.name for f in dataclasses.fields(FinancialStatement)}
    for field_name, description in validate_statement(stmt):
        assert field_name in field_names
        assert description


# --- validate_statement -----------------------------------------------------------


def test_line_items_are_all_the_amount_fields() -> None:
    names = [f.name for f in dataclasses.fields(FinancialStatement)]
    assert names[:3] == ["period_start", "period_end", "currency"]
    assert tuple(names[3:]) == LINE_ITEMS
    assert set(REQUIRED_ITEMS) <= set(LINE_ITEMS)
    assert set(LINE_ITEMS) >= NON_NEGATIVE_ITEMS


def test_valid_statement_has_no_violations() -> None:
    assert validate_statement(statement()) == []


def test_minimal_statement_is_valid() -> None:
    minimal = FinancialStatement(
        **PERIOD, total_assets=1.0, total_liabilities=0.0, sales=0.0, net_profit=-5.0
    )
    assert validate_statement(minimal) == []


@pytest.mark.parametrize("name", REQUIRED_ITEMS)
def test_missing_required_item_is_named(name: str) -> None:
    violations = validate_statement(statement(**{name: None}))
    assert [field for field, _ in violations] == [name]
    assert "required" in violations[0][1]


@pytest.mark.parametrize("value", [0.0, -1.0])
def test_total_assets_must_be_positive(value: float) -> None:
    violations = validate_statement(statement(total_assets=value))
    assert [field for field, _ in violations] == ["total_assets"]


@pytest.mark.parametrize("name", sorted(NON_NEGATIVE_ITEMS - {"total_assets"}))
def test_negative_amount_that_cannot_be_negative_is_named(name: str) -> None:
    violations = validate_statement(statement(**{name: -1.0}))
    assert [field for field, _ in violations] == [name]
    assert "negative" in violations[0][1]


@pytest.mark.parametrize(
    "name",
    [
        "net_profit",
        "gross_profit",
        "gross_profit_last_3_years",
        "operating_profit",
        "profit_on_sales",
        "ebit",
        "equity",
        "retained_earnings",
        "constant_capital",
        "extraordinary_items",
    ],
)
def test_profits_and_equity_may_be_negative(name: str) -> None:
    assert validate_statement(statement(**{name: -1_000.0})) == []


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_amount_is_named(value: float) -> None:
    violations = validate_statement(statement(net_profit=value))
    assert [field for field, _ in violations] == ["net_profit"]


def test_period_end_before_start_is_named() -> None:
    violations = validate_statement(
        statement(period_start=date(2025, 12, 31), period_end=date(2025, 1, 1))
    )
    assert [field for field, _ in violations] == ["period_end"]


@pytest.mark.parametrize("currency", ["", "pln", "PL", "EURO", "12A"])
def test_bad_currency_is_named(currency: str) -> None:
    violations = validate_statement(statement(currency=currency))
    assert [field for field, _ in violations] == ["currency"]


def test_every_violation_is_reported_at_once() -> None:
    violations = validate_statement(
        statement(
            period_end=date(2024, 1, 1),
            total_assets=-5.0,
            sales=None,
            inventory=-1.0,
            cash=math.nan,
        )
    )
    assert sorted(field for field, _ in violations) == [
        "cash",
        "inventory",
        "period_end",
        "sales",
        "total_assets",
    ]
