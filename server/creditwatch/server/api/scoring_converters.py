"""Protobuf ⇄ domain conversion for financial statements, events and models."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence, Set

import numpy as np
from google.type import date_pb2

from creditwatch.server.api.converters import timestamp
from creditwatch.server.domain.errors import FieldViolation, InvalidArgument
from creditwatch.server.domain.events import CompanyEvent, EventType
from creditwatch.server.domain.financials import (
    CURRENCY_CODE,
    LINE_ITEMS,
    NON_NEGATIVE_ITEMS,
    REQUIRED_ITEMS,
    FinancialStatement,
    validate_statement,
)
from creditwatch.server.domain.scores import RiskClass
from creditwatch.server.scoring.engine import StatementColumns
from creditwatch.server.scoring.model import ModelInfo
from creditwatch.v1 import common_pb2, companies_pb2, scoring_pb2

# The oneof `detail` of CompanyEvent names the event type.
_DETAIL_TYPES: dict[str, EventType] = {
    "bankruptcy_petition_filed": EventType.BANKRUPTCY_PETITION_FILED,
    "bankruptcy_hearing_scheduled": EventType.BANKRUPTCY_HEARING_SCHEDULED,
    "bankruptcy_opened": EventType.BANKRUPTCY_OPENED,
    "compulsory_dissolution": EventType.COMPULSORY_DISSOLUTION,
    "voluntary_liquidation": EventType.VOLUNTARY_LIQUIDATION,
    "payment_remark_registered": EventType.PAYMENT_REMARK_REGISTERED,
    "payment_remark_removed": EventType.PAYMENT_REMARK_REMOVED,
    "debt_collection_opened": EventType.DEBT_COLLECTION_OPENED,
    "debt_collection_closed": EventType.DEBT_COLLECTION_CLOSED,
    "responsible_person_changed": EventType.RESPONSIBLE_PERSON_CHANGED,
    "address_changed": EventType.ADDRESS_CHANGED,
    "deleted_from_register": EventType.DELETED_FROM_REGISTER,
}


# Line items by field descriptor (all `optional double`): a dict lookup per
# reported field, not a name comparison, is what StreamScores' 1,000-statement
# chunks need.
_ITEM_FIELDS = {
    companies_pb2.FinancialStatement.DESCRIPTOR.fields_by_name[name]: name for name in LINE_ITEMS
}


def _date(value: date_pb2.Date, field: str, problems: list[FieldViolation]) -> dt.date | None:
    try:
        return dt.date(value.year, value.month, value.day)
    except ValueError:
        problems.append(
            FieldViolation(field, "must be a complete calendar date (year, month, day)")
        )
        return None


def statement(message: companies_pb2.FinancialStatement, field: str) -> FinancialStatement:
    """Validate a FinancialStatement message; one InvalidArgument lists every problem."""
    problems: list[FieldViolation] = []
    start = _date(message.period_start, f"{field}.period_start", problems)
    end = _date(message.period_end, f"{field}.period_end", problems)
    items: dict[str, float | None] = dict.fromkeys(LINE_ITEMS)
    for descriptor, value in message.ListFields():  # only the items actually reported
        name = _ITEM_FIELDS.get(descriptor)
        if name is not None:
            items[name] = value
    if problems or start is None or end is None:
        raise InvalidArgument(problems)
    domain = FinancialStatement(
        period_start=start, period_end=end, currency=message.currency_code, **items
    )
    for name, description in validate_statement(domain):
        wire = "currency_code" if name == "currency" else name
        problems.append(FieldViolation(f"{field}.{wire}", description))
    if problems:
        raise InvalidArgument(problems)
    return domain


_ITEM_ROWS = {
    companies_pb2.FinancialStatement.DESCRIPTOR.fields_by_name[name]: row
    for row, name in enumerate(LINE_ITEMS)
}
_REQUIRED_ROWS = [LINE_ITEMS.index(name) for name in REQUIRED_ITEMS]
_NON_NEGATIVE_ROWS = [LINE_ITEMS.index(name) for name in sorted(NON_NEGATIVE_ITEMS)]
_TOTAL_ASSETS_ROW = LINE_ITEMS.index("total_assets")
_NOT_ITEMS = 3  # period_start, period_end, currency_code: the other fields


def statement_columns(
    messages: Sequence[companies_pb2.FinancialStatement], currency_ok: Set[str]
) -> tuple[StatementColumns, list[int], list[int]]:
    """Many FinancialStatement messages as columns, checked in bulk: (the valid
    statements' columns, their positions in `messages`, the other positions).

    A statement lands in the columns only if `statement()` would accept it and
    its currency is in `currency_ok`; every other one is left to the caller,
    who converts it alone with `statement()` to get its precise violations.
    This is what a 1,000-statement StreamScores chunk needs: one pass reading
    the reported fields, then numpy checks per line item, instead of a
    FinancialStatement object and a validation loop per statement.
    """
    blank = [math.nan] * len(LINE_ITEMS)
    rows: list[list[float]] = []
    reported: list[int] = []
    currencies: list[str] = []
    ends: list[dt.date | None] = []
    ordered: list[bool] = []
    days: dict[tuple[int, int, int], dt.date | None] = {}
    item_rows = _ITEM_ROWS
    for message in messages:
        row = blank.copy()
        fields = message.ListFields()
        for descriptor, value in fields:
            at = item_rows.get(descriptor)
            if at is not None:
                row[at] = value
        rows.append(row)
        reported.append(len(fields) - _NOT_ITEMS)
        start, end = message.period_start, message.period_end
        first = _day((start.year, start.month, start.day), days)
        last = _day((end.year, end.month, end.day), days)
        ends.append(last)
        ordered.append(first is not None and last is not None and first <= last)
        currencies.append(message.currency_code)
    table = np.array(rows, dtype=np.float64).reshape(len(rows), len(LINE_ITEMS)).T
    known = ~np.isnan(table)
    with np.errstate(invalid="ignore"):
        good = (
            np.array(ordered, dtype=bool)
            # A reported NaN is not "missing": statement() refuses it by name.
            & (known.sum(axis=0) == np.array(reported))
            & ~np.isinf(table).any(axis=0)
            & known[_REQUIRED_ROWS].all(axis=0)
            & (table[_TOTAL_ASSETS_ROW] > 0)
            & ~(table[_NON_NEGATIVE_ROWS] < 0).any(axis=0)
        )
    refused = {c for c in currencies if c not in currency_ok or not CURRENCY_CODE.fullmatch(c)}
    if refused:  # compared as Python strings: numpy's drop trailing NULs
        good &= np.array([c not in refused for c in currencies], dtype=bool)
    chosen = np.flatnonzero(good).tolist()
    others = np.flatnonzero(~good).tolist()
    columns = StatementColumns(
        np.ascontiguousarray(table[:, chosen]),
        [currencies[i] for i in chosen],
        [end for i in chosen if (end := ends[i]) is not None],  # all of them: ordered
    )
    return columns, chosen, others


def _day(
    parts: tuple[int, int, int], days: dict[tuple[int, int, int], dt.date | None]
) -> dt.date | None:
    if parts in days:
        return days[parts]
    try:
        day: dt.date | None = dt.date(*parts)
    except ValueError:
        day = None
    days[parts] = day
    return day


def statement_message(value: FinancialStatement) -> companies_pb2.FinancialStatement:
    """The wire form of a stored statement (only reported items are set)."""
    message = companies_pb2.FinancialStatement(
        period_start=date_pb2.Date(
            year=value.period_start.year, month=value.period_start.month, day=value.period_start.day
        ),
        period_end=date_pb2.Date(
            year=value.period_end.year, month=value.period_end.month, day=value.period_end.day
        ),
        currency_code=value.currency,
    )
    for name in LINE_ITEMS:
        amount = getattr(value, name)
        if amount is not None:
            setattr(message, name, amount)
    return message


def events(messages: list[companies_pb2.CompanyEvent], field: str) -> list[CompanyEvent]:
    """Domain events; an event without a known detail is refused, naming its index."""
    out: list[CompanyEvent] = []
    problems: list[FieldViolation] = []
    for i, message in enumerate(messages):
        kind = message.WhichOneof("detail")
        if kind is None or kind not in _DETAIL_TYPES:
            problems.append(FieldViolation(f"{field}[{i}].detail", "one event detail is required"))
            continue
        detail = getattr(message, kind)
        reference = str(getattr(detail, "remark_id", "") or getattr(detail, "case_id", ""))
        occurred = (
            message.occurred_time.ToDatetime(dt.UTC) if message.HasField("occurred_time") else None
        )
        out.append(CompanyEvent(_DETAIL_TYPES[kind], occurred, reference))
    if problems:
        raise InvalidArgument(problems)
    return out


def model_message(
    info: ModelInfo, active: bool, activated: dt.datetime | None
) -> scoring_pb2.Model:
    """The wire form of a model's manifest."""
    bands = []
    for risk_class in RiskClass:
        low, high = info.bands.bounds(risk_class)
        bands.append(
            scoring_pb2.PdBand(
                risk_class=common_pb2.RiskClass.ValueType(risk_class),
                min_probability_of_default=low,
                max_probability_of_default=high,
            )
        )
    return scoring_pb2.Model(
        name=f"models/{info.version}",
        version=info.version,
        description=info.description,
        active=active,
        horizon_months=12,
        features=[
            scoring_pb2.ModelFeature(index=f.index, name=f.code, formula=f.formula)
            for f in info.features
        ],
        pd_bands=bands,
        training_metrics=scoring_pb2.TrainingMetrics(
            roc_auc_mean=info.auc_mean,
            roc_auc_per_fold=list(info.auc_per_fold),
            brier_score=info.brier,
            cross_validation_folds=info.cv_folds,
            cross_validation_repeats=info.cv_repeats,
            training_row_count=info.training_rows,
            default_rate=info.default_rate,
            reliability=[
                scoring_pb2.ReliabilityBin(
                    min_predicted_pd=b.min_pd,
                    max_predicted_pd=b.max_pd,
                    mean_predicted_pd=b.mean_predicted,
                    observed_default_rate=b.observed_rate,
                    row_count=b.count,
                )
                for b in info.reliability
            ],
        ),
        training_data_sha256=info.data_sha256,
        create_time=timestamp(info.created),
        activate_time=timestamp(activated),
    )
