"""Financial statements across the wire: every reported item arrives, missing stays missing."""

from __future__ import annotations

from dataclasses import replace

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
