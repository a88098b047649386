"""Company identifiers: every country's check-digit rule, on known and generated numbers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from creditwatch.server.domain.identifiers import CompanyId, IdentifierError, company_id

# Published register numbers of real companies.
KNOWN_VALID = [
    ("NO", "923609016", "923609016"),
    ("NO", "914 778 271", "914778271"),
    ("SE", "556036-0793", "5560360793"),
    ("SE", "5560360793", "5560360793"),
    ("FI", "0112038-9", "0112038-9"),
    ("DK", "10150817", "10150817"),
    ("no", " 923609016 ", "923609016"),
]


@pytest.mark.parametrize(("country", "number", "canonical"), KNOWN_VALID)
def test_known_numbers_are_accepted_and_canonicalised(
    country: str, number: str, canonical: str
) -> None:
    assert company_id(country, number) == CompanyId(country.upper(), canonical)


@pytest.mark.parametrize(
    ("country", "number", "field", "fragment"),
    [
        ("NO", "923609017", "register_number", "check digit"),
        ("NO", "12345678", "register_number", "9 digits"),
        ("NO", "123456785", "register_number", "starts with 8 or 9"),
        ("SE", "556036-0794", "register_number", "Luhn"),
        ("SE", "55603607", "register_number", "10 digits"),
        ("FI", "0112038-8", "register_number", "check digit"),
        ("FI", "01120389", "register_number", "NNNNNNN-C"),
        ("DK", "10150818", "register_number", "check digit"),
        ("DK", "01234567", "register_number", "does not start with 0"),
        ("DE", "123", "country", "unsupported"),
        ("", "923609016", "country", "required"),
        ("NO", "", "register_number", "required"),
    ],
)
def test_bad_numbers_name_the_field(country: str, number: str, field: str, fragment: str) -> None:
    with pytest.raises(IdentifierError) as caught:
        company_id(country, number)
    assert caught.value.field == field
    assert fragment in caught.value.description


def _mod11(digits: str, weights: tuple[int, ...]) -> int:
    return (11 - sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 11) % 11


@given(st.integers(80_000_000, 99_999_999))
def test_norway_accepts_exactly_the_computed_check_digit(body: int) -> None:
    digits = str(body)
    check = _mod11(digits, (3, 2, 7, 6, 5, 4, 3, 2))
    for candidate in range(10):
        number = digits + str(candidate)
        if candidate == check:
            assert company_id("NO", number).register_number == number
        else:
            with pytest.raises(IdentifierError):
                company_id("NO", number)


@given(st.integers(0, 9_999_999))
def test_finland_accepts_exactly_the_computed_check_digit(body: int) -> None:
    digits = f"{body:07d}"
    check = _mod11(digits, (7, 9, 10, 5, 8, 4, 2))
    for candidate in range(10):
        number = f"{digits}-{candidate}"
        if candidate == check:
            assert company_id("FI", number).register_number == number
        else:
            with pytest.raises(IdentifierError):
                company_id("FI", number)


@given(st.integers(100_000_000, 999_999_999))
def test_sweden_luhn_single_digit_errors_are_caught(body: int) -> None:
    digits = str(body)
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    number = digits + str((10 - total % 10) % 10)
    assert company_id("SE", number).register_number == number
    for position in range(10):
        wrong = number[:position] + str((int(number[position]) + 1) % 10) + number[position + 1 :]
        with pytest.raises(IdentifierError):
            company_id("SE", wrong)


@given(st.integers(1_000_000, 9_999_999))
def test_denmark_weighted_sum_is_divisible_by_eleven(body: int) -> None:
    digits = str(body)
    weights = (2, 7, 6, 5, 4, 3, 2)
    remainder = sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 11
    check = (11 - remainder) % 11
    if check == 10:
        for candidate in range(10):
            with pytest.raises(IdentifierError):
                company_id("DK", digits + str(candidate))
        return
    assert company_id("DK", digits + str(check)).register_number == digits + str(check)


def test_resource_key_round_trip() -> None:
    company = company_id("FI", "0112038-9")
    assert company.key == "FI-0112038-9"
    assert CompanyId.parse_key(company.key) == company
