"""CompanyDataService intake: each fact is stored and the company re-scored in one call."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from creditwatch.server.store import database
from creditwatch.v1 import (
    common_pb2,
    companies_pb2,
    companies_pb2_grpc,
    scoring_pb2,
    scoring_pb2_grpc,
)
from tests.conftest import TenantKey
from tests.e2e.rpc_errors import field_violations
from tests.e2e.test_scoring import distressed, healthy
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio


def _ref(number: str) -> common_pb2.CompanyRef:
    return common_pb2.CompanyRef(country="NO", register_number=number)


def _event(number: str, event_id: str, day: int, **detail: object) -> companies_pb2.CompanyEvent:
    ts = Timestamp()
    ts.FromDatetime(datetime(2026, 5, day, tzinfo=UTC))
    return companies_pb2.CompanyEvent(
        event_id=event_id,
        company=_ref(number),
        occurred_time=ts,
        source="test",
        **detail,  # type: ignore[arg-type]
    )


async def test_statement_then_events_rescore_the_company(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    data = companies_pb2_grpc.CompanyDataServiceStub(channel)
    scoring = scoring_pb2_grpc.ScoringServiceStub(channel)
    number = norwegian_numbers(1, start=97_100_000)[0]

    first = await data.SubmitFinancialStatement(
        companies_pb2.SubmitFinancialStatementRequest(
            company=_ref(number), financial_statement=healthy()
        ),
        metadata=feed.metadata,
    )
    assert not first.replaced
    assert first.effect.score.risk_class < 4
    assert not first.effect.HasField("previous_score")

    # Any tenant reads the current score without running the model.
    looked_up = await scoring.ScoreCompany(
        scoring_pb2.ScoreCompanyRequest(company=_ref(number)), metadata=tenant.metadata
    )
    assert not looked_up.computed
    assert looked_up.score.probability_of_default == pytest.approx(
        first.effect.score.probability_of_default
    )

    worse = await data.SubmitFinancialStatement(
        companies_pb2.SubmitFinancialStatementRequest(
            company=_ref(number), financial_statement=distressed()
        ),
        metadata=feed.metadata,
    )
    assert worse.replaced  # same period end: the statement is replaced
    assert worse.effect.score.risk_class == 4
    assert worse.effect.previous_score.risk_class == first.effect.score.risk_class

    events = companies_pb2.RecordEventsRequest(
        events=[
            _event(
                number,
                "bo-1",
                2,
                bankruptcy_opened=companies_pb2.BankruptcyOpened(court_name="Oslo tingrett"),
            )
        ]
    )
    recorded = await data.RecordEvents(events, metadata=feed.metadata)
    assert recorded.recorded_count == 1
    (effect,) = recorded.effects
    assert effect.score.risk_class == 4
    assert "OVERRIDE_BANKRUPTCY" in [r.code for r in effect.score.reasons]

    again = await data.RecordEvents(events, metadata=feed.metadata)
    assert (again.recorded_count, list(again.duplicate_event_ids), len(again.effects)) == (
        0,
        ["bo-1"],
        0,
    )


async def test_events_alone_decide_a_class_only_when_they_force_one(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    data = companies_pb2_grpc.CompanyDataServiceStub(channel)
    scoring = scoring_pb2_grpc.ScoringServiceStub(channel)
    remark_only, bankrupt_only = norwegian_numbers(2, start=97_200_000)
    await data.RecordEvents(
        companies_pb2.RecordEventsRequest(
            events=[
                _event(
                    remark_only,
                    "pr-1",
                    3,
                    payment_remark_registered=companies_pb2.PaymentRemarkRegistered(remark_id="r"),
                ),
                _event(
                    bankrupt_only,
                    "cd-1",
                    4,
                    compulsory_dissolution=companies_pb2.CompulsoryDissolution(),
                ),
            ]
        ),
        metadata=feed.metadata,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await scoring.ScoreCompany(
            scoring_pb2.ScoreCompanyRequest(company=_ref(remark_only)), metadata=tenant.metadata
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    got = await scoring.ScoreCompany(
        scoring_pb2.ScoreCompanyRequest(company=_ref(bankrupt_only)), metadata=tenant.metadata
    )
    assert got.score.risk_class == 4
    assert "OVERRIDE_COMPULSORY_DISSOLUTION" in [r.code for r in got.score.reasons]


async def test_intake_needs_the_grant_and_valid_input(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    data = companies_pb2_grpc.CompanyDataServiceStub(channel)
    number = norwegian_numbers(1, start=97_300_000)[0]
    request = companies_pb2.SubmitFinancialStatementRequest(
        company=_ref(number), financial_statement=healthy()
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await data.SubmitFinancialStatement(request, metadata=tenant.metadata)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED

    bad = companies_pb2.SubmitFinancialStatementRequest(
        company=_ref("923609017"), financial_statement=healthy(total_assets=0)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await data.SubmitFinancialStatement(bad, metadata=feed.metadata)
    # Every problem of the call at once: the company's and the statement's.
    assert {"company.register_number", "financial_statement.total_assets"} <= set(
        field_violations(caught.value)
    )

    duplicate_ids = companies_pb2.RecordEventsRequest(
        events=[
            _event(number, "x", 1, bankruptcy_opened=companies_pb2.BankruptcyOpened()),
            _event(number, "x", 2, bankruptcy_opened=companies_pb2.BankruptcyOpened()),
            companies_pb2.CompanyEvent(event_id="y", company=_ref(number)),
        ]
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await data.RecordEvents(duplicate_ids, metadata=feed.metadata)
    assert {"events[1].event_id", "events[2].detail"} <= set(field_violations(caught.value))
    # Nothing of the refused call was written: the company is still unknown.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await scoring_pb2_grpc.ScoringServiceStub(channel).ScoreCompany(
            scoring_pb2.ScoreCompanyRequest(company=_ref(number)), metadata=tenant.metadata
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_statements_source_is_at_most_100_characters(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    data = companies_pb2_grpc.CompanyDataServiceStub(channel)
    (number,) = norwegian_numbers(1, start=82_700_000)
    too_long = companies_pb2.SubmitFinancialStatementRequest(
        company=_ref(number), financial_statement=healthy(), source="s" * 101
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await data.SubmitFinancialStatement(too_long, metadata=feed.metadata)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(field_violations(caught.value)) == ["source"]
    # Nothing was stored: the company is still unknown.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await data.GetCompany(
            companies_pb2.GetCompanyRequest(name=f"companies/NO-{number}"), metadata=tenant.metadata
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    too_long.source = "s" * 100
    stored = await data.SubmitFinancialStatement(too_long, metadata=feed.metadata)
    assert not stored.replaced and stored.effect.HasField("score")


async def test_get_company_shows_latest_statement_and_score(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    data = companies_pb2_grpc.CompanyDataServiceStub(channel)
    number = norwegian_numbers(1, start=97_600_000)[0]
    statement = healthy()
    submitted = await data.SubmitFinancialStatement(
        companies_pb2.SubmitFinancialStatementRequest(
            company=_ref(number), financial_statement=statement
        ),
        metadata=feed.metadata,
    )
    got = (
        await data.GetCompany(
            companies_pb2.GetCompanyRequest(name=f"companies/NO-{number}"), metadata=tenant.metadata
        )
    ).company
    assert got.name == f"companies/NO-{number}"
    assert got.latest_financial_statement == statement  # every reported item round-trips
    assert got.latest_score.probability_of_default == pytest.approx(
        submitted.effect.score.probability_of_default
    )
    for name, code in [
        (f"companies/NO-{norwegian_numbers(2, start=97_700_000)[1]}", grpc.StatusCode.NOT_FOUND),
        ("companies/NO-923609017", grpc.StatusCode.INVALID_ARGUMENT),
        ("company/NO-923609016", grpc.StatusCode.INVALID_ARGUMENT),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await data.GetCompany(
                companies_pb2.GetCompanyRequest(name=name), metadata=tenant.metadata
            )
        assert caught.value.code() == code, name


async def test_an_intake_that_loses_its_connection_is_unavailable_and_stores_nothing(
    channel: grpc.aio.Channel, feed: TenantKey, database_url: str
) -> None:
    """The connection dies under a running intake: the caller gets UNAVAILABLE
    (worth retrying, not INTERNAL), nothing of the call is stored, and the
    next call works on a fresh connection."""
    (number,) = norwegian_numbers(1, start=89_100_000)
    stub = companies_pb2_grpc.CompanyDataServiceStub(channel)

    def request(event_id: str, day: int) -> companies_pb2.RecordEventsRequest:
        remark = companies_pb2.PaymentRemarkRegistered(remark_id=event_id)
        return companies_pb2.RecordEventsRequest(
            events=[_event(number, event_id, day, payment_remark_registered=remark)]
        )

    await stub.RecordEvents(request("lost-1", 1), metadata=feed.metadata)
    holder = await asyncpg.connect(**database.connect_kwargs(database.async_url(database_url)))
    try:
        async with holder.transaction():
            # Hold the company's row: the next intake waits for it, mid-transaction.
            await holder.execute(
                "SELECT 1 FROM companies WHERE country = 'NO' AND register_number = $1 FOR UPDATE",
                number,
            )
            # A grpc.aio call starts when made; awaited below.
            call = stub.RecordEvents(request("lost-2", 2), metadata=feed.metadata)
            waiting: list[asyncpg.Record] = []
            for _ in range(200):
                # The server's backend waiting for our lock (its query text and
                # state can still show the previous statement: not filtered on).
                waiting = await holder.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                )
                if waiting:
                    break
                await asyncio.sleep(0.02)
            assert len(waiting) == 1
            await holder.execute("SELECT pg_terminate_backend($1)", waiting[0]["pid"])
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await asyncio.wait_for(call, 20)
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE, failed.value.details()
        stored = await holder.fetchval(
            "SELECT count(*) FROM company_events"
            " WHERE register_number = $1 AND event_id = 'lost-2'",
            number,
        )
        assert stored == 0
        again = await stub.RecordEvents(request("lost-2", 2), metadata=feed.metadata)
        assert again.recorded_count == 1
    finally:
        await holder.close()
