"""ReportPaymentExperience is open to every tenant, without a grant: pooled
payment data moves the class every tenant sees only when several creditors
report, and a report's answer never tells whether anyone else watches the
company (a security review's findings)."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from google.type import money_pb2
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.v1 import (
    alerts_pb2,
    alerts_pb2_grpc,
    common_pb2,
    companies_pb2,
    companies_pb2_grpc,
    limits_pb2,
    limits_pb2_grpc,
)
from tests.conftest import TenantKey, new_tenant
from tests.e2e import alerting
from tests.e2e.alerting import ref, subscribe, watch
from tests.e2e.test_company_master import _day
from tests.e2e.test_credit_limits import _ask, _statement, strong
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio

OVERDUE = "OVERRIDE_OVERDUE_PAYMENTS"


async def _report(
    channel: grpc.aio.Channel, creditor: TenantKey, number: str, invoice: str, nok: int = 1
) -> companies_pb2.IntakeEffect:
    """The creditor's open invoice of `nok` NOK, 200 days overdue; the answer's effect."""
    due = dt.date.today() - dt.timedelta(days=200)
    response = await companies_pb2_grpc.CompanyDataServiceStub(channel).ReportPaymentExperience(
        companies_pb2.ReportPaymentExperienceRequest(
            payment_experience=companies_pb2.PaymentExperience(
                invoice_id=invoice,
                company=ref(number),
                invoice_due_date=_day(due),
                days_past_due=200,
                overdue_amount=money_pb2.Money(currency_code="NOK", units=nok),
            )
        ),
        metadata=creditor.metadata,
    )
    effect: companies_pb2.IntakeEffect = response.effect
    return effect


async def _alert_types(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> list[common_pb2.AlertType.ValueType]:
    """Every alert of the tenant's, oldest first (written in the intake's
    transaction: listed as soon as the intake has answered)."""
    listed = await alerts_pb2_grpc.AlertServiceStub(channel).ListAlerts(
        alerts_pb2.ListAlertsRequest(page_size=100), metadata=tenant.metadata
    )
    return [a.type for a in reversed(listed.alerts)]


async def _limit(
    stub: limits_pb2_grpc.CreditLimitServiceStub, tenant: TenantKey, name: str
) -> tuple[int, int]:
    """A credit limit's (amount, payment terms)."""
    response = await stub.GetCreditLimit(
        limits_pb2.GetCreditLimitRequest(name=name), metadata=tenant.metadata
    )
    return response.credit_limit.amount.units, response.credit_limit.max_payment_terms_days


async def test_one_creditor_moves_no_class_and_cuts_no_other_tenant_s_limit(
    channel: grpc.aio.Channel,
    feed: TenantKey,
    tenant: TenantKey,
    other_tenant: TenantKey,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The review's case: a tenant without grants reports one 1 NOK invoice,
    200 days overdue, on a company another tenant watches and insures."""
    number = norwegian_numbers(1, start=98_500_000)[0]
    scored = await _statement(channel, feed, number, strong())
    assert scored.effect.score.risk_class == common_pb2.RISK_CLASS_A
    limits = limits_pb2_grpc.CreditLimitServiceStub(channel)
    granted = await limits.DecideCreditLimit(
        _ask(number, 5_000_000, days=90), metadata=other_tenant.metadata
    )
    assert granted.decision.outcome == limits_pb2.CREDIT_LIMIT_OUTCOME_APPROVED
    await watch(channel, other_tenant, [number])
    call = subscribe(channel, other_tenant)
    await alerting.first_heartbeat(call)

    lone = await _report(channel, tenant, number, "INV-1")
    assert lone.score.risk_class == common_pb2.RISK_CLASS_A
    assert not any(r.code == OVERDUE for r in lone.score.reasons)
    assert lone.alerts_raised_count == 0
    # The same creditor again, with more invoices: still one creditor.
    assert (await _report(channel, tenant, number, "INV-2", 500)).score.risk_class == (
        common_pb2.RISK_CLASS_A
    )
    assert await _alert_types(channel, other_tenant) == []
    assert await _limit(limits, other_tenant, granted.decision.credit_limit) == (5_000_000, 90)

    # A second creditor: the pooled invoices count now, for everyone.
    second = await new_tenant(sessions, "second creditor")
    pooled = await _report(channel, second, number, "INV-9")
    assert pooled.score.risk_class == common_pb2.RISK_CLASS_B
    (reason,) = [r for r in pooled.score.reasons if r.code == OVERDUE]
    assert "3 open invoice(s)" in reason.description
    assert "reported by 2 creditor(s)" in reason.description
    # Its reporter watches nothing and holds no limit: nothing of its own,
    # whatever the watcher got.
    assert pooled.alerts_raised_count == 0
    got = await alerting.alerts(call, 2)
    assert sorted(a.type for a in got) == [
        common_pb2.ALERT_TYPE_RISK_CLASS_DOWNGRADE,
        common_pb2.ALERT_TYPE_CREDIT_LIMIT_REDUCED,
    ]
    # Class B allows min(0.10 x 42M equity, 0.05 x 80M sales) = 4.0M and 60 days.
    assert await _limit(limits, other_tenant, granted.decision.credit_limit) == (4_000_000, 60)
    assert await alerting.quiet(call, 1.0) == []
    call.cancel()


async def test_a_reporter_s_alert_count_does_not_tell_whether_others_watch(
    channel: grpc.aio.Channel,
    feed: TenantKey,
    tenant: TenantKey,
    other_tenant: TenantKey,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Two companies alike but for one thing: another tenant watches the
    first. The reporter, who watches both, hears of its own alert on each."""
    watched, unwatched = norwegian_numbers(2, start=98_510_000)
    for number in (watched, unwatched):
        assert (await _statement(channel, feed, number, strong())).effect.score.risk_class == (
            common_pb2.RISK_CLASS_A
        )
    mine = await watch(channel, tenant, [watched, unwatched])
    theirs = await watch(channel, other_tenant, [watched])
    call = subscribe(channel, other_tenant)
    await alerting.first_heartbeat(call)
    earlier = await new_tenant(sessions, "earlier creditor")
    for number in (watched, unwatched):
        assert (await _report(channel, earlier, number, f"E-{number}")).alerts_raised_count == 0

    # The reporter's invoices are each company's second creditor's: both move.
    effects = {n: await _report(channel, tenant, n, f"R-{n}") for n in (watched, unwatched)}
    assert {e.score.risk_class for e in effects.values()} == {common_pb2.RISK_CLASS_B}
    assert effects[watched].alerts_raised_count == effects[unwatched].alerts_raised_count == 1
    # The other tenant's alert was written and is delivered all the same.
    (alert,) = await alerting.alerts(call, 1)
    assert alert.type == common_pb2.ALERT_TYPE_RISK_CLASS_DOWNGRADE
    assert alert.watch_list == theirs
    assert alert.company.register_number == watched
    call.cancel()
    # Each count is the reporter's own alert, which it can list.
    listed = await alerts_pb2_grpc.AlertServiceStub(channel).ListAlerts(
        alerts_pb2.ListAlertsRequest(filter=alerts_pb2.AlertFilter(watch_lists=[mine])),
        metadata=tenant.metadata,
    )
    assert sorted((a.company.register_number, a.type) for a in listed.alerts) == [
        (watched, common_pb2.ALERT_TYPE_RISK_CLASS_DOWNGRADE),
        (unwatched, common_pb2.ALERT_TYPE_RISK_CLASS_DOWNGRADE),
    ]
