"""Money parsing and page tokens: the rules integrators hit first."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from creditwatch.server.domain.errors import InvalidArgument
from creditwatch.server.domain.money import Money, MoneyError
from creditwatch.server.domain.paging import (
    encode_token,
    fingerprint,
    page_request,
    tenant_fingerprints,
)


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


@pytest.mark.parametrize(
    "key",
    [
        ("NO\x00", 1),  # PostgreSQL text holds no NUL
        ("\ud800", 1),  # a lone surrogate is no UTF-8
        ("NO", 2**63),  # beyond bigint
        ("NO", -(2**63) - 1),
    ],
)
def test_forged_key_values_no_query_could_take_are_refused(key: tuple[object, ...]) -> None:
    token = encode_token(key, "f")
    page = page_request(10, token, "f", default_size=5, max_size=100)
    with pytest.raises(InvalidArgument) as caught:
        page.key(str, int)
    assert caught.value.violations[0].field == "page_token"


def test_key_values_a_query_can_take_pass() -> None:
    token = encode_token(("NO", 2**63 - 1), "f")
    page = page_request(10, token, "f", default_size=5, max_size=100)
    assert page.key(str, int) == ("NO", 2**63 - 1)


def test_time_and_id_keys_need_a_utc_offset() -> None:
    when = datetime(2026, 3, 1, 12, tzinfo=UTC)
    row = uuid.uuid4()
    token = encode_token((when.isoformat(), str(row)), "f")
    assert page_request(1, token, "f", default_size=5, max_size=9).time_and_id() == (when, row)
    assert page_request(1, "", "f", default_size=5, max_size=9).time_and_id() is None
    # Another offset reads as the same instant in UTC.
    plus_one = encode_token(("2026-03-01T13:00:00+01:00", str(row)), "f")
    assert page_request(1, plus_one, "f", default_size=5, max_size=9).time_and_id() == (when, row)
    for key in [
        ("2026-03-01T12:00:00", str(row)),
        (when.isoformat(), "x"),
        ("x", str(row)),
        ("0001-01-01T00:00:00+14:00", str(row)),  # year 0 in UTC
        ("9999-12-31T23:59:59-14:00", str(row)),  # year 10000 in UTC
    ]:
        page = page_request(1, encode_token(key, "f"), "f", default_size=5, max_size=9)
        with pytest.raises(InvalidArgument) as caught:
            page.time_and_id()
        assert caught.value.violations[0].field == "page_token"


def test_a_token_from_before_tokens_named_the_tenant_is_still_taken_for_one_release() -> None:
    tenant, other = uuid.uuid4(), uuid.uuid4()
    digest, legacy = tenant_fingerprints(tenant, "watchLists")
    assert digest != legacy and legacy == fingerprint("watchLists")
    old = encode_token(("2026-01-01T00:00:00+00:00", str(uuid.uuid4())), legacy)
    assert page_request(10, old, digest, default_size=10, max_size=10, legacy=legacy).after
    theirs = encode_token(("2026-01-01T00:00:00+00:00", str(uuid.uuid4())), digest)
    mine, mine_legacy = tenant_fingerprints(other, "watchLists")
    with pytest.raises(InvalidArgument):
        page_request(10, theirs, mine, default_size=10, max_size=10, legacy=mine_legacy)
