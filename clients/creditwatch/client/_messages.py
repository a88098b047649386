"""Small builders for the request messages integrators write most often.

entry("NO", "923609016", exposure=("NOK", 250_000), labels={"segment": "sme"})
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from decimal import Decimal, InvalidOperation
from typing import TextIO, TypeAlias

from google.type import money_pb2

from creditwatch.v1 import common_pb2, watchlists_pb2

Amount: TypeAlias = int | str | Decimal | float
"""An amount in major currency units: `250000`, `"1999.50"`, `Decimal("0.01")`."""

MoneyLike: TypeAlias = money_pb2.Money | tuple[str, Amount]
"""A `google.type.Money`, or `(currency_code, amount)` such as `("NOK", 250_000)`."""

_NANOS = Decimal(1_000_000_000)


def decimal_amount(amount: Amount, what: str = "amount") -> Decimal:
    """`amount` as a Decimal that a `google.type.Money` can carry exactly; a
    ValueError names `what` and says what is wrong otherwise."""
    subject = f"{what} {amount!r}" if what else repr(amount)
    try:
        value = Decimal(repr(amount)) if isinstance(amount, float) else Decimal(amount)
    except InvalidOperation:
        raise ValueError(f"{subject} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"{subject} is not a finite number")
    # Money.units is an int64; `adjusted` first spares int() a googol of digits.
    if value.adjusted() > 18 or not -(2**63) <= int(value) < 2**63:
        raise ValueError(f"{subject} is too large")
    nanos = (value - int(value)) * _NANOS
    if nanos != nanos.to_integral_value():
        raise ValueError(f"{subject} has more than 9 decimals")
    return value


def money(currency_code: str, amount: Amount) -> money_pb2.Money:
    """A `google.type.Money` of `amount` major units of `currency_code` (ISO 4217).

    Floats are taken at their shortest decimal form (`0.1` is 10 øre, not
    0.1000000000000000055...). Text that is not a number, infinities, NaN,
    more than 9 decimals and more units than an int64 holds raise ValueError.
    """
    value = decimal_amount(amount)
    units = int(value)  # truncates toward zero, so units and nanos share the sign
    nanos = (value - units) * _NANOS
    return money_pb2.Money(currency_code=currency_code, units=units, nanos=int(nanos))


def company(country: str, register_number: str) -> common_pb2.CompanyRef:
    """A company reference: ISO country code and register number with its check digit."""
    return common_pb2.CompanyRef(country=country, register_number=register_number)


def _money(value: MoneyLike) -> money_pb2.Money:
    if isinstance(value, money_pb2.Money):
        return value
    currency_code, amount = value
    return money(currency_code, amount)


def entry(
    country: str,
    register_number: str,
    *,
    exposure: MoneyLike | None = None,
    credit_limit: MoneyLike | None = None,
    external_reference: str = "",
    labels: Mapping[str, str] | None = None,
) -> watchlists_pb2.WatchListEntry:
    """A watch-list entry for `add_entries`.

    Args:
        country: ISO 3166-1 alpha-2 code of the company's register ("NO", "SE", "FI", "DK").
        register_number: the register number with its check digit.
        exposure: the tenant's exposure, e.g. `("NOK", 250_000)`; None means zero.
        credit_limit: the credit limit granted, if any, in the same forms.
        external_reference: the tenant's own id of this customer (up to 200 characters).
        labels: key/value labels (keys 1..63 characters, values up to 255).
    """
    message = watchlists_pb2.WatchListEntry(
        company=company(country, register_number),
        external_reference=external_reference,
        labels=dict(labels or {}),
    )
    if exposure is not None:
        message.exposure.CopyFrom(_money(exposure))
    if credit_limit is not None:
        message.credit_limit.CopyFrom(_money(credit_limit))
    return message


def entry_name(watch_list: str, country: str, register_number: str) -> str:
    """The resource name of a company's entry on a watch list, for `get_entry`.

    `watch_list` is the list's name ("watchLists/{id}"); the server accepts the
    register number in any form it accepts in a `CompanyRef`.
    """
    return f"{watch_list}/entries/{country}-{register_number}"


CSV_COLUMNS = (
    "country",
    "register_number",
    "exposure_amount",
    "exposure_currency",
    "external_reference",
    "credit_limit_amount",
    "credit_limit_currency",
    "labels",
)
"""Columns of a watch list as CSV (`entries_from_csv`, `creditwatch watchlist
import` and `export`); `labels` is a JSON object of texts, e.g.
`{"segment": "sme"}`."""

CARRIED_COLUMNS = ("credit_limit_amount", "labels")
"""Optional columns whose absence means "keep what the entry has" to
`creditwatch watchlist import`: AddEntries replaces a whole entry, and a file
of exposures alone would otherwise clear every credit limit and label."""


def entries_from_csv(handle: TextIO) -> Iterator[tuple[int, watchlists_pb2.WatchListEntry]]:
    """(line number, entry) for each row of a CSV with the columns `CSV_COLUMNS`
    (`country` and `register_number` required; rows with every cell empty
    are skipped); feed the entries to `WatchListsClient.add_entries`, which
    sends them in chunks. A malformed row (too few or too many cells, an
    amount that is not a number, an amount without its currency, labels that
    are not a JSON object of texts) raises ValueError naming its line; check
    digits are the server's to judge."""
    reader = csv.DictReader(handle)
    missing = {"country", "register_number"} - set(reader.fieldnames or ())
    if missing:
        columns, absent = ", ".join(CSV_COLUMNS), ", ".join(sorted(missing))
        raise ValueError(f"the CSV needs the columns {columns} (missing: {absent})")
    for row in reader:
        line = reader.line_num
        if any((cell or "").strip() for cell in row.get(None) or ()):
            # csv.DictReader keeps the cells past the header under None: an
            # unquoted decimal comma or a comma in a reference, mostly (empty
            # ones, a spreadsheet's trailing commas, are no data).
            raise ValueError(
                f"line {line}: more cells than columns (quote a value that holds a comma, "
                "such as a decimal comma)"
            )
        if not any((value or "").strip() for value in row.values()):
            continue  # a spreadsheet's empty row
        # csv.DictReader gives None for the cells a short row lacks.
        short = [c for c in ("country", "register_number") if row.get(c) is None]
        if short:
            raise ValueError(f"line {line}: too few cells (no {', '.join(short)})")
        try:
            exposure = _csv_money(row, "exposure")
            credit_limit = _csv_money(row, "credit_limit")
            labels = _csv_labels(row.get("labels"))
        except ValueError as error:
            raise ValueError(f"line {line}: {error}") from None
        yield (
            line,
            entry(
                row["country"].strip().upper(),
                row["register_number"].strip(),
                exposure=exposure,
                credit_limit=credit_limit,
                external_reference=(row.get("external_reference") or "").strip(),
                labels=labels,
            ),
        )


def _csv_money(row: Mapping[str, str | None], name: str) -> money_pb2.Money | None:
    """The `{name}_amount` and `{name}_currency` cells as Money; None if no amount."""
    text = (row.get(f"{name}_amount") or "").strip()
    if not text:
        return None
    amount = decimal_amount(text, f"{name}_amount")
    currency = (row.get(f"{name}_currency") or "").strip().upper()
    if not currency:
        raise ValueError(f"{name}_currency is required with an amount")
    return money(currency, amount)


def _csv_labels(cell: str | None) -> dict[str, str]:
    text = (cell or "").strip()
    if not text:
        return {}
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()
    ):
        raise ValueError(
            f'labels {text!r} is not a JSON object of texts, such as {{"segment": "sme"}}'
        )
    return parsed
