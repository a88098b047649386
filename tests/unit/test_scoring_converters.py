"""Financial statements across the wire: every reported item arrives, missing stays missing."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from creditwatch.server.api import scoring_converters as sc
from creditwatch.server.domain.errors import InvalidArgument
from creditwatch.server.domain.financials import LINE_ITEMS, REQUIRED_ITEMS, FinancialStatement
from creditwatch.v1 import companies_pb2
from tests.unit.test_features import HEALTHY

OPTIONAL_ITEMS = [name for name in LINE_ITEMS if name not in REQUIRED_ITEMS]


def test_every_line_item_is_a_double_on_the_wire() -> None:
    fields = companies_pb2.FinancialStatement.DESCRIPTOR.fields_by_name
    assert {fields[name].type for name in LINE_ITEMS} == {fields["total_assets"].TYPE_DOUBLE}


@given(
    missing=st.sets(st.sampled_from(OPTIONAL_ITEMS)),
    zero=st.sets(st.sampled_from(OPTIONAL_ITEMS)),
)
def test_a_statement_survives_the_round_trip(missing: set[str], zero: set[str]) -> None:
    statement = FinancialStatement(
        **{**HEALTHY, **dict.fromkeys(zero, 0.0), **dict.fromkeys(missing, None)}
    )
    assert sc.statement(sc.statement_message(statement), "s") == statement


def test_a_reported_zero_is_not_missing() -> None:
    statement = FinancialStatement(**{**HEALTHY, "inventory": 0.0, "cash": None})
    back = sc.statement(sc.statement_message(statement), "s")
    assert (back.inventory, back.cash) == (0.0, None)


def test_a_bad_item_is_named_with_the_field_path() -> None:
    statement = replace(FinancialStatement(**HEALTHY), cash=-1.0)
    with pytest.raises(InvalidArgument) as caught:
        sc.statement(sc.statement_message(statement), "items[3].financial_statement")
    assert [v.field for v in caught.value.violations] == ["items[3].financial_statement.cash"]


def statement_variants() -> list[companies_pb2.FinancialStatement]:
    """Statements of every kind statement() accepts or refuses."""
    good = sc.statement_message(FinancialStatement(**HEALTHY))

    def changed(**fields: object) -> companies_pb2.FinancialStatement:
        message = companies_pb2.FinancialStatement()
        message.CopyFrom(good)
        for name, value in fields.items():
            if value is None:
                message.ClearField(name)
            else:
                setattr(message, name, value)
        return message

    later = changed()
    later.period_end.year = 2030
    backwards = changed()
    backwards.period_end.year = 2000
    no_day = changed()
    no_day.period_start.day = 0
    no_start = changed()
    no_start.ClearField("period_start")
    no_end_nan = changed(cash=float("nan"))  # an explicit NaN that a missing date could hide
    no_end_nan.ClearField("period_end")
    return [
        good,
        changed(cash=None, inventory=0.0, retained_earnings=-5.0),
        changed(currency_code="EUR"),
        changed(currency_code="XAU"),  # well-formed, no rate
        changed(currency_code="nok"),
        changed(currency_code="EUR\x00"),  # refused, and no reason to refuse plain EUR
        changed(currency_code=None),
        changed(cash=float("nan")),
        changed(cash=float("inf")),
        changed(net_profit=float("-inf")),
        changed(total_assets=0.0),
        changed(total_assets=-0.0),
        changed(inventory=-0.0),  # reported, not missing, and not negative
        changed(total_assets=-1.0),
        changed(inventory=-1.0),
        changed(equity=-1.0),  # may be negative
        changed(sales=None),
        changed(net_profit=None, total_liabilities=None),
        later,
        backwards,
        no_day,
        no_start,
        no_end_nan,
        companies_pb2.FinancialStatement(),
    ]


def test_bulk_columns_take_exactly_what_statement_accepts_with_the_same_items() -> None:
    messages = statement_variants() * 3
    supported = {"NOK", "EUR", "PLN"}
    columns, chosen, others = sc.statement_columns(messages, supported)
    expected: list[int] = []
    for i, message in enumerate(messages):
        try:
            one = sc.statement(message, "s")
        except InvalidArgument:
            continue
        if one.currency in supported:
            expected.append(i)
    assert chosen == expected and sorted(chosen + others) == list(range(len(messages)))
    assert len(expected) == 6 * 3  # the variants above that are fine
    for column, i in enumerate(chosen):
        one = sc.statement(messages[i], "s")
        items = [getattr(one, name) for name in LINE_ITEMS]
        np.testing.assert_array_equal(
            columns.items[:, column], [np.nan if v is None else v for v in items]
        )
        assert (columns.currencies[column], columns.period_ends[column]) == (
            one.currency,
            one.period_end,
        )


def test_bulk_columns_of_nothing() -> None:
    columns, chosen, others = sc.statement_columns([], {"NOK"})
    assert (len(columns), chosen, others, columns.items.shape) == (0, [], [], (len(LINE_ITEMS), 0))
