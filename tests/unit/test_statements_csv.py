"""CSV files read by the SDK: portfolio files (`score_items_from_csv`) with their
results written as rows (`result_row`), and watch-list imports (`entries_from_csv`)."""

from __future__ import annotations

import csv
import io

import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2

from creditwatch.client import RESULT_COLUMNS, entries_from_csv, result_row, score_items_from_csv
from creditwatch.v1 import common_pb2, scoring_pb2


def _items(text: str) -> list[tuple[int, scoring_pb2.ScoreItem]]:
    return list(score_items_from_csv(io.StringIO(text)))


def test_companies_and_statements_become_items_and_blank_rows_are_skipped() -> None:
    items = _items(
        "id,country,register_number,period_start,period_end,currency,total_assets,cash\n"
        "a,no,923609016,,,,,\n"
        ",,,2025-01-01,2025-12-31,nok,1000.5,\n"
        " , , ,,,,,\n"
        ",,,,,,,\n"
        "c,,,2024-01-01,2024-12-31,EUR,2e6,0\n"
    )
    assert [line for line, _ in items] == [2, 3, 6]
    (_, company), (_, plain), (_, zero_cash) = items
    assert company.correlation_id == "a"
    assert (company.company.country, company.company.register_number) == ("NO", "923609016")
    assert plain.correlation_id == "3"  # the line number when there is no id
    statement = plain.financial_statement
    assert (statement.period_end.year, statement.period_end.month, statement.period_end.day) == (
        2025,
        12,
        31,
    )
    assert statement.currency_code == "NOK" and statement.total_assets == 1000.5
    assert not statement.HasField("cash")  # an empty cell is not reported
    assert zero_cash.financial_statement.HasField("cash")  # a 0 is
    assert zero_cash.financial_statement.cash == 0.0


def test_a_byte_order_mark_is_read_past_with_utf_8_sig() -> None:
    data = "\ufeffcountry,register_number\nNO,923609016\n".encode()
    handle = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig")
    ((_, item),) = list(score_items_from_csv(handle))
    assert item.company.register_number == "923609016"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,turnover\nx,5\n", "unknown columns: turnover"),
        ("id,country,register_number\nx,NO,\n", "line 2: neither a company nor a statement"),
        (
            "country,register_number,currency,total_assets\nNO,923609016,NOK,5\n",
            "line 2: a company (country, register_number) or a statement, not both",
        ),
        ("currency,total_assets\nNOK,lots\n", "line 2: total_assets 'lots' is not a number"),
        ("currency,total_assets\nNOK,inf\n", "line 2: total_assets 'inf' is not a finite number"),
        ("period_end,currency\n31.12.2025,NOK\n", "line 2: period_end '31.12.2025' is not a date"),
        ("country,register_number\nNO,1,extra\n", "line 2: more cells than columns"),
        ("country,register_number\nNO," + "9" * 200_000 + "\n", "line 2: field larger"),
    ],
)
def test_a_malformed_file_names_its_line(text: str, message: str) -> None:
    limit = csv.field_size_limit(131_072)  # the default; scipy's ARFF reader raises it for all
    try:
        with pytest.raises(ValueError) as caught:
            _items(text)
    finally:
        csv.field_size_limit(limit)
    assert message in str(caught.value)


def test_results_become_rows() -> None:
    score = common_pb2.Score(
        probability_of_default=0.0123456,
        risk_class=common_pb2.RISK_CLASS_B,
        model_risk_class=common_pb2.RISK_CLASS_A,
        model_version="v1",
        reasons=[common_pb2.ReasonCode(code="X1"), common_pb2.ReasonCode(code="X2")],
    )
    ok = result_row(scoring_pb2.ScoreItemResult(correlation_id="a", score=score))
    assert dict(zip(RESULT_COLUMNS, ok, strict=True)) == {
        "id": "a",
        "status": "OK",
        "risk_class": "B",
        "model_risk_class": "A",
        "probability_of_default": "0.012346",
        "reasons": "X1 X2",
        "model_version": "v1",
        "error": "",
    }
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field="financial_statement.total_assets", description="required"
            )
        ]
    )
    error = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message="bad statement")
    error.details.add().Pack(bad)
    refused = result_row(scoring_pb2.ScoreItemResult(correlation_id="b", error=error))
    assert refused == (
        "b",
        "INVALID_ARGUMENT",
        "",
        "",
        "",
        "",
        "",
        "bad statement (financial_statement.total_assets: required)",
    )


ENTRY_HEADER = "country,register_number,exposure_amount,exposure_currency\n"


def test_watch_list_rows_become_entries() -> None:
    rows = list(entries_from_csv(io.StringIO(ENTRY_HEADER + "no, 923609016 ,1999.50,nok\nNO,1\n")))
    assert [line for line, _ in rows] == [2, 3]
    (_, first), (_, second) = rows
    assert (first.company.country, first.company.register_number) == ("NO", "923609016")
    assert (first.exposure.currency_code, first.exposure.units, first.exposure.nanos) == (
        "NOK",
        1999,
        500_000_000,
    )
    assert not second.HasField("exposure")  # a short row may leave out the optional cells


def test_empty_cells_past_the_header_are_no_data_and_others_are_refused() -> None:
    trailing = ENTRY_HEADER + "NO,923609016,5,NOK,,\n"  # a spreadsheet's trailing commas
    ((_, entry),) = entries_from_csv(io.StringIO(trailing))
    assert entry.exposure.units == 5
    with pytest.raises(ValueError, match="line 2: more cells than columns"):
        list(entries_from_csv(io.StringIO(ENTRY_HEADER + "NO,923609016,1250,75,NOK\n")))


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("NO", "line 2: too few cells (no register_number)"),
        ("NO,923609016,abc,NOK", "line 2: exposure_amount 'abc' is not a number"),
        ("NO,923609016,NaN,NOK", "line 2: exposure_amount 'NaN' is not a finite number"),
        ("NO,923609016,0.0000000001,NOK", "line 2: exposure_amount '0.0000000001' has more"),
        ("NO,923609016,1e40,NOK", "line 2: exposure_amount '1e40' is too large"),
        ("NO,923609016,5", "line 2: exposure_currency is required with an amount"),
    ],
)
def test_a_malformed_watch_list_row_names_its_line(row: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        list(entries_from_csv(io.StringIO(ENTRY_HEADER + row + "\n")))
    assert message in str(caught.value)
