"""Protobuf ⇄ domain conversion for financial statements, events and models."""

from __future__ import annotations

import datetime as dt
import math
import operator
from collections.abc import Sequence, Set
from typing import Any

import numpy as np
from google.type import date_pb2

from creditwatch.server.api.converters import company, money, past_time, timestamp
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
from creditwatch.server.domain.watchlists import NUL, NUL_REFUSED
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
    # All items in one C call; an item not reported reads 0.0, so only a
    # 0.0 needs a second look (reported, or not reported at all?).
    items: dict[str, float | None] = dict(zip(LINE_ITEMS, _READ_ITEMS(message), strict=True))
    for name, value in items.items():
        if value == 0.0 and not message.HasField(name):  # type: ignore[arg-type]
            items[name] = None
    # A refused date is reported beside the line items' problems, not
    # before them (one error lists every problem); the period's order is
    # then not checked (equal stand-ins pass that check).
    if start is None or end is None:
        start = end = _NO_DATE
    domain = FinancialStatement(
        period_start=start,
        period_end=end,
        currency=message.currency_code,
        **items,
    )
    for name, description in validate_statement(domain):
        wire = "currency_code" if name == "currency" else name
        problems.append(FieldViolation(f"{field}.{wire}", description))
    if problems:
        raise InvalidArgument(problems)
    return domain


_NO_DATE = dt.date.min
_REQUIRED_ROWS = [LINE_ITEMS.index(name) for name in REQUIRED_ITEMS]
_NON_NEGATIVE_ROWS = [LINE_ITEMS.index(name) for name in sorted(NON_NEGATIVE_ITEMS)]
_TOTAL_ASSETS_ROW = LINE_ITEMS.index("total_assets")
# A statement's line items in one C call (an item not reported reads 0.0),
# and the rest of it in another.
_READ_ITEMS = operator.attrgetter(*LINE_ITEMS)
_READ_REST = operator.attrgetter("period_start", "period_end", "currency_code")
_READ_DAY = operator.attrgetter("year", "month", "day")


def statement_columns(
    messages: Sequence[companies_pb2.FinancialStatement], currency_ok: Set[str]
) -> tuple[StatementColumns, list[int], list[int]]:
    """Many FinancialStatement messages as columns, checked in bulk: (the valid
    statements' columns, their positions in `messages`, the other positions).

    A statement lands in the columns only if `statement()` would accept it and
    its currency is in `currency_ok`; every other one is left to the caller,
    who converts it alone with `statement()` to get its precise violations.
    This is what a 1,000-statement StreamScores chunk needs: one attribute
    read per statement, then numpy checks per line item, instead of a
    FinancialStatement object and a validation loop per statement. Only a
    0.0 needs a second look (reported, or not reported at all?).
    """
    table = np.array([_READ_ITEMS(m) for m in messages], dtype=np.float64)
    table = table.reshape(len(messages), len(LINE_ITEMS))
    # A reported NaN is not "missing": statement() refuses it by name.
    reported_nan = np.isnan(table).any(axis=1)
    at, row = np.nonzero(table == 0.0)
    names: Sequence[Any] = LINE_ITEMS  # HasField's stubs want literal field names
    missing = [
        not messages[a].HasField(names[r]) for a, r in zip(at.tolist(), row.tolist(), strict=True)
    ]
    table[at[missing], row[missing]] = math.nan
    table = table.T
    rest = [_READ_REST(m) for m in messages]
    currencies = [currency for _, _, currency in rest]
    # (period end, whether the period is a valid one) per distinct period:
    # most statements of an upload share a handful.
    periods = [_READ_DAY(start) + _READ_DAY(end) for start, end, _ in rest]
    known = {period: _period(period) for period in set(periods)}
    ends = [known[period][0] for period in periods]
    ordered = [known[period][1] for period in periods]
    with np.errstate(invalid="ignore"):
        good = (
            np.array(ordered, dtype=bool)
            & ~reported_nan
            & ~np.isinf(table).any(axis=0)
            & ~np.isnan(table[_REQUIRED_ROWS]).any(axis=0)
            & (table[_TOTAL_ASSETS_ROW] > 0)
            & ~(table[_NON_NEGATIVE_ROWS] < 0).any(axis=0)
        )
    refused = {c for c in set(currencies) if c not in currency_ok or not CURRENCY_CODE.fullmatch(c)}
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


def _period(days: tuple[int, ...]) -> tuple[dt.date | None, bool]:
    """(the period's end, whether start and end are dates with start <= end)
    from (start year, month, day, end year, month, day)."""
    try:
        start, end = dt.date(*days[:3]), dt.date(*days[3:])
    except ValueError:
        try:
            return dt.date(*days[3:]), False
        except ValueError:
            return None, False
    return end, start <= end


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


# Text fields of each detail: (name, most characters, required), as
# companies.proto has them. A remark or case id is what ties a closing to its
# opening: an empty one would open an anonymous item that any closing with an
# unknown id closes.
_TEXTS: dict[str, tuple[tuple[str, int, bool], ...]] = {
    "bankruptcy_petition_filed": (("court_name", 200, False), ("case_number", 100, False)),
    "bankruptcy_hearing_scheduled": (("court_name", 200, True), ("case_number", 100, False)),
    "bankruptcy_opened": (
        ("court_name", 200, False),
        ("case_number", 100, False),
        ("trustee_name", 200, False),
    ),
    "compulsory_dissolution": (("court_name", 200, False),),
    "voluntary_liquidation": (("liquidator_name", 200, False),),
    "payment_remark_registered": (("remark_id", 128, True), ("creditor_name", 200, False)),
    "payment_remark_removed": (("remark_id", 128, True),),
    "debt_collection_opened": (("case_id", 128, True), ("creditor_name", 200, False)),
    "debt_collection_closed": (("case_id", 128, True),),
    "responsible_person_changed": (
        ("previous_person_name", 200, False),
        ("new_person_name", 200, False),
    ),
}


def _enum_fields(case: str) -> tuple[tuple[str, str, frozenset[int]], ...]:
    """(name, enum name, the numbers this server knows) of each enum field of
    the `detail` case's message."""
    detail = companies_pb2.CompanyEvent.DESCRIPTOR.fields_by_name[case].message_type
    assert detail is not None  # every case of `detail` is a message
    return tuple(
        (f.name, f.enum_type.name, frozenset(f.enum_type.values_by_number))
        for f in detail.fields
        if f.enum_type is not None
    )


# An unknown enum number (a newer client's, or garbage) is refused rather than
# stored as a bare number that nothing downstream understands.
_ENUMS = {case: _enum_fields(case) for case in _DETAIL_TYPES}
# Enum fields that companies.proto marks required: UNSPECIFIED is refused.
_REQUIRED_ENUMS = frozenset({("responsible_person_changed", "role")})


def _detail_problems(kind: str, detail: Any, field: str, problems: list[FieldViolation]) -> None:
    """Append the violations of one event detail (the `kind` case, at `field`)."""
    for name, most, required in _TEXTS.get(kind, ()):
        text = getattr(detail, name)
        if len(text) > most or (required and not text):
            wanted = f"1 to {most} characters" if required else f"at most {most} characters"
            problems.append(FieldViolation(f"{field}.{name}", wanted))
        elif NUL in text:
            problems.append(FieldViolation(f"{field}.{name}", NUL_REFUSED))
    for name, enum, known in _ENUMS[kind]:
        value = getattr(detail, name)
        if value not in known:
            problems.append(FieldViolation(f"{field}.{name}", f"unknown {enum} {value}"))
        elif value == 0 and (kind, name) in _REQUIRED_ENUMS:
            problems.append(FieldViolation(f"{field}.{name}", "required"))
    if kind == "debt_collection_opened":
        if not detail.HasField("amount"):
            problems.append(FieldViolation(f"{field}.amount", "required"))
        else:
            claimed = money(detail.amount, field, None, "amount", problems)
            if claimed is not None and claimed.amount == 0:
                problems.append(FieldViolation(f"{field}.amount", "must be greater than 0"))
    elif kind in ("payment_remark_registered", "debt_collection_closed"):
        if detail.HasField("amount"):
            money(detail.amount, field, None, "amount", problems)  # refuses a negative one
    elif kind == "bankruptcy_hearing_scheduled":
        if not detail.HasField("hearing_date"):
            problems.append(FieldViolation(f"{field}.hearing_date", "required"))
        else:
            _date(detail.hearing_date, f"{field}.hearing_date", problems)  # future is fine
    elif kind == "address_changed":
        if not detail.HasField("new_address"):
            problems.append(FieldViolation(f"{field}.new_address", "required"))
    elif kind == "deleted_from_register" and detail.HasField("successor"):
        company(detail.successor, f"{field}.successor", problems)


def event(
    message: companies_pb2.CompanyEvent, field: str, problems: list[FieldViolation]
) -> CompanyEvent | None:
    """One event's `occurred_time` and `detail`, checked as companies.proto
    says: the parts that count for a prospect's events as much as for
    RecordEvents (`event_id`, `company` and `source` are RecordEvents' own to
    check). Appends violations under `field` (e.g. `events[3]`) and returns
    None if there are any."""
    found = len(problems)
    occurred = None
    if not message.HasField("occurred_time"):
        problems.append(FieldViolation(f"{field}.occurred_time", "required"))
    else:
        occurred = past_time(message.occurred_time, f"{field}.occurred_time", problems)
    kind = message.WhichOneof("detail")
    if kind is None or kind not in _DETAIL_TYPES:
        problems.append(FieldViolation(f"{field}.detail", "one event detail is required"))
        return None
    detail = getattr(message, kind)
    _detail_problems(kind, detail, f"{field}.{kind}", problems)
    if len(problems) > found:
        return None
    reference = str(getattr(detail, "remark_id", "") or getattr(detail, "case_id", ""))
    return CompanyEvent(_DETAIL_TYPES[kind], occurred, reference)


def events(messages: list[companies_pb2.CompanyEvent], field: str) -> list[CompanyEvent]:
    """Domain events, each checked as `event()` does; one InvalidArgument lists
    every problem of every event, named by its index (`field[i]....`)."""
    out: list[CompanyEvent] = []
    problems: list[FieldViolation] = []
    for i, message in enumerate(messages):
        converted = event(message, f"{field}[{i}]", problems)
        if converted is not None:
            out.append(converted)
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
