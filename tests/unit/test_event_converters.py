"""Company events across the wire: CompanyEvent's contract, checked per field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.type import date_pb2, money_pb2, postal_address_pb2
from hypothesis import given
from hypothesis import strategies as st

from creditwatch.server.api import converters as cv
from creditwatch.server.api import scoring_converters as sc
from creditwatch.server.domain.errors import InvalidArgument
from creditwatch.server.domain.events import EventType
from creditwatch.v1 import companies_pb2

_c = companies_pb2
_DETAIL_CASES = [f.name for f in _c.CompanyEvent.DESCRIPTOR.oneofs_by_name["detail"].fields]

# The least each detail needs, per companies.proto.
MINIMAL: dict[str, object] = {
    "bankruptcy_petition_filed": _c.BankruptcyPetitionFiled(),
    "bankruptcy_hearing_scheduled": _c.BankruptcyHearingScheduled(
        hearing_date=date_pb2.Date(year=2031, month=1, day=2), court_name="Oslo tingrett"
    ),
    "bankruptcy_opened": _c.BankruptcyOpened(),
    "compulsory_dissolution": _c.CompulsoryDissolution(),
    "voluntary_liquidation": _c.VoluntaryLiquidation(),
    "payment_remark_registered": _c.PaymentRemarkRegistered(remark_id="r-1"),
    "payment_remark_removed": _c.PaymentRemarkRemoved(remark_id="r-1"),
    "debt_collection_opened": _c.DebtCollectionOpened(
        case_id="c-1", amount=money_pb2.Money(currency_code="NOK", units=1)
    ),
    "debt_collection_closed": _c.DebtCollectionClosed(case_id="c-1"),
    "responsible_person_changed": _c.ResponsiblePersonChanged(role=_c.RESPONSIBLE_ROLE_CEO),
    "address_changed": _c.AddressChanged(
        new_address=postal_address_pb2.PostalAddress(region_code="NO")
    ),
    "deleted_from_register": _c.DeletedFromRegister(),
}


def _event(case: str, **fields: object) -> companies_pb2.CompanyEvent:
    values: dict[str, object] = {
        "occurred_time": Timestamp(seconds=1_700_000_000),
        case: MINIMAL[case],
    }
    values.update(fields)
    return _c.CompanyEvent(**values)  # type: ignore[arg-type]


def _violations(*events: companies_pb2.CompanyEvent) -> list[str]:
    with pytest.raises(InvalidArgument) as caught:
        sc.events(list(events), "events")
    return [v.field for v in caught.value.violations]


def test_every_detail_has_its_minimal_form_here() -> None:
    assert sorted(MINIMAL) == sorted(_DETAIL_CASES)


@pytest.mark.parametrize("case", _DETAIL_CASES)
def test_a_detail_with_what_the_contract_requires_is_accepted(case: str) -> None:
    (event,) = sc.events([_event(case)], "events")
    assert event.type == EventType[case.upper()]
    assert event.occurred_at == datetime.fromtimestamp(1_700_000_000, UTC)
    detail = MINIMAL[case]
    assert event.reference == getattr(detail, "remark_id", getattr(detail, "case_id", ""))


def _enum_fields() -> list[tuple[str, str, int]]:
    """(detail case, enum field, a number its enum does not have) of every enum in a detail."""
    out = []
    for case in _DETAIL_CASES:
        detail = _c.CompanyEvent.DESCRIPTOR.fields_by_name[case].message_type
        assert detail is not None
        for field in detail.fields:
            if field.enum_type is not None:
                out.append((case, field.name, max(field.enum_type.values_by_number) + 1))
    return out


@pytest.mark.parametrize(("case", "name", "unknown"), _enum_fields())
def test_an_unknown_enum_number_in_a_detail_is_refused_by_name(
    case: str, name: str, unknown: int
) -> None:
    event = _event(case)
    setattr(getattr(event, case), name, unknown)
    assert _violations(_event("bankruptcy_opened"), event) == [f"events[1].{case}.{name}"]


def _text_fields() -> list[tuple[str, str]]:
    """(detail case, string field) of every free-text field in a detail."""
    out = []
    for case in _DETAIL_CASES:
        detail = _c.CompanyEvent.DESCRIPTOR.fields_by_name[case].message_type
        assert detail is not None
        out += [(case, f.name) for f in detail.fields if f.type == f.TYPE_STRING]
    return out


@pytest.mark.parametrize(("case", "name"), _text_fields())
def test_every_text_in_a_detail_has_a_length_limit(case: str, name: str) -> None:
    """The contract limits each one to 100, 128 or 200 characters."""
    event = _event(case)
    setattr(getattr(event, case), name, "x" * 201)
    assert _violations(event) == [f"events[0].{case}.{name}"]


def test_a_prospects_event_is_checked_without_id_company_or_source() -> None:
    """What ScoreFinancials gets: no id, no company, any source; time and detail count."""
    event = _event("payment_remark_registered", source="s" * 1_000)
    assert len(sc.events([event], "events")) == 1
    no_time = _event("payment_remark_registered")
    no_time.ClearField("occurred_time")
    no_id = _event("payment_remark_registered")
    no_id.payment_remark_registered.remark_id = ""
    assert _violations(no_time, no_id) == [
        "events[0].occurred_time",
        "events[1].payment_remark_registered.remark_id",
    ]


@given(
    seconds=st.integers(-(2**63), 2**63 - 1) | st.integers(-62_135_596_801, 253_402_300_800),
    nanos=st.integers(-(2**31), 2**31 - 1) | st.integers(-1, 1_000_000_000),
)
def test_any_occurred_time_is_taken_or_refused_by_name_never_crashes(
    seconds: int, nanos: int
) -> None:
    event = _event("bankruptcy_opened", occurred_time=Timestamp(seconds=seconds, nanos=nanos))
    try:
        (converted,) = sc.events([event], "events")
    except InvalidArgument as error:
        assert [v.field for v in error.violations] == ["events[0].occurred_time"]
        return
    assert converted.occurred_at is not None
    assert converted.occurred_at <= datetime.now(UTC) + cv.CLOCK_SKEW  # not in the future
    assert 0 <= nanos < 1_000_000_000
    assert converted.occurred_at == Timestamp(seconds=seconds, nanos=nanos).ToDatetime(UTC)


def test_a_clock_a_little_fast_is_not_reporting_the_future() -> None:
    def at(offset: timedelta) -> Timestamp:
        stamp = Timestamp()
        stamp.FromDatetime(datetime.now(UTC) + offset)
        return stamp

    (taken,) = sc.events([_event("bankruptcy_opened", occurred_time=at(timedelta(minutes=1)))], "e")
    assert taken.occurred_at is not None
    with pytest.raises(InvalidArgument) as refused:
        sc.events([_event("bankruptcy_opened", occurred_time=at(cv.CLOCK_SKEW * 2))], "e")
    assert [v.field for v in refused.value.violations] == ["e[0].occurred_time"]
