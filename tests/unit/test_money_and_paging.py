"""Money parsing and page tokens: the rules integrators hit first."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from creditwatch.server.domain.errors import InvalidArgument
from creditwatch.server.domain.money import Money, MoneyError
from creditwatch.server.domain.paging import encode_token, fingerprint, page_request


def test_money_from_parts_is_exact() -> None:
    assert Money.from_parts("NOK", 12, 500_000_000).amount == Decimal("12.5")


@pytest.mark.parametrize(
    ("currency", "units", "nanos", "field"),
    [
        ("nok", 1, 0, "currency_code"),
        ("NOK", -1, 0, "units"),
        ("NOK", 1, -5, "nanos"),
        ("NOK", 0, 1_000_000_000, "nanos"),
        ("NOK", 10**16, 0, "units"),
    ],
)
def test_bad_money_names_the_part(currency: str, units: int, nanos: int, field: str) -> None:
    with pytest.raises(MoneyError) as caught:
        Money.from_parts(currency, units, nanos)
    assert caught.value.field == field


@given(st.integers(-(10**12), 10**12), st.integers(0, 999_999_999))
def test_money_parts_round_trip(units: int, nanos: int) -> None:
    signed_nanos = -nanos if units < 0 else nanos
    money = Money.from_parts("EUR", units, signed_nanos, allow_negative=True)
    assert money.to_parts() == ("EUR", units, signed_nanos)


def test_token_round_trip_and_filter_binding() -> None:
    filters = fingerprint("list", [1, 2])
    token = encode_token(("NO", "923609016"), filters)
    assert page_request(10, token, filters, default_size=5, max_size=100).after == (
        "NO",
        "923609016",
    )
    with pytest.raises(InvalidArgument) as caught:
        page_request(10, token, fingerprint("list", [3]), default_size=5, max_size=100)
    assert caught.value.violations[0].field == "page_token"


@pytest.mark.parametrize("token", ["garbage", "e30", "eyJ2IjogOX0"])
def test_foreign_tokens_are_invalid(token: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        page_request(10, token, "f", default_size=5, max_size=100)
    assert caught.value.violations[0].field == "page_token"


def test_page_size_bounds() -> None:
    assert page_request(0, "", "f", default_size=7, max_size=100).size == 7
    with pytest.raises(InvalidArgument):
        page_request(101, "", "f", default_size=7, max_size=100)
    with pytest.raises(InvalidArgument):
        page_request(-1, "", "f", default_size=7, max_size=100)
