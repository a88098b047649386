"""A class-D override that is lifted ends the score of a company without a statement.

Without a statement, only an override (bankruptcy, compulsory dissolution, or
enough open remarks, cases and overdue invoices to reach D) gives a company a
score. When the override goes, the company has nothing to be scored on: its
old class D must stop being served as current, and its watchers are told.
"""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from google.type import date_pb2, money_pb2
from grpc_status import rpc_status

from creditwatch.v1 import (
    alerts_pb2,
    common_pb2,
    companies_pb2,
    companies_pb2_grpc,
    portfolio_pb2,
    portfolio_pb2_grpc,
    scoring_pb2,
    scoring_pb2_grpc,
    watchlists_pb2,
    watchlists_pb2_grpc,
)
from tests.conftest import TenantKey
from tests.e2e import alerting
from tests.e2e.alerting import event, record, ref, remark, subscribe, watch
from tests.e2e.test_scoring import healthy
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio

A = common_pb2.AlertType
ACTIVE = companies_pb2.COMPANY_STATUS_ACTIVE
BANKRUPT = companies_pb2.COMPANY_STATUS_BANKRUPT


async def _set_status(
    channel: grpc.aio.Channel, feed: TenantKey, number: str, status: int
) -> companies_pb2.IntakeEffect:
    response = await companies_pb2_grpc.CompanyDataServiceStub(channel).UpsertCompany(
        companies_pb2.UpsertCompanyRequest(
            company=companies_pb2.Company(company=ref(number), status=status),  # type: ignore[arg-type]
            update_mask=field_mask_pb2.FieldMask(paths=["status"]),
        ),
        metadata=feed.metadata,
    )
    effect: companies_pb2.IntakeEffect = response.effect
    return effect


async def _score(channel: grpc.aio.Channel, tenant: TenantKey, number: str) -> common_pb2.Score:
    response = await scoring_pb2_grpc.ScoringServiceStub(channel).ScoreCompany(
        scoring_pb2.ScoreCompanyRequest(company=ref(number)), metadata=tenant.metadata
    )
    score: common_pb2.Score = response.score
    return score


def _preconditions(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(error)
    assert status is not None, "no google.rpc.Status in the trailers"
    found = []
    for detail in status.details:
        if detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            found += [(v.type, v.subject) for v in failure.violations]
    return found


async def _assert_unscored(channel: grpc.aio.Channel, tenant: TenantKey, number: str) -> None:
    """ScoreCompany answers as for a company never scored without a statement."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _score(channel, tenant, number)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _preconditions(caught.value) == [("NO_FINANCIAL_STATEMENT", f"companies/NO-{number}")]


async def test_a_bankrupt_status_set_back_to_active_ends_the_class_d_score(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    number = norwegian_numbers(1, start=97_800_000)[0]
    data = companies_pb2_grpc.CompanyDataServiceStub(channel)
    await data.UpsertCompany(
        companies_pb2.UpsertCompanyRequest(
            company=companies_pb2.Company(
                company=ref(number), legal_name="Sjøbris Handel AS", status=ACTIVE
            )
        ),
        metadata=feed.metadata,
    )
    watch_list = await watch(channel, tenant, [number])
    call = subscribe(channel, tenant)
    await alerting.first_heartbeat(call)

    bankrupt = await _set_status(channel, feed, number, BANKRUPT)
    assert bankrupt.score.risk_class == common_pb2.RISK_CLASS_D
    (opened,) = await alerting.alerts(call, 1)
    assert opened.type == A.ALERT_TYPE_BANKRUPTCY_OPENED
    # Read twice: the second answer comes from the replica's score cache.
    for _ in range(2):
        assert (await _score(channel, tenant, number)).risk_class == common_pb2.RISK_CLASS_D

    # The register says the bankruptcy is gone (annulled, or a feed's mistake).
    active = await _set_status(channel, feed, number, ACTIVE)
    assert not active.HasField("score")
    assert active.previous_score.risk_class == common_pb2.RISK_CLASS_D
    assert active.alerts_raised_count == 2
    lifted, changed = sorted(await alerting.alerts(call, 2), key=lambda a: a.type)
    assert changed.type == A.ALERT_TYPE_MASTER_DATA_CHANGED
    assert changed.summary == "Register data changed: status; risk class D → unscored"
    assert lifted.type == A.ALERT_TYPE_RISK_CLASS_UPGRADE
    assert lifted.watch_list == watch_list
    assert lifted.previous_score.risk_class == common_pb2.RISK_CLASS_D
    assert not lifted.HasField("score")
    assert lifted.suggested_action == alerts_pb2.SUGGESTED_ACTION_REVIEW
    assert lifted.severity == common_pb2.SEVERITY_LOW
    assert lifted.summary.startswith("Risk class D → unscored")
    assert list(lifted.trigger.master_data_change.changed_fields) == ["status"]

    await _assert_unscored(channel, tenant, number)
    entry = await watchlists_pb2_grpc.WatchListServiceStub(channel).GetEntry(
        watchlists_pb2.GetEntryRequest(name=f"{watch_list}/entries/NO-{number}"),
        metadata=tenant.metadata,
    )
    assert not entry.entry.HasField("latest_score")
    summary = await portfolio_pb2_grpc.PortfolioServiceStub(channel).GetPortfolioSummary(
        portfolio_pb2.GetPortfolioSummaryRequest(watch_list=watch_list, reporting_currency="NOK"),
        metadata=tenant.metadata,
    )
    counts = {row.risk_class: row.entry_count for row in summary.classes}
    assert counts[common_pb2.RISK_CLASS_D] == 0
    assert counts[common_pb2.RISK_CLASS_UNSPECIFIED] == 1
    assert summary.scored_entry_count == 0

    # Said again: nothing changes, nothing is raised, still unscored.
    again = await _set_status(channel, feed, number, ACTIVE)
    assert not again.HasField("score") and not again.HasField("previous_score")
    assert again.alerts_raised_count == 0
    assert await alerting.quiet(call, 1.0) == []
    await _assert_unscored(channel, tenant, number)

    # Bankrupt once more: class D again, told as a bankruptcy.
    relapse = await _set_status(channel, feed, number, BANKRUPT)
    assert relapse.score.risk_class == common_pb2.RISK_CLASS_D
    assert not relapse.HasField("previous_score")
    assert (await _score(channel, tenant, number)).risk_class == common_pb2.RISK_CLASS_D
    call.cancel()


def _invoice(number: str, invoice: str, days: int) -> companies_pb2.PaymentExperience:
    due = dt.date.today() - dt.timedelta(days=days)
    return companies_pb2.PaymentExperience(
        invoice_id=invoice,
        company=ref(number),
        invoice_due_date=date_pb2.Date(year=due.year, month=due.month, day=due.day),
        days_past_due=days,
        overdue_amount=money_pb2.Money(currency_code="NOK", units=25_000),
    )


async def test_closing_the_case_that_made_events_reach_d_ends_the_score(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey, other_tenant: TenantKey
) -> None:
    """By the default policy an open remark, an open collection case and
    seriously overdue invoices of two creditors are a notch each: A to D
    without a statement. Closing the case (RecordEvents) leaves C, which is no
    score at all."""
    number = norwegian_numbers(1, start=97_810_000)[0]
    data = companies_pb2_grpc.CompanyDataServiceStub(channel)
    for creditor in (tenant, other_tenant):
        await data.ReportPaymentExperience(
            companies_pb2.ReportPaymentExperienceRequest(
                payment_experience=_invoice(number, "INV-D1", 200)
            ),
            metadata=creditor.metadata,
        )
    opened = companies_pb2.DebtCollectionOpened(
        case_id="case-1", amount=money_pb2.Money(currency_code="NOK", units=40_000)
    )
    reached = await record(
        channel,
        feed,
        remark(number, "lo-remark"),
        event(number, "lo-case", debt_collection_opened=opened),
    )
    (effect,) = reached.effects
    assert effect.score.risk_class == common_pb2.RISK_CLASS_D
    assert not effect.HasField("previous_score")
    assert (await _score(channel, tenant, number)).risk_class == common_pb2.RISK_CLASS_D

    await watch(channel, tenant, [number])
    call = subscribe(channel, tenant)
    await alerting.first_heartbeat(call)
    closed = companies_pb2.DebtCollectionClosed(case_id="case-1")
    lifted = await record(channel, feed, event(number, "lo-closed", debt_collection_closed=closed))
    (effect,) = lifted.effects
    assert not effect.HasField("score")
    assert effect.previous_score.risk_class == common_pb2.RISK_CLASS_D
    alerts = sorted(await alerting.alerts(call, 2), key=lambda a: a.type)
    assert [a.type for a in alerts] == [
        A.ALERT_TYPE_RISK_CLASS_UPGRADE,
        A.ALERT_TYPE_COLLECTION_CASE_CLOSED,
    ]
    assert not alerts[0].HasField("score")
    assert alerts[0].trigger.event.event_id == "lo-closed"
    await _assert_unscored(channel, tenant, number)
    call.cancel()


async def test_a_company_with_a_statement_gets_its_model_score_back(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    number = norwegian_numbers(1, start=97_820_000)[0]
    submitted = await alerting.submit(channel, feed, number, healthy())
    model = submitted.effect.score
    assert model.risk_class < common_pb2.RISK_CLASS_D
    await _set_status(channel, feed, number, ACTIVE)
    await watch(channel, tenant, [number])
    call = subscribe(channel, tenant)
    await alerting.first_heartbeat(call)

    assert (await _set_status(channel, feed, number, BANKRUPT)).score.risk_class == (
        common_pb2.RISK_CLASS_D
    )
    await alerting.alerts(call, 2)  # bankruptcy opened, downgrade
    back = await _set_status(channel, feed, number, ACTIVE)
    assert back.score.risk_class == model.risk_class
    assert back.score.probability_of_default == pytest.approx(model.probability_of_default)
    assert not any(r.code.startswith("OVERRIDE_") for r in back.score.reasons)
    upgraded, changed = sorted(await alerting.alerts(call, 2), key=lambda a: a.type)
    assert changed.type == A.ALERT_TYPE_MASTER_DATA_CHANGED
    assert upgraded.type == A.ALERT_TYPE_RISK_CLASS_UPGRADE
    assert upgraded.score.risk_class == model.risk_class
    assert upgraded.suggested_action != alerts_pb2.SUGGESTED_ACTION_REVIEW  # the class's own
    assert (await _score(channel, tenant, number)).risk_class == model.risk_class
    call.cancel()
