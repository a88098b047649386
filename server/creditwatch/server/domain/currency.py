"""Conversion of statement currencies to the training data's currency (PLN).

Only the two size features of the default model (log of total assets, working
capital) depend on the currency; every other input is a ratio. Approximate
rates are good enough for a logarithm and a size signal, so a static table
ships with the service (no rate feed is fetched at run time); operators can
replace it through settings.
"""

from __future__ import annotations

# PLN per one unit of each currency, rounded (ECB reference rates, autumn 2026 order of magnitude).
DEFAULT_PLN_RATES: dict[str, float] = {
    "PLN": 1.0,
    "EUR": 4.25,
    "USD": 3.9,
    "GBP": 5.0,
    "NOK": 0.37,
    "SEK": 0.37,
    "DKK": 0.57,
    "ISK": 0.03,
    "CHF": 4.5,
}


class UnsupportedCurrency(ValueError):
    """No conversion rate is known for a statement's currency."""


def pln_per_unit(currency: str, rates: dict[str, float] | None = None) -> float:
    """PLN per one unit of `currency`."""
    table = rates or DEFAULT_PLN_RATES
    try:
        return table[currency]
    except KeyError:
        raise UnsupportedCurrency(
            f"no conversion rate for {currency}; supported: {', '.join(sorted(table))}"
        ) from None
