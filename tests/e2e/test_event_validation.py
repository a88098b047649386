"""Events that break CompanyEvent's contract (companies.proto) are refused.

RecordEvents answers INVALID_ARGUMENT with a `google.rpc.BadRequest` naming
each bad field (`events[i]....`), all problems of the call at once, and stores
nothing; ScoreFinancials and StreamScores apply the same rules to a
prospect's events (but for `event_id`, `company` and `source`, which do not
count there).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from google.type import date_pb2, money_pb2, postal_address_pb2

from creditwatch.v1 import (
    common_pb2,
    companies_pb2,
    companies_pb2_grpc,
    scoring_pb2,
    scoring_pb2_grpc,
)
from tests.conftest import TenantKey
from tests.e2e.alerting import ref
from tests.e2e.rpc_errors import field_violations
from tests.e2e.test_scoring import healthy
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio

_c = companies_pb2
_DETAILS = [f.name for f in _c.CompanyEvent.DESCRIPTOR.oneofs_by_name["detail"].fields]


def _stamp(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def _nok(units: int, nanos: int = 0, currency: str = "NOK") -> money_pb2.Money:
    return money_pb2.Money(currency_code=currency, units=units, nanos=nanos)


def _event(number: str, event_id: str = "ev-1", **fields: Any) -> companies_pb2.CompanyEvent:
    """A valid payment-remark event, with `fields` changed (None clears one)."""
    values: dict[str, Any] = dict(
        event_id=event_id,
        company=ref(number),
        occurred_time=_stamp(datetime(2026, 3, 2, tzinfo=UTC)),
        source="test",
    )
    if not any(name in fields for name in _DETAILS):
        values["payment_remark_registered"] = _c.PaymentRemarkRegistered(remark_id="r-1")
    values.update(fields)
    return _c.CompanyEvent(**{k: v for k, v in values.items() if v is not None})


_BAD_COMPANY = common_pb2.CompanyRef(country="NO", register_number="923609017")  # check digit

# (case, fields of the event changed, the violation's path under events[0]).
# Each one was accepted (or answered INTERNAL) before the contract was enforced.
BAD_EVENTS: list[tuple[str, dict[str, Any], str]] = [
    ("event_id of 129 characters", dict(event_id="e" * 129), "event_id"),
    ("no occurred_time", dict(occurred_time=None), "occurred_time"),
    (
        "occurred_time tomorrow",
        dict(occurred_time=_stamp(datetime.now(UTC) + timedelta(days=1))),
        "occurred_time",
    ),
    (
        "occurred_time beyond year 9999",
        dict(occurred_time=Timestamp(seconds=300_000_000_000)),
        "occurred_time",
    ),
    ("occurred_time with negative nanos", dict(occurred_time=Timestamp(nanos=-1)), "occurred_time"),
    ("source of 101 characters", dict(source="s" * 101), "source"),
    (
        "empty remark_id",
        dict(payment_remark_registered=_c.PaymentRemarkRegistered()),
        "payment_remark_registered.remark_id",
    ),
    (
        "remark_id of 129 characters",
        dict(payment_remark_registered=_c.PaymentRemarkRegistered(remark_id="r" * 129)),
        "payment_remark_registered.remark_id",
    ),
    (
        "negative remark amount",
        dict(
            payment_remark_registered=_c.PaymentRemarkRegistered(remark_id="r", amount=_nok(-5_000))
        ),
        "payment_remark_registered.amount.units",
    ),
    (
        "remark amount in a malformed currency",
        dict(
            payment_remark_registered=_c.PaymentRemarkRegistered(
                remark_id="r", amount=_nok(5_000, currency="nok")
            )
        ),
        "payment_remark_registered.amount.currency_code",
    ),
    (
        "unknown remark type",
        dict(payment_remark_registered=_c.PaymentRemarkRegistered(remark_id="r", remark_type=99)),  # type: ignore[arg-type]
        "payment_remark_registered.remark_type",
    ),
    (
        "creditor name of 201 characters",
        dict(
            payment_remark_registered=_c.PaymentRemarkRegistered(
                remark_id="r", creditor_name="c" * 201
            )
        ),
        "payment_remark_registered.creditor_name",
    ),
    (
        "removal without remark_id",
        dict(payment_remark_removed=_c.PaymentRemarkRemoved(reason=_c.REMARK_REMOVAL_REASON_PAID)),
        "payment_remark_removed.remark_id",
    ),
    (
        "unknown removal reason",
        dict(payment_remark_removed=_c.PaymentRemarkRemoved(remark_id="r", reason=7)),  # type: ignore[arg-type]
        "payment_remark_removed.reason",
    ),
    (
        "collection without case_id",
        dict(debt_collection_opened=_c.DebtCollectionOpened(amount=_nok(1_000))),
        "debt_collection_opened.case_id",
    ),
    (
        "collection without amount",
        dict(debt_collection_opened=_c.DebtCollectionOpened(case_id="c")),
        "debt_collection_opened.amount",
    ),
    (
        "collection of 0",
        dict(debt_collection_opened=_c.DebtCollectionOpened(case_id="c", amount=_nok(0))),
        "debt_collection_opened.amount",
    ),
    (
        "collection creditor name of 201 characters",
        dict(
            debt_collection_opened=_c.DebtCollectionOpened(
                case_id="c", amount=_nok(1), creditor_name="c" * 201
            )
        ),
        "debt_collection_opened.creditor_name",
    ),
    (
        "closing without case_id",
        dict(debt_collection_closed=_c.DebtCollectionClosed()),
        "debt_collection_closed.case_id",
    ),
    (
        "negative amount at closure",
        dict(debt_collection_closed=_c.DebtCollectionClosed(case_id="c", amount=_nok(0, -1))),
        "debt_collection_closed.amount.nanos",
    ),
    (
        "unknown collection outcome",
        dict(debt_collection_closed=_c.DebtCollectionClosed(case_id="c", outcome=9)),  # type: ignore[arg-type]
        "debt_collection_closed.outcome",
    ),
    (
        "unknown petitioner",
        dict(bankruptcy_petition_filed=_c.BankruptcyPetitionFiled(petitioner_type=9)),  # type: ignore[arg-type]
        "bankruptcy_petition_filed.petitioner_type",
    ),
    (
        "petition court of 201 characters",
        dict(bankruptcy_petition_filed=_c.BankruptcyPetitionFiled(court_name="c" * 201)),
        "bankruptcy_petition_filed.court_name",
    ),
    (
        "hearing without a date",
        dict(bankruptcy_hearing_scheduled=_c.BankruptcyHearingScheduled(court_name="Oslo")),
        "bankruptcy_hearing_scheduled.hearing_date",
    ),
    (
        "hearing on 30 February",
        dict(
            bankruptcy_hearing_scheduled=_c.BankruptcyHearingScheduled(
                court_name="Oslo", hearing_date=date_pb2.Date(year=2026, month=2, day=30)
            )
        ),
        "bankruptcy_hearing_scheduled.hearing_date",
    ),
    (
        "hearing without a court",
        dict(
            bankruptcy_hearing_scheduled=_c.BankruptcyHearingScheduled(
                hearing_date=date_pb2.Date(year=2026, month=3, day=9)
            )
        ),
        "bankruptcy_hearing_scheduled.court_name",
    ),
    (
        "hearing case number of 101 characters",
        dict(
            bankruptcy_hearing_scheduled=_c.BankruptcyHearingScheduled(
                court_name="Oslo",
                hearing_date=date_pb2.Date(year=2026, month=3, day=9),
                case_number="1" * 101,
            )
        ),
        "bankruptcy_hearing_scheduled.case_number",
    ),
    (
        "trustee name of 201 characters",
        dict(bankruptcy_opened=_c.BankruptcyOpened(trustee_name="t" * 201)),
        "bankruptcy_opened.trustee_name",
    ),
    (
        "unknown dissolution reason",
        dict(compulsory_dissolution=_c.CompulsoryDissolution(reason=99)),  # type: ignore[arg-type]
        "compulsory_dissolution.reason",
    ),
    (
        "liquidator name of 201 characters",
        dict(voluntary_liquidation=_c.VoluntaryLiquidation(liquidator_name="l" * 201)),
        "voluntary_liquidation.liquidator_name",
    ),
    (
        "person change without a role",
        dict(responsible_person_changed=_c.ResponsiblePersonChanged(new_person_name="Kari")),
        "responsible_person_changed.role",
    ),
    (
        "unknown role",
        dict(responsible_person_changed=_c.ResponsiblePersonChanged(role=42)),  # type: ignore[arg-type]
        "responsible_person_changed.role",
    ),
    (
        "unknown kind of role change",
        dict(
            responsible_person_changed=_c.ResponsiblePersonChanged(
                role=_c.RESPONSIBLE_ROLE_CEO,
                change_type=7,  # type: ignore[arg-type]
            )
        ),
        "responsible_person_changed.change_type",
    ),
    (
        "new person's name of 201 characters",
        dict(
            responsible_person_changed=_c.ResponsiblePersonChanged(
                role=_c.RESPONSIBLE_ROLE_CEO, new_person_name="n" * 201
            )
        ),
        "responsible_person_changed.new_person_name",
    ),
    (
        "address change without the new address",
        dict(address_changed=_c.AddressChanged()),
        "address_changed.new_address",
    ),
    (
        "unknown deletion reason",
        dict(deleted_from_register=_c.DeletedFromRegister(reason=8)),  # type: ignore[arg-type]
        "deleted_from_register.reason",
    ),
    (
        "successor with a wrong check digit",
        dict(deleted_from_register=_c.DeletedFromRegister(successor=_BAD_COMPANY)),
        "deleted_from_register.successor.register_number",
    ),
]


async def _company_unknown(channel: grpc.aio.Channel, feed: TenantKey, number: str) -> bool:
    try:
        await companies_pb2_grpc.CompanyDataServiceStub(channel).GetCompany(
            _c.GetCompanyRequest(name=f"companies/NO-{number}"), metadata=feed.metadata
        )
    except grpc.aio.AioRpcError as error:
        return error.code() == grpc.StatusCode.NOT_FOUND
    return False


@pytest.mark.parametrize(
    ("at", "fields", "path"),
    [pytest.param(at, fields, path, id=case) for at, (case, fields, path) in enumerate(BAD_EVENTS)],
)
async def test_record_events_refuses_an_event_against_the_contract(
    channel: grpc.aio.Channel, feed: TenantKey, at: int, fields: dict[str, Any], path: str
) -> None:
    (number,) = norwegian_numbers(1, start=82_100_000 + 1_000 * at)
    stub = companies_pb2_grpc.CompanyDataServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RecordEvents(
            _c.RecordEventsRequest(events=[_event(number, **fields)]), metadata=feed.metadata
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert list(field_violations(caught.value)) == [f"events[0].{path}"]
    assert await _company_unknown(channel, feed, number)


async def test_every_problem_of_a_call_is_named_at_once_and_nothing_is_stored(
    channel: grpc.aio.Channel, feed: TenantKey
) -> None:
    good, bad = norwegian_numbers(2, start=82_200_000)
    stub = companies_pb2_grpc.CompanyDataServiceStub(channel)
    events = [
        _event(good, "all-0"),
        _event(
            bad,
            "e" * 129,
            occurred_time=None,
            source="s" * 101,
            payment_remark_registered=_c.PaymentRemarkRegistered(amount=_nok(-1)),
        ),
        _event(good, "all-2"),
        _event(
            good,
            "all-3",
            occurred_time=Timestamp(seconds=10**12),
            debt_collection_opened=_c.DebtCollectionOpened(case_id="c"),
        ),
        _event(good, "all-2"),  # repeats events[2]
    ]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RecordEvents(_c.RecordEventsRequest(events=events), metadata=feed.metadata)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(caught.value)) == {
        "events[1].event_id",
        "events[1].occurred_time",
        "events[1].source",
        "events[1].payment_remark_registered.remark_id",
        "events[1].payment_remark_registered.amount.units",
        "events[3].occurred_time",
        "events[3].debt_collection_opened.amount",
        "events[4].event_id",
    }
    # The valid events of the refused call were not stored either.
    assert await _company_unknown(channel, feed, good)
    assert await _company_unknown(channel, feed, bad)


async def test_one_event_id_for_two_companies_is_two_events(
    channel: grpc.aio.Channel, feed: TenantKey
) -> None:
    first, second = norwegian_numbers(2, start=82_210_000)
    stub = companies_pb2_grpc.CompanyDataServiceStub(channel)
    # A register's update id covers several units: ids are unique per company.
    recorded = await stub.RecordEvents(
        _c.RecordEventsRequest(events=[_event(first, "upd-7"), _event(second, "upd-7")]),
        metadata=feed.metadata,
    )
    assert recorded.recorded_count == 2
    assert [e.company.register_number for e in recorded.effects] == [first, second]


def _at_the_limits(number: str) -> list[companies_pb2.CompanyEvent]:
    """One event of every kind, each field at the edge of what the contract allows."""
    name = "n" * 200
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    details: list[dict[str, Any]] = [
        dict(
            bankruptcy_petition_filed=_c.BankruptcyPetitionFiled(
                petitioner_type=_c.PETITIONER_TYPE_PUBLIC_AUTHORITY,
                court_name=name,
                case_number="1" * 100,
            )
        ),
        dict(
            bankruptcy_hearing_scheduled=_c.BankruptcyHearingScheduled(
                # "may be in the future"
                hearing_date=date_pb2.Date(
                    year=tomorrow.year, month=tomorrow.month, day=tomorrow.day
                ),
                court_name="c",
                case_number="1" * 100,
            )
        ),
        dict(
            bankruptcy_opened=_c.BankruptcyOpened(
                court_name=name, case_number="1" * 100, trustee_name=name
            )
        ),
        dict(compulsory_dissolution=_c.CompulsoryDissolution(court_name=name)),  # reason unknown
        dict(voluntary_liquidation=_c.VoluntaryLiquidation(liquidator_name=name)),
        dict(
            payment_remark_registered=_c.PaymentRemarkRegistered(
                remark_id="r" * 128, amount=_nok(0), creditor_name=name
            )
        ),
        dict(payment_remark_removed=_c.PaymentRemarkRemoved(remark_id="unknown-to-us")),
        dict(
            debt_collection_opened=_c.DebtCollectionOpened(
                case_id="c" * 128, amount=_nok(0, 1), creditor_name=name
            )
        ),
        dict(debt_collection_closed=_c.DebtCollectionClosed(case_id="c", amount=_nok(0))),
        dict(
            responsible_person_changed=_c.ResponsiblePersonChanged(
                role=_c.RESPONSIBLE_ROLE_OWNER, previous_person_name=name, new_person_name=name
            )
        ),
        dict(
            address_changed=_c.AddressChanged(
                new_address=postal_address_pb2.PostalAddress(region_code="NO", locality="Oslo")
            )
        ),
        dict(
            deleted_from_register=_c.DeletedFromRegister(
                reason=_c.DELETION_REASON_MERGED, successor=ref("923609016")
            )
        ),
    ]
    assert sorted(next(iter(d)) for d in details) == sorted(_DETAILS)
    just_now = _stamp(datetime.now(UTC) - timedelta(seconds=1))
    return [
        _event(
            number,
            f"{i:03d}" + "e" * 125,  # 128 characters
            source="s" * 100,
            occurred_time=just_now,
            **detail,
        )
        for i, detail in enumerate(details)
    ]


async def test_events_at_the_edges_of_the_contract_are_recorded(
    channel: grpc.aio.Channel, feed: TenantKey
) -> None:
    (number,) = norwegian_numbers(1, start=82_300_000)
    events = _at_the_limits(number)
    stub = companies_pb2_grpc.CompanyDataServiceStub(channel)
    recorded = await stub.RecordEvents(
        _c.RecordEventsRequest(events=events), metadata=feed.metadata
    )
    assert recorded.recorded_count == len(events)
    again = await stub.RecordEvents(_c.RecordEventsRequest(events=events), metadata=feed.metadata)
    assert list(again.duplicate_event_ids) == [e.event_id for e in events]


def _score_financials(
    channel: grpc.aio.Channel, tenant: TenantKey, *events: companies_pb2.CompanyEvent
) -> Any:
    return scoring_pb2_grpc.ScoringServiceStub(channel).ScoreFinancials(
        scoring_pb2.ScoreFinancialsRequest(financial_statement=healthy(), events=list(events)),
        metadata=tenant.metadata,
    )


async def test_score_financials_refuses_a_prospects_bad_events_by_field(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    (number,) = norwegian_numbers(1, start=82_400_000)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _score_financials(
            channel,
            tenant,
            _event(number, occurred_time=Timestamp(seconds=300_000_000_000)),
            _event(number, debt_collection_opened=_c.DebtCollectionOpened(case_id="c")),
            _event(number, payment_remark_registered=_c.PaymentRemarkRegistered(remark_id="")),
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(caught.value)) == {
        "events[0].occurred_time",
        "events[1].debt_collection_opened.amount",
        "events[2].payment_remark_registered.remark_id",
    }


async def test_a_prospects_event_needs_no_id_company_or_source(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    """ScoreFinancials ignores `event_id` and `company` (and the feed's
    `source`): only the time and the detail count for a prospect."""
    (number,) = norwegian_numbers(1, start=82_500_000)
    anonymous = _event(number, event_id="", company=None, source="s" * 300)
    reply = await _score_financials(channel, tenant, anonymous)
    assert "OVERRIDE_PAYMENT_REMARK" in [r.code for r in reply.score.reasons]


async def test_stream_scores_answers_an_items_bad_event_in_its_result(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    """An item's event out of Timestamp's range is that item's INVALID_ARGUMENT,
    not the end of the stream."""
    (number,) = norwegian_numbers(1, start=82_600_000)
    bad = _event(number, occurred_time=Timestamp(seconds=300_000_000_000))

    async def requests() -> AsyncIterator[scoring_pb2.StreamScoresRequest]:
        yield scoring_pb2.StreamScoresRequest(
            items=[
                scoring_pb2.ScoreItem(
                    correlation_id="bad", financial_statement=healthy(), events=[bad]
                ),
                scoring_pb2.ScoreItem(correlation_id="good", financial_statement=healthy()),
            ]
        )

    stub = scoring_pb2_grpc.ScoringServiceStub(channel)
    (response,) = [r async for r in stub.StreamScores(requests(), metadata=tenant.metadata)]
    failed, scored = response.results
    assert scored.HasField("score")
    assert failed.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    bad_request = error_details_pb2.BadRequest()
    (detail,) = failed.error.details
    assert detail.Unpack(bad_request)
    assert [v.field for v in bad_request.field_violations] == ["events[0].occurred_time"]


async def test_a_prospect_takes_at_most_100_events_and_a_company_item_none(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    (number,) = norwegian_numbers(1, start=82_800_000)
    remarks = [
        _event(number, f"r{i}", payment_remark_registered=_c.PaymentRemarkRegistered(remark_id="r"))
        for i in range(101)
    ]
    await _score_financials(channel, tenant, *remarks[:100])  # the limit itself is fine
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _score_financials(channel, tenant, *remarks)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(caught.value)) == {"events"}

    async def requests() -> AsyncIterator[scoring_pb2.StreamScoresRequest]:
        yield scoring_pb2.StreamScoresRequest(
            items=[
                scoring_pb2.ScoreItem(
                    correlation_id="many", financial_statement=healthy(), events=remarks
                ),
                scoring_pb2.ScoreItem(
                    correlation_id="company",
                    company=common_pb2.CompanyRef(country="NO", register_number=number),
                    events=remarks[:1],
                ),
            ]
        )

    stub = scoring_pb2_grpc.ScoringServiceStub(channel)
    (response,) = [r async for r in stub.StreamScores(requests(), metadata=tenant.metadata)]
    for result in response.results:
        assert result.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], result.correlation_id
        bad_request = error_details_pb2.BadRequest()
        (detail,) = result.error.details
        assert detail.Unpack(bad_request)
        assert [v.field for v in bad_request.field_violations] == ["events"]
