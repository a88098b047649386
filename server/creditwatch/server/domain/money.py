"""Money amounts: a currency code and an exact decimal amount."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

_NANOS_PER_UNIT = 1_000_000_000
# Amounts are stored as NUMERIC(20, 2)-sized values; anything beyond is an input error.
MAX_UNITS = 10**15


class MoneyError(ValueError):
    """A malformed amount; `field` is relative to the Money message (e.g. `nanos`)."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(description)
        self.field = field
        self.description = description


@dataclass(frozen=True)
class Money:
    """An exact amount in one ISO 4217 currency."""

    currency: str
    amount: Decimal

    @classmethod
    def from_parts(
        cls, currency_code: str, units: int, nanos: int, *, allow_negative: bool = False
    ) -> Money:
        """Build from google.type.Money parts, enforcing its sign and range rules."""
        if not (
            len(currency_code) == 3
            and currency_code.isascii()
            and currency_code.isalpha()
            and currency_code.isupper()
        ):
            raise MoneyError("currency_code", "must be a 3-letter ISO 4217 code such as NOK")
        if not -_NANOS_PER_UNIT < nanos < _NANOS_PER_UNIT:
            raise MoneyError("nanos", "must be between -999,999,999 and 999,999,999")
        if (units > 0 and nanos < 0) or (units < 0 and nanos > 0):
            raise MoneyError("nanos", "must have the same sign as units")
        if abs(units) >= MAX_UNITS:
            raise MoneyError("units", f"must be below {MAX_UNITS:,} in absolute value")
        amount = Decimal(units) if nanos == 0 else Decimal(units) + Decimal(nanos) / _NANOS_PER_UNIT
        if amount < 0 and not allow_negative:
            # Named where the sign is: units, or nanos for an amount below one unit.
            raise MoneyError("units" if units else "nanos", "must not be negative")
        return cls(currency_code, amount)

    def to_parts(self) -> tuple[str, int, int]:
        """(currency_code, units, nanos) as google.type.Money wants them."""
        units = int(self.amount)  # truncates toward zero, so nanos share the sign
        nanos = int((self.amount - units) * _NANOS_PER_UNIT)
        return self.currency, units, nanos
