"""Company identifiers: country + national register number with check digits.

Each Nordic register uses its own check-digit scheme; a number that fails it
is almost always a typing error, so it is refused before anything is stored.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import NamedTuple

SUPPORTED_COUNTRIES = ("NO", "SE", "FI", "DK")

_NO_WEIGHTS = (3, 2, 7, 6, 5, 4, 3, 2)
_FI_WEIGHTS = (7, 9, 10, 5, 8, 4, 2)
_DK_WEIGHTS = (2, 7, 6, 5, 4, 3, 2, 1)
_NINE_DIGITS = re.compile(r"[0-9]{9}")
_EIGHT_DIGITS = re.compile(r"[0-9]{8}")
_SE_FORM = re.compile(r"[0-9]{6}-?[0-9]{4}")
_FI_FORM = re.compile(r"[0-9]{7}-[0-9]")


class IdentifierError(ValueError):
    """A register number that is malformed or fails its check digit."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(description)
        self.field = field
        self.description = description


class CompanyId(NamedTuple):
    """A validated company: ISO country code and canonical register number.

    A named tuple rather than a dataclass: bulk calls build and hash 10,000 of
    these per request, and tuples do both in C.
    """

    country: str
    register_number: str

    @property
    def key(self) -> str:
        """`NO-923609016`: the form used in resource names."""
        return f"{self.country}-{self.register_number}"

    @classmethod
    def parse_key(cls, key: str) -> CompanyId:
        """Parse the `{country}-{number}` form of resource names, validating it."""
        country, sep, number = key.partition("-")
        if not sep:
            raise IdentifierError("company", f"{key!r} is not of the form COUNTRY-NUMBER")
        return company_id(country, number)


def _mod11(digits: str, weights: tuple[int, ...]) -> int | None:
    """Check digit for the weighted mod-11 schemes; None when no valid digit exists."""
    remainder = sum(map(operator.mul, map(int, digits), weights)) % 11
    check = (11 - remainder) % 11
    return None if check == 10 else check


def _luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _norway(raw: str) -> str:
    if not _NINE_DIGITS.fullmatch(raw):
        raise IdentifierError("register_number", "a Norwegian organisasjonsnummer has 9 digits")
    if raw[0] not in "89":
        raise IdentifierError(
            "register_number", "a Norwegian organisasjonsnummer starts with 8 or 9"
        )
    if _mod11(raw[:8], _NO_WEIGHTS) != int(raw[8]):
        raise IdentifierError("register_number", "check digit does not match (mod-11)")
    return raw


def _sweden(raw: str) -> str:
    digits = raw.replace("-", "")
    if not _SE_FORM.fullmatch(raw):
        raise IdentifierError(
            "register_number", "a Swedish organisationsnummer has 10 digits (NNNNNN-NNNN)"
        )
    if not _luhn_valid(digits):
        raise IdentifierError("register_number", "check digit does not match (Luhn)")
    return digits


def _finland(raw: str) -> str:
    if not _FI_FORM.fullmatch(raw):
        raise IdentifierError("register_number", "a Finnish Y-tunnus has the form NNNNNNN-C")
    if _mod11(raw[:7], _FI_WEIGHTS) != int(raw[8]):
        raise IdentifierError("register_number", "check digit does not match (mod-11)")
    return raw


def _denmark(raw: str) -> str:
    if not _EIGHT_DIGITS.fullmatch(raw):
        raise IdentifierError("register_number", "a Danish CVR number has 8 digits")
    if raw[0] == "0":
        raise IdentifierError("register_number", "a Danish CVR number does not start with 0")
    if sum(map(operator.mul, map(int, raw), _DK_WEIGHTS)) % 11 != 0:
        raise IdentifierError("register_number", "check digit does not match (mod-11)")
    return raw


_VALIDATORS: dict[str, Callable[[str], str]] = {
    "NO": _norway,
    "SE": _sweden,
    "FI": _finland,
    "DK": _denmark,
}


def company_id(country: str, register_number: str) -> CompanyId:
    """Validate and canonicalise a company reference.

    Raises IdentifierError naming `country` or `register_number`.
    """
    code = country.strip().upper()
    if not code:
        raise IdentifierError("country", "required")
    validator = _VALIDATORS.get(code)
    if validator is None:
        raise IdentifierError(
            "country", f"unsupported country {country!r}; one of {', '.join(SUPPORTED_COUNTRIES)}"
        )
    raw = register_number.replace(" ", "") if " " in register_number else register_number
    if not raw:
        raise IdentifierError("register_number", "required")
    return CompanyId(code, validator(raw))
