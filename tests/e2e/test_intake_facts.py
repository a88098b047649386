"""Intake facts that must not be lost, doubled or undone: identical statements,
statuses set by UpsertCompany, late reports of old events, invoices that move."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.domain.tenants import SCOPE_COMPANIES_WRITE
from creditwatch.v1 import (
    alerts_pb2,
    alerts_pb2_grpc,
    common_pb2,
    companies_pb2,
    companies_pb2_grpc,
    scoring_pb2,
    scoring_pb2_grpc,
)
from tests.conftest import TenantKey, new_tenant
from tests.e2e.alerting import record, ref, watch
from tests.e2e.test_company_master import _invoice
from tests.e2e.test_scoring import healthy
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio


async def _alert_types(
    channel: grpc.aio.Channel, tenant: TenantKey, watch_list: str
) -> list[common_pb2.AlertType.ValueType]:
    """The watch list's alerts, oldest first."""
    listed = await alerts_pb2_grpc.AlertServiceStub(channel).ListAlerts(
        alerts_pb2.ListAlertsRequest(
            filter=alerts_pb2.AlertFilter(watch_lists=[watch_list]), page_size=100
        ),
        metadata=tenant.metadata,
    )
    return [a.type for a in reversed(listed.alerts)]


async def _submit(
    data: companies_pb2_grpc.CompanyDataServiceStub,
    feed: TenantKey,
    number: str,
    statement: companies_pb2.FinancialStatement,
) -> companies_pb2.SubmitFinancialStatementResponse:
    response: companies_pb2.SubmitFinancialStatementResponse = await data.SubmitFinancialStatement(
        companies_pb2.SubmitFinancialStatementRequest(
            company=ref(number), financial_statement=statement
        ),
        metadata=feed.metadata,
    )
    return response


async def _status(
    data: companies_pb2_grpc.CompanyDataServiceStub,
    feed: TenantKey,
    number: str,
    status: companies_pb2.CompanyStatus.ValueType,
) -> companies_pb2.UpsertCompanyResponse:
    response: companies_pb2.UpsertCompanyResponse = await data.UpsertCompany(
        companies_pb2.UpsertCompanyRequest(
            company=companies_pb2.Company(company=ref(number), status=status)
        ),
        metadata=feed.metadata,
    )
    return response


async def _registered_status(
    data: companies_pb2_grpc.CompanyDataServiceStub, tenant: TenantKey, number: str
) -> companies_pb2.CompanyStatus.ValueType:
    got = await data.GetCompany(
        companies_pb2.GetCompanyRequest(name=f"companies/NO-{number}"), metadata=tenant.metadata
    )
    return got.company.status


def _event(
    number: str, event_id: str, day: date | None = None, **detail: object
) -> companies_pb2.CompanyEvent:
    """An event about a company dated `day` (None: today) at 00:00 UTC, as
    registers date them."""
    stamp = Timestamp()
    stamp.FromDatetime(datetime.combine(day or datetime.now(UTC).date(), time(), UTC))
    return companies_pb2.CompanyEvent(
        event_id=event_id,
        company=ref(number),
        occurred_time=stamp,
        source="test",
        **detail,  # type: ignore[arg-type]
    )


async def test_an_identical_statement_again_changes_nothing_and_raises_no_alert(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    number = norwegian_numbers(1, start=91_100_000)[0]
    data = companies_pb2_grpc.CompanyDataServiceStub(channel)
    first = await _submit(data, feed, number, healthy())
    watch_list = await watch(channel, tenant, [number])

    again = await _submit(data, feed, number, healthy())
    assert again.replaced
    assert again.effect.alerts_raised_count == 0
    assert again.effect.score == first.effect.score  # not even a new score row
    assert await _alert_types(channel, tenant, watch_list) == []

    # One item different is a restatement: stored, re-scored and alerted.
    restated = await _submit(data, feed, number, healthy(net_profit=-2_000_000))
    assert restated.replaced
    assert restated.effect.score.score_time != first.effect.score.score_time
    assert common_pb2.ALERT_TYPE_FINANCIAL_STATEMENT_PUBLISHED in await _alert_types(
        channel, tenant, watch_list
    )


async def test_a_bankrupt_status_is_handled_like_a_bankruptcy_event_dated_now(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    number = norwegian_numbers(1, start=91_200_000)[0]
    data = companies_pb2_grpc.CompanyDataServiceStub(channel)
    await _submit(data, feed, number, healthy())
    await _status(data, feed, number, companies_pb2.COMPANY_STATUS_ACTIVE)
    watch_list = await watch(channel, tenant, [number])

    bankrupt = await _status(data, feed, number, companies_pb2.COMPANY_STATUS_BANKRUPT)
    assert bankrupt.effect.score.risk_class == common_pb2.RISK_CLASS_D
    assert sorted(await _alert_types(channel, tenant, watch_list)) == sorted(
        [common_pb2.ALERT_TYPE_BANKRUPTCY_OPENED, common_pb2.ALERT_TYPE_RISK_CLASS_DOWNGRADE]
    )

    # A register feed reports, late, a liquidation resolved years ago: it is
    # history, not the company's status now, and does not lift class D.
    late = _event(
        number,
        f"{number}-liquidation-2019",
        date(2019, 3, 1),
        voluntary_liquidation=companies_pb2.VoluntaryLiquidation(),
    )
    effect = (await record(channel, feed, late)).effects[0]
    assert effect.score.risk_class == common_pb2.RISK_CLASS_D
    assert await _registered_status(data, tenant, number) == companies_pb2.COMPANY_STATUS_BANKRUPT
    assert common_pb2.ALERT_TYPE_RISK_CLASS_UPGRADE not in await _alert_types(
        channel, tenant, watch_list
    )

    # The same status again is a retry: nothing new.
    repeat = await _status(data, feed, number, companies_pb2.COMPANY_STATUS_BANKRUPT)
    assert repeat.effect.alerts_raised_count == 0


async def test_a_newer_event_still_sets_the_status(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    number = norwegian_numbers(1, start=91_300_000)[0]
    data = companies_pb2_grpc.CompanyDataServiceStub(channel)
    await _submit(data, feed, number, healthy())

    liquidation = companies_pb2.VoluntaryLiquidation()
    await record(
        channel,
        feed,
        _event(number, f"{number}-liq", date(2026, 5, 2), voluntary_liquidation=liquidation),
    )
    opened = companies_pb2.BankruptcyOpened()
    await record(
        channel,
        feed,
        _event(number, f"{number}-bankrupt", date(2026, 5, 9), bankruptcy_opened=opened),
    )
    assert await _registered_status(data, tenant, number) == companies_pb2.COMPANY_STATUS_BANKRUPT


async def test_an_invoice_moved_to_another_company_re_scores_the_one_it_left(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey, other_tenant: TenantKey
) -> None:
    left, taken = norwegian_numbers(2, start=91_400_000)
    data = companies_pb2_grpc.CompanyDataServiceStub(channel)
    scoring = scoring_pb2_grpc.ScoringServiceStub(channel)
    for number in (left, taken):
        await _submit(data, feed, number, healthy())
    watch_list = await watch(channel, tenant, [left, taken])
    # Another creditor's overdue invoice on each: the pooled invoices count
    # wherever the tenant's invoice makes it two creditors.
    for number in (left, taken):
        alone = await data.ReportPaymentExperience(
            companies_pb2.ReportPaymentExperienceRequest(
                payment_experience=_invoice(number, f"OTHER-{number}", 150, 20_000)
            ),
            metadata=other_tenant.metadata,
        )
        assert not any(r.code == "OVERRIDE_OVERDUE_PAYMENTS" for r in alone.effect.score.reasons)

    await data.ReportPaymentExperience(
        companies_pb2.ReportPaymentExperienceRequest(
            payment_experience=_invoice(left, "INV-MOVE", 200, 50_000)
        ),
        metadata=tenant.metadata,
    )
    overdue = await scoring.ScoreCompany(
        scoring_pb2.ScoreCompanyRequest(company=ref(left)), metadata=tenant.metadata
    )
    assert any(r.code == "OVERRIDE_OVERDUE_PAYMENTS" for r in overdue.score.reasons)

    # The creditor corrects the invoice's debtor.
    moved = await data.ReportPaymentExperience(
        companies_pb2.ReportPaymentExperienceRequest(
            payment_experience=_invoice(taken, "INV-MOVE", 200, 50_000)
        ),
        metadata=tenant.metadata,
    )
    assert any(r.code == "OVERRIDE_OVERDUE_PAYMENTS" for r in moved.effect.score.reasons)
    after = await scoring.ScoreCompany(
        scoring_pb2.ScoreCompanyRequest(company=ref(left)), metadata=tenant.metadata
    )
    assert not any(r.code == "OVERRIDE_OVERDUE_PAYMENTS" for r in after.score.reasons)
    assert after.score.risk_class == overdue.score.risk_class - 1
    types = await _alert_types(channel, tenant, watch_list)
    assert types.count(common_pb2.ALERT_TYPE_RISK_CLASS_UPGRADE) == 1  # the company left


async def test_event_ids_are_each_senders_own(
    channel: grpc.aio.Channel, feed: TenantKey, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Two feeds that number their events alike do not collide; each feed's
    own repeat is a duplicate, or refused when its content differs."""
    number = norwegian_numbers(1, start=91_700_000)[0]
    other = await new_tenant(sessions, "second bureau", scopes=(SCOPE_COMPANIES_WRITE,))

    def remark(reference: str) -> companies_pb2.CompanyEvent:
        registered = companies_pb2.PaymentRemarkRegistered(remark_id=reference)
        return _event(number, "1001", date(2026, 6, 1), payment_remark_registered=registered)

    data = companies_pb2_grpc.CompanyDataServiceStub(channel)
    await _submit(data, feed, number, healthy())
    first = await record(channel, feed, remark("A-1"))
    assert first.recorded_count == 1
    second = await record(channel, other, remark("B-7"))
    assert second.recorded_count == 1  # the other feed's 1001, not a conflict
    assert (await record(channel, other, remark("B-7"))).duplicate_event_ids == ["1001"]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await record(channel, feed, remark("A-2"))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_upsert_says_created_only_for_a_company_never_mentioned_before(
    channel: grpc.aio.Channel, feed: TenantKey
) -> None:
    mentioned, new = norwegian_numbers(2, start=91_800_000)
    data = companies_pb2_grpc.CompanyDataServiceStub(channel)
    await _submit(data, feed, mentioned, healthy())  # creates it, master data empty
    first = await _status(data, feed, mentioned, companies_pb2.COMPANY_STATUS_ACTIVE)
    assert not first.created
    assert (await _status(data, feed, new, companies_pb2.COMPANY_STATUS_ACTIVE)).created


async def test_a_status_set_by_upsert_gives_way_to_a_graver_event_of_the_same_day(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    number = norwegian_numbers(1, start=91_900_000)[0]
    data = companies_pb2_grpc.CompanyDataServiceStub(channel)
    await _submit(data, feed, number, healthy())
    await _status(data, feed, number, companies_pb2.COMPANY_STATUS_VOLUNTARY_LIQUIDATION)

    opened = companies_pb2.BankruptcyOpened()
    await record(channel, feed, _event(number, f"{number}-konkurs", bankruptcy_opened=opened))
    assert await _registered_status(data, tenant, number) == companies_pb2.COMPANY_STATUS_BANKRUPT

    # A milder event of the same day does not take the graver status back.
    liquidation = companies_pb2.VoluntaryLiquidation()
    await record(
        channel, feed, _event(number, f"{number}-avvikling", voluntary_liquidation=liquidation)
    )
    assert await _registered_status(data, tenant, number) == companies_pb2.COMPANY_STATUS_BANKRUPT


async def test_a_status_set_by_upsert_can_be_set_back(
    channel: grpc.aio.Channel, feed: TenantKey
) -> None:
    """A feed's mistake, or an annulled bankruptcy: setting the status back
    lifts the class D that the status alone forced."""
    number = norwegian_numbers(1, start=92_000_000)[0]
    data = companies_pb2_grpc.CompanyDataServiceStub(channel)
    before = (await _submit(data, feed, number, healthy())).effect.score.risk_class
    bankrupt = await _status(data, feed, number, companies_pb2.COMPANY_STATUS_BANKRUPT)
    assert bankrupt.effect.score.risk_class == common_pb2.RISK_CLASS_D
    back = await _status(data, feed, number, companies_pb2.COMPANY_STATUS_ACTIVE)
    assert back.effect.score.risk_class == before


async def test_status_events_set_the_same_status_in_one_call_as_in_several(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    data = companies_pb2_grpc.CompanyDataServiceStub(channel)
    grouped, alone = norwegian_numbers(2, start=91_130_000)
    today = datetime.now(UTC).date()
    eight_days_ago = date.fromordinal(today.toordinal() - 8)
    five_days_ago = date.fromordinal(today.toordinal() - 5)
    dissolution = {"compulsory_dissolution": companies_pb2.CompulsoryDissolution()}
    bankruptcy = {"bankruptcy_opened": companies_pb2.BankruptcyOpened()}
    for number in (grouped, alone):
        await _submit(data, feed, number, healthy())
        await record(channel, feed, _event(number, "dissolved", five_days_ago, **dissolution))
        await _status(data, feed, number, companies_pb2.COMPANY_STATUS_ACTIVE)  # lifted
    # A bankruptcy opened eight days ago, reported late: alone, and with a
    # second source's copy of the lifted dissolution (the call's last-dated
    # status event, which sets nothing) in the same call.
    late = "late-bankruptcy"
    together = await record(
        channel,
        feed,
        _event(grouped, late, eight_days_ago, **bankruptcy),
        _event(grouped, "dissolved-copy", five_days_ago, **dissolution),
    )
    single = await record(channel, feed, _event(alone, late, eight_days_ago, **bankruptcy))
    assert together.effects[0].score.risk_class == single.effects[0].score.risk_class
    assert single.effects[0].score.risk_class == common_pb2.RISK_CLASS_D
    for number in (grouped, alone):
        assert await _registered_status(data, tenant, number) == (
            companies_pb2.COMPANY_STATUS_BANKRUPT
        )


async def test_a_status_set_back_and_set_again_the_same_day_alerts_the_news_once(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    data = companies_pb2_grpc.CompanyDataServiceStub(channel)
    number = norwegian_numbers(1, start=91_170_000)[0]
    await _submit(data, feed, number, healthy())
    watch_list = await watch(channel, tenant, [number])
    bankruptcy = {"bankruptcy_opened": companies_pb2.BankruptcyOpened()}
    await record(channel, feed, _event(number, "bankrupt-today", **bankruptcy))
    await _status(data, feed, number, companies_pb2.COMPANY_STATUS_ACTIVE)  # a feed's mistake
    again = await _status(data, feed, number, companies_pb2.COMPANY_STATUS_BANKRUPT)  # corrected
    assert again.effect.score.risk_class == common_pb2.RISK_CLASS_D
    # The status is the same bankruptcy the event told of: one
    # BANKRUPTCY_OPENED alert in all, as a copy of the event would give.
    types = await _alert_types(channel, tenant, watch_list)
    assert types.count(common_pb2.ALERT_TYPE_BANKRUPTCY_OPENED) == 1
