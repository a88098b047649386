"""Protobuf ⇄ domain conversion for shared types and watch lists.

Parsing collects every problem as a field violation with its full request path
(e.g. `entries[17].company.register_number`) so a client can fix a whole batch
from one error.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import re
import uuid
from collections.abc import Sequence
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp
from google.type import date_pb2, money_pb2

from creditwatch.server.domain.errors import FieldViolation, InvalidArgument
from creditwatch.server.domain.identifiers import CompanyId, IdentifierError, company_id
from creditwatch.server.domain.money import Money, MoneyError
from creditwatch.server.domain.scores import StoredScore
from creditwatch.server.domain.watchlists import (
    MAX_EXTERNAL_REFERENCE,
    NUL,
    NUL_REFUSED,
    AlertRules,
    Entry,
    EntryColumns,
    WatchList,
    WatchListSpec,
    validate_labels,
)
from creditwatch.v1 import common_pb2, watchlists_pb2

_WATCH_LIST_NAME = re.compile(r"watchLists/([0-9a-fA-F-]{36})")
_ENTRY_NAME = re.compile(r"watchLists/([0-9a-fA-F-]{36})/entries/([A-Za-z]{2}-[0-9A-Za-z\- ]+)")


def timestamp(value: datetime | None) -> Timestamp | None:
    """A protobuf Timestamp, or None for None."""
    return None if value is None else _timestamp(value)


def _timestamp(value: datetime) -> Timestamp:
    # Faster than Timestamp.FromDatetime, which matters on 10,000-entry pages.
    seconds = calendar.timegm(value.utctimetuple())
    return Timestamp(seconds=seconds, nanos=value.microsecond * 1000)


def _memo_timestamp(value: datetime, times: dict[datetime, Timestamp]) -> Timestamp:
    converted = times.get(value)
    if converted is None:
        converted = times[value] = _timestamp(value)
    return converted


def watch_list_id(name: str, field: str) -> uuid.UUID:
    """The id in "watchLists/{id}"; INVALID_ARGUMENT naming `field` if malformed."""
    match = _WATCH_LIST_NAME.fullmatch(name)
    if match is None:
        raise InvalidArgument.single(field, "must be a resource name 'watchLists/{id}'")
    try:
        return uuid.UUID(match[1])
    except ValueError:
        raise InvalidArgument.single(field, "watch list id is not a UUID") from None


def entry_name(name: str, field: str) -> tuple[uuid.UUID, CompanyId]:
    """(watch list id, company) from "watchLists/{id}/entries/{country}-{number}"."""
    match = _ENTRY_NAME.fullmatch(name)
    if match is None:
        raise InvalidArgument.single(
            field, "must be 'watchLists/{id}/entries/{country}-{register_number}'"
        )
    list_id = watch_list_id(f"watchLists/{match[1]}", field)
    try:
        return list_id, CompanyId.parse_key(match[2])
    except IdentifierError as error:
        raise InvalidArgument.single(field, error.description) from None


def company(
    ref: common_pb2.CompanyRef, field: str, problems: list[FieldViolation]
) -> CompanyId | None:
    """Validate a CompanyRef; appends a violation and returns None if bad."""
    try:
        return company_id(ref.country, ref.register_number)
    except IdentifierError as error:
        problems.append(FieldViolation(f"{field}.{error.field}", error.description))
        return None


def money(
    message: money_pb2.Money,
    field: str,
    index: int | None,
    name: str,
    problems: list[FieldViolation],
) -> Money | None:
    """Validate a non-negative google.type.Money at `field[index].name` (or
    `field.name` without an index); appends a violation and returns None if bad."""
    try:
        return Money.from_parts(message.currency_code, message.units, message.nanos)
    except MoneyError as error:
        where = f"{field}[{index}].{name}" if index is not None else f"{field}.{name}"
        problems.append(FieldViolation(f"{where}.{error.field}", error.description))
        return None


def past_date(value: date_pb2.Date, field: str, problems: list[FieldViolation]) -> dt.date | None:
    """A complete calendar date not after today (UTC); appends a violation and
    returns None otherwise."""
    try:
        day = dt.date(value.year, value.month, value.day)
    except ValueError:
        problems.append(FieldViolation(field, "must be a complete calendar date"))
        return None
    if day > dt.datetime.now(dt.UTC).date():
        problems.append(FieldViolation(field, "must not be in the future"))
        return None
    return day


# google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z..9999-12-31T23:59:59.999999999Z.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799


CLOCK_SKEW = dt.timedelta(minutes=5)
"""How far ahead of ours a sender's clock may be: a feed that sends "now"
from a clock a little fast is not refused for reporting the future."""


def past_time(value: Timestamp, field: str, problems: list[FieldViolation]) -> datetime | None:
    """A Timestamp within its documented range and not after now, as an aware
    UTC datetime; appends a violation and returns None otherwise."""
    if not (_MIN_SECONDS <= value.seconds <= _MAX_SECONDS and 0 <= value.nanos <= 999_999_999):
        # Checked here: ToDatetime raises a plain ValueError, which would answer INTERNAL.
        problems.append(
            FieldViolation(
                field, "must be a Timestamp from year 0001 to 9999, nanos 0 to 999,999,999"
            )
        )
        return None
    when = value.ToDatetime(dt.UTC)
    if when > dt.datetime.now(dt.UTC) + CLOCK_SKEW:
        problems.append(FieldViolation(field, "must not be in the future"))
        return None
    return when


def money_message(value: Money) -> money_pb2.Money:
    """google.type.Money for a domain amount."""
    currency, units, nanos = value.to_parts()
    return money_pb2.Money(currency_code=currency, units=units, nanos=nanos)


def company_ref(value: CompanyId) -> common_pb2.CompanyRef:
    """The wire form of a validated company."""
    return common_pb2.CompanyRef(country=value.country, register_number=value.register_number)


def score_message(
    score: StoredScore, of: CompanyId | None, times: dict[datetime, Timestamp] | None = None
) -> common_pb2.Score:
    """The wire form of a stored score. `times`, when given, memoises the
    conversion of times that many scores share (a batch's score and as-of times)."""
    message = common_pb2.Score()
    fill_score(message, score, of, {} if times is None else times)
    return message


def fill_score(
    message: common_pb2.Score,
    score: StoredScore,
    of: CompanyId | None,
    times: dict[datetime, Timestamp],
) -> None:
    """Write `score` into an empty Score message in place (a stream's result
    message, say: building a Score and copying it in costs twice as much).
    `times` memoises the Timestamps of the times many scores share."""
    message.probability_of_default = score.probability_of_default
    message.risk_class = score.risk_class  # type: ignore[assignment]  # IntEnum = wire value
    message.model_risk_class = score.model_risk_class  # type: ignore[assignment]
    message.model_version = score.model_version
    add = message.reasons.add
    for reason in score.reasons:
        add(
            code=reason.code,
            description=reason.description,
            kind=reason.kind,
            pd_contribution=reason.pd_contribution,
        )
    if score.data_as_of is not None:
        message.data_as_of.CopyFrom(_memo_timestamp(score.data_as_of, times))
    message.score_time.CopyFrom(_memo_timestamp(score.score_time, times))
    if of is not None:
        message.company.CopyFrom(company_ref(of))


def alert_rules(message: watchlists_pb2.AlertRules) -> AlertRules:
    """Domain alert rules; unknown enum numbers are caught by the caller's validation."""
    return AlertRules(
        alert_types=tuple(int(t) for t in message.alert_types),
        minimum_severity=int(message.minimum_severity),
        minimum_class_change=message.minimum_class_change,
    )


def alert_rules_problems(message: watchlists_pb2.AlertRules, field: str) -> list[FieldViolation]:
    """Enum values this server does not know (a newer client, or garbage)."""
    problems: list[FieldViolation] = []
    known_types = set(common_pb2.AlertType.values())
    for i, value in enumerate(message.alert_types):
        if value not in known_types or value == 0:
            problems.append(
                FieldViolation(f"{field}.alert_types[{i}]", f"unknown alert type {value}")
            )
    if message.minimum_severity not in set(common_pb2.Severity.values()):
        problems.append(
            FieldViolation(
                f"{field}.minimum_severity", f"unknown severity {message.minimum_severity}"
            )
        )
    return problems


def watch_list_spec(message: watchlists_pb2.WatchList) -> WatchListSpec:
    """The settable fields of a WatchList message."""
    return WatchListSpec(
        display_name=message.display_name,
        description=message.description,
        pd_threshold=message.pd_threshold,
        alert_rules=alert_rules(message.alert_rules),
        labels=dict(message.labels),
    )


def watch_list_message(value: WatchList) -> watchlists_pb2.WatchList:
    """The wire form of a stored watch list."""
    spec = value.spec
    return watchlists_pb2.WatchList(
        name=f"watchLists/{value.id}",
        display_name=spec.display_name,
        description=spec.description,
        pd_threshold=spec.pd_threshold,
        alert_rules=watchlists_pb2.AlertRules(
            alert_types=[common_pb2.AlertType.ValueType(t) for t in spec.alert_rules.alert_types],
            minimum_severity=common_pb2.Severity.ValueType(spec.alert_rules.minimum_severity),
            minimum_class_change=spec.alert_rules.minimum_class_change,
        ),
        entry_count=value.entry_count,
        labels=spec.labels,
        create_time=timestamp(value.create_time),
        update_time=timestamp(value.update_time),
    )


def entry_columns(entries: Sequence[watchlists_pb2.WatchListEntry], field: str) -> EntryColumns:
    """Validate a batch of entries into columns; one InvalidArgument lists every problem.

    This runs for every entry of 10,000-entry calls, so paths are only
    formatted when something is wrong, and each distinct label set is validated
    and encoded once.
    """
    problems: list[FieldViolation] = []
    columns = EntryColumns()
    first_index: dict[CompanyId, int] = {}
    labels_cache: dict[tuple[tuple[str, str], ...], str] = {}
    for i, entry in enumerate(entries):
        found: CompanyId | None = None
        if not entry.HasField("company"):
            problems.append(FieldViolation(f"{field}[{i}].company", "required"))
        else:
            ref = entry.company
            try:
                found = company_id(ref.country, ref.register_number)
            except IdentifierError as error:
                problems.append(
                    FieldViolation(f"{field}[{i}].company.{error.field}", error.description)
                )
        exposure = limit = None
        if entry.HasField("exposure"):
            exposure = money(entry.exposure, field, i, "exposure", problems)
        if entry.HasField("credit_limit"):
            limit = money(entry.credit_limit, field, i, "credit_limit", problems)
        reference = entry.external_reference
        if len(reference) > MAX_EXTERNAL_REFERENCE:
            problems.append(
                FieldViolation(
                    f"{field}[{i}].external_reference", f"longer than {MAX_EXTERNAL_REFERENCE}"
                )
            )
        elif NUL in reference:
            problems.append(FieldViolation(f"{field}[{i}].external_reference", NUL_REFUSED))
        key = tuple(sorted(entry.labels.items())) if entry.labels else ()
        encoded = labels_cache.get(key)
        if encoded is None:
            label_problems = validate_labels(dict(key), f"{field}[{i}].labels")
            if label_problems:
                problems.extend(label_problems)
            else:
                encoded = labels_cache[key] = json.dumps(dict(key))
        if found is None:
            continue
        earlier = first_index.setdefault(found, i)
        if earlier != i:
            problems.append(
                FieldViolation(
                    f"{field}[{i}].company", f"duplicate of {field}[{earlier}] in this call"
                )
            )
            continue
        if encoded is None or problems:
            continue  # refused anyway: the columns are not needed
        columns.countries.append(found.country)
        columns.register_numbers.append(found.register_number)
        columns.exposure_currencies.append(exposure.currency if exposure else None)
        columns.exposure_amounts.append(exposure.amount if exposure else None)
        columns.limit_currencies.append(limit.currency if limit else None)
        columns.limit_amounts.append(limit.amount if limit else None)
        columns.external_references.append(reference)
        columns.labels_json.append(encoded)
    if problems:
        raise InvalidArgument(problems)
    return columns


def entry_message(value: Entry) -> watchlists_pb2.WatchListEntry:
    """The wire form of a stored entry."""
    spec = value.spec
    message = watchlists_pb2.WatchListEntry(
        name=f"watchLists/{value.watch_list_id}/entries/{spec.company.key}",
        company=company_ref(spec.company),
        external_reference=spec.external_reference,
        labels=spec.labels,
        create_time=timestamp(value.create_time),
        update_time=timestamp(value.update_time),
    )
    if spec.exposure is not None:
        message.exposure.CopyFrom(money_message(spec.exposure))
    if spec.credit_limit is not None:
        message.credit_limit.CopyFrom(money_message(spec.credit_limit))
    if value.latest_score is not None:
        message.latest_score.CopyFrom(score_message(value.latest_score, spec.company))
    return message
