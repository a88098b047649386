"""Amounts the SDK turns into `google.type.Money`: what `money` refuses, and how it says so."""

from __future__ import annotations

import pytest

from creditwatch.client import money


@pytest.mark.parametrize(
    ("amount", "problem"),
    [
        ("12,5", "amount '12,5' is not a number"),
        ("NaN", "amount 'NaN' is not a finite number"),
        (float("inf"), "amount inf is not a finite number"),
        ("0.0000000001", "amount '0.0000000001' has more than 9 decimals"),
        ("9223372036854775808", "amount '9223372036854775808' is too large"),
        ("1e999999999", "amount '1e999999999' is too large"),
    ],
)
def test_money_refuses_what_a_money_cannot_carry_with_a_value_error(
    amount: str | float, problem: str
) -> None:
    with pytest.raises(ValueError) as caught:
        money("NOK", amount)
    assert str(caught.value) == problem


def test_money_takes_the_int64_extremes_to_the_nano() -> None:
    top = money("NOK", "9223372036854775807.999999999")
    assert (top.units, top.nanos) == (2**63 - 1, 999_999_999)
    bottom = money("NOK", "-9223372036854775808")
    assert (bottom.units, bottom.nanos) == (-(2**63), 0)
