"""Portfolio files: a CSV of companies and financial statements as StreamScores
items (`score_items_from_csv`), and scores as CSV rows (`result_row`)."""

from __future__ import annotations

import csv
import datetime as dt
import math
from collections.abc import Iterator
from typing import TextIO

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.rpc import error_details_pb2
from google.type import date_pb2

from creditwatch.client._messages import company
from creditwatch.v1 import common_pb2, companies_pb2, scoring_pb2

# Every amount a FinancialStatement carries, by its field name (read from the
# generated descriptor, so a line item added to the contract is a column too).
LINE_ITEM_COLUMNS: tuple[str, ...] = tuple(
    f.name
    for f in companies_pb2.FinancialStatement.DESCRIPTOR.fields
    if f.type == FieldDescriptor.TYPE_DOUBLE
)
STATEMENT_COLUMNS: tuple[str, ...] = (
    "id",
    "country",
    "register_number",
    "period_start",
    "period_end",
    "currency",
    *LINE_ITEM_COLUMNS,
)
RESULT_COLUMNS: tuple[str, ...] = (
    "id",
    "status",
    "risk_class",
    "model_risk_class",
    "probability_of_default",
    "reasons",
    "model_version",
    "error",
)
_LETTER = {
    common_pb2.RISK_CLASS_A: "A",
    common_pb2.RISK_CLASS_B: "B",
    common_pb2.RISK_CLASS_C: "C",
    common_pb2.RISK_CLASS_D: "D",
}


def _date(text: str, line: int, column: str) -> date_pb2.Date:
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"line {line}: {column} {text!r} is not a date (YYYY-MM-DD)") from None
    return date_pb2.Date(year=day.year, month=day.month, day=day.day)


def score_items_from_csv(handle: TextIO) -> Iterator[tuple[int, scoring_pb2.ScoreItem]]:
    """(line number, item) for each row of a portfolio CSV: a known company
    (`country`, `register_number`, nothing else) or a financial statement
    (`period_start`, `period_end` as YYYY-MM-DD, `currency`, and any of the
    line-item columns `LINE_ITEM_COLUMNS` in the currency's units; an empty
    cell is not reported). `id` becomes the item's correlation id (default:
    the line number). Blank rows are skipped. Feed the items to
    `ScoringClient.score_many`. A malformed row raises ValueError naming its
    line; whether a statement is acceptable (required items, signs) is the
    server's to judge, per item. Open the file with encoding="utf-8-sig" to
    accept a byte-order mark (spreadsheets write one)."""
    reader = csv.DictReader(handle)
    try:
        yield from _items(reader)
    except csv.Error as error:
        raise ValueError(f"line {reader.line_num + 1}: {error}") from None  # the line being read


def _items(reader: csv.DictReader[str]) -> Iterator[tuple[int, scoring_pb2.ScoreItem]]:
    columns = set(reader.fieldnames or ())
    unknown = columns - set(STATEMENT_COLUMNS)
    if unknown:
        raise ValueError(
            f"unknown columns: {', '.join(sorted(unknown))} (known: {', '.join(STATEMENT_COLUMNS)})"
        )
    statement_columns = columns - {"id", "country", "register_number"}
    for row in reader:
        line = reader.line_num
        if None in row:
            raise ValueError(f"line {line}: more cells than columns")
        cells = {k: (v or "").strip() for k, v in row.items()}
        if not any(cells.values()):
            continue  # a blank row
        item = scoring_pb2.ScoreItem(correlation_id=cells.get("id") or str(line))
        country, number = cells.get("country", ""), cells.get("register_number", "")
        is_statement = any(cells.get(c) for c in statement_columns)
        if is_statement and (country or number):
            raise ValueError(
                f"line {line}: a company (country, register_number) or a statement, not both"
            )
        if not is_statement:
            if not (country and number):
                raise ValueError(f"line {line}: neither a company nor a statement")
            item.company.CopyFrom(company(country.upper(), number))
            yield line, item
            continue
        statement = item.financial_statement
        for column in ("period_start", "period_end"):
            if cells.get(column):
                getattr(statement, column).CopyFrom(_date(cells[column], line, column))
        statement.currency_code = cells.get("currency", "").upper()
        for column in LINE_ITEM_COLUMNS:
            text = cells.get(column)
            if not text:
                continue
            try:
                amount = float(text)
            except ValueError:
                raise ValueError(f"line {line}: {column} {text!r} is not a number") from None
            if not math.isfinite(amount):
                raise ValueError(f"line {line}: {column} {text!r} is not a finite number")
            setattr(statement, column, amount)
        yield line, item


def result_row(result: scoring_pb2.ScoreItemResult) -> tuple[str, ...]:
    """A StreamScores result as a row of `RESULT_COLUMNS`: `status` OK or the
    per-item error's gRPC code name; `reasons` the reason codes, strongest
    first, separated by spaces; `error` the error's message and fields."""
    if result.HasField("score"):
        score = result.score
        return (
            result.correlation_id,
            "OK",
            _LETTER.get(score.risk_class, ""),
            _LETTER.get(score.model_risk_class, ""),
            f"{score.probability_of_default:.6f}",
            " ".join(r.code for r in score.reasons),
            score.model_version,
            "",
        )
    error = result.error
    code = _CODE_NAMES.get(error.code, str(error.code))
    fields = []
    for detail in error.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields += [f"{v.field}: {v.description}" for v in bad.field_violations]
    text = error.message + (f" ({'; '.join(fields)})" if fields else "")
    return (result.correlation_id, code, "", "", "", "", "", text)


_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
