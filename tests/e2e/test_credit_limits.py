"""CreditLimitService: decisions under the tenant's policy, standing limits that
follow risk, and policy versions; checked against hand-computed figures."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.type import date_pb2, money_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.paging import encode_token, fingerprint
from creditwatch.server.domain.scores import RiskClass
from creditwatch.server.jobs.scheduler import run_claims_clock
from creditwatch.server.store import facts
from creditwatch.server.store import limits as store_limits
from creditwatch.v1 import (
    common_pb2,
    companies_pb2,
    companies_pb2_grpc,
    limits_pb2,
    limits_pb2_grpc,
)
from tests.conftest import TenantKey
from tests.e2e import alerting
from tests.e2e.alerting import bankruptcy, record, ref, remark, subscribe, watch
from tests.e2e.rpc_errors import field_violations
from tests.e2e.test_scoring import healthy
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio

LIM = limits_pb2
# The default policy, restated: (share of equity, share of sales, max terms) per class.
DEFAULT = {1: (0.20, 0.10, 90), 2: (0.10, 0.05, 60), 3: (0.05, 0.02, 30)}
EQUITY, SALES = 30_000_000, 80_000_000  # of tests.e2e.test_scoring.healthy()


def strong() -> companies_pb2.FinancialStatement:
    """A statement the shipped model puts in class A (checked below)."""
    return healthy(
        equity=42_000_000, retained_earnings=32_000_000, total_liabilities=8_000_000,
        short_term_liabilities=5_000_000, long_term_liabilities=3_000_000, net_profit=9_000_000,
        operating_profit=11_000_000, ebit=10_500_000, gross_profit=10_000_000,
        profit_on_sales=11_000_000, cash=15_000_000,
    )  # fmt: skip


async def _statement(
    channel: grpc.aio.Channel, feed: TenantKey, number: str, statement: object
) -> companies_pb2.SubmitFinancialStatementResponse:
    stub = companies_pb2_grpc.CompanyDataServiceStub(channel)
    response: companies_pb2.SubmitFinancialStatementResponse = await stub.SubmitFinancialStatement(
        companies_pb2.SubmitFinancialStatementRequest(
            company=ref(number), financial_statement=statement
        ),
        metadata=feed.metadata,
    )
    return response


def _ask(
    number: str, amount: int, days: int = 60, currency: str = "NOK", **extra: object
) -> limits_pb2.DecideCreditLimitRequest:
    return limits_pb2.DecideCreditLimitRequest(
        company=ref(number),
        requested_amount=money_pb2.Money(currency_code=currency, units=amount),
        requested_payment_terms_days=days,
        **extra,  # type: ignore[arg-type]
    )


async def test_a_decision_matches_the_hand_computed_cap(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    number = norwegian_numbers(1, start=81_510_000)[0]
    scored = await _statement(channel, feed, number, healthy())
    risk_class = scored.effect.score.risk_class
    equity_share, sales_share, terms = DEFAULT[risk_class]
    cap = min(equity_share * EQUITY, sales_share * SALES)
    stub = limits_pb2_grpc.CreditLimitServiceStub(channel)

    small = await stub.DecideCreditLimit(
        _ask(number, 100_000, days=min(terms, 30), external_reference="cust-7"),
        metadata=tenant.metadata,
    )
    assert small.decision.outcome == LIM.CREDIT_LIMIT_OUTCOME_APPROVED
    assert small.decision.approved_amount.units == 100_000
    assert small.decision.policy_version == 1
    assert small.decision.score.risk_class == risk_class
    assert small.decision.credit_limit.startswith("creditLimits/")

    big = await stub.DecideCreditLimit(
        _ask(
            number,
            50_000_000,
            days=120,
            current_exposure=money_pb2.Money(currency_code="NOK", units=int(cap) + 5),
        ),
        metadata=tenant.metadata,
    )
    decision = big.decision
    assert decision.outcome == LIM.CREDIT_LIMIT_OUTCOME_PARTIALLY_APPROVED
    assert decision.approved_amount.units == int(cap)
    assert decision.max_payment_terms_days == terms
    codes = [r.code for r in decision.reasons]
    binding = (
        "CAPPED_BY_EQUITY" if equity_share * EQUITY <= sales_share * SALES else "CAPPED_BY_SALES"
    )
    assert codes == [binding, "TERMS_CAPPED", "EXPOSURE_ABOVE_LIMIT"]
    # The same standing limit, now with the new amount.
    assert decision.credit_limit == small.decision.credit_limit
    got = await stub.GetCreditLimit(
        limits_pb2.GetCreditLimitRequest(name=decision.credit_limit), metadata=tenant.metadata
    )
    limit = got.credit_limit
    assert limit.state == LIM.CREDIT_LIMIT_STATE_ACTIVE
    assert limit.amount.units == int(cap)
    assert limit.external_reference == "cust-7"  # kept from the earlier request
    assert limit.latest_decision.outcome == LIM.CREDIT_LIMIT_OUTCOME_PARTIALLY_APPROVED
    listed = await stub.ListCreditLimits(
        limits_pb2.ListCreditLimitsRequest(company=ref(number)), metadata=tenant.metadata
    )
    assert [x.name for x in listed.credit_limits] == [limit.name]


async def test_declined_referred_and_idempotent_decisions(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    fresh, old, bankrupt, unknown = norwegian_numbers(4, start=81_520_000)
    await _statement(channel, feed, fresh, healthy())
    stale = healthy()
    stale.period_start.CopyFrom(date_pb2.Date(year=2020, month=1, day=1))
    stale.period_end.CopyFrom(date_pb2.Date(year=2020, month=12, day=31))
    await _statement(channel, feed, old, stale)
    await _statement(channel, feed, bankrupt, healthy())
    await record(channel, feed, bankruptcy(bankrupt, "lim-b1"))
    stub = limits_pb2_grpc.CreditLimitServiceStub(channel)

    async def outcome(request: limits_pb2.DecideCreditLimitRequest) -> tuple[int, list[str]]:
        response = await stub.DecideCreditLimit(request, metadata=tenant.metadata)
        return response.decision.outcome, [r.code for r in response.decision.reasons]

    assert await outcome(_ask(bankrupt, 1_000)) == (
        LIM.CREDIT_LIMIT_OUTCOME_DECLINED,
        ["DECLINE_CLASS"],
    )
    assert await outcome(_ask(old, 1_000)) == (
        LIM.CREDIT_LIMIT_OUTCOME_REFERRED,
        ["STATEMENT_TOO_OLD"],
    )
    assert await outcome(_ask(fresh, 1_000, currency="EUR")) == (
        LIM.CREDIT_LIMIT_OUTCOME_REFERRED,
        ["CURRENCY_MISMATCH"],
    )
    assert await outcome(_ask(unknown, 1_000)) == (LIM.CREDIT_LIMIT_OUTCOME_REFERRED, ["NO_SCORE"])
    # None of those created a standing limit.
    listed = await stub.ListCreditLimits(
        limits_pb2.ListCreditLimitsRequest(), metadata=tenant.metadata
    )
    assert listed.credit_limits == []

    first = await stub.DecideCreditLimit(
        _ask(fresh, 10_000, request_id="r-1"), metadata=tenant.metadata
    )
    again = await stub.DecideCreditLimit(
        _ask(fresh, 10_000, request_id="r-1"), metadata=tenant.metadata
    )
    assert again.decision == first.decision  # the first decision, not a new one


async def test_standing_limits_follow_worsening_risk_with_alerts(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey, other_tenant: TenantKey
) -> None:
    number = norwegian_numbers(1, start=81_530_000)[0]
    scored = await _statement(channel, feed, number, strong())
    assert scored.effect.score.risk_class == common_pb2.RISK_CLASS_A
    stub = limits_pb2_grpc.CreditLimitServiceStub(channel)
    granted = await stub.DecideCreditLimit(
        _ask(number, 5_000_000, days=90), metadata=tenant.metadata
    )
    assert granted.decision.outcome == LIM.CREDIT_LIMIT_OUTCOME_APPROVED
    watch_list = await watch(channel, tenant, [number])
    call = subscribe(
        channel,
        tenant,
        filter=alerting.alerts_pb2.AlertFilter(
            alert_types=[
                common_pb2.ALERT_TYPE_CREDIT_LIMIT_REDUCED,
                common_pb2.ALERT_TYPE_CREDIT_LIMIT_WITHDRAWN,
            ]
        ),
    )
    await alerting.first_heartbeat(call)

    # A payment remark: class A -> B; B allows min(0.10 x 42M equity, 0.05 x 80M sales)
    # = 4.0M and 60 days.
    await record(channel, feed, remark(number, "lim-r1"))
    (reduced,) = await alerting.alerts(call, 1)
    assert reduced.type == common_pb2.ALERT_TYPE_CREDIT_LIMIT_REDUCED
    assert reduced.trigger.credit_limit == granted.decision.credit_limit
    assert reduced.watch_list == watch_list
    assert "5,000,000 NOK to 4,000,000 NOK, terms 60 days" in reduced.summary
    limit = (
        await stub.GetCreditLimit(
            limits_pb2.GetCreditLimitRequest(name=granted.decision.credit_limit),
            metadata=tenant.metadata,
        )
    ).credit_limit
    assert (limit.amount.units, limit.max_payment_terms_days) == (4_000_000, 60)
    assert limit.latest_decision.origin == LIM.DECISION_ORIGIN_RISK_CHANGE
    # The decision it keeps is what the limit holds: lowered, not moved on.
    assert limit.latest_decision.valid_until == granted.decision.valid_until
    assert limit.latest_decision.approved_amount.units == 4_000_000

    # Bankruptcy: class D, the decline class: withdrawn.
    await record(channel, feed, bankruptcy(number, "lim-b2"))
    (withdrawn,) = await alerting.alerts(call, 1)
    assert withdrawn.type == common_pb2.ALERT_TYPE_CREDIT_LIMIT_WITHDRAWN
    assert withdrawn.severity == common_pb2.SEVERITY_HIGH
    limit = (
        await stub.GetCreditLimit(
            limits_pb2.GetCreditLimitRequest(name=granted.decision.credit_limit),
            metadata=tenant.metadata,
        )
    ).credit_limit
    assert limit.state == LIM.CREDIT_LIMIT_STATE_WITHDRAWN
    assert limit.amount.units == 0
    call.cancel()

    # Another tenant sees none of it.
    with pytest.raises(grpc.aio.AioRpcError) as foreign:
        await stub.GetCreditLimit(
            limits_pb2.GetCreditLimitRequest(name=granted.decision.credit_limit),
            metadata=other_tenant.metadata,
        )
    assert foreign.value.code() == grpc.StatusCode.NOT_FOUND


async def test_policy_versions_and_their_use(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    number = norwegian_numbers(1, start=81_540_000)[0]
    scored = await _statement(channel, feed, number, healthy())
    risk_class = scored.effect.score.risk_class
    stub = limits_pb2_grpc.CreditLimitServiceStub(channel)
    current = (
        await stub.GetCreditPolicy(limits_pb2.GetCreditPolicyRequest(), metadata=tenant.metadata)
    ).credit_policy
    assert current.version == 1 and current.decline_class == common_pb2.RISK_CLASS_D
    assert [p.risk_class for p in current.class_policies] == [1, 2, 3, 4]

    # Decline the company's class from now on.
    changed = await stub.UpdateCreditPolicy(
        limits_pb2.UpdateCreditPolicyRequest(
            credit_policy=limits_pb2.CreditPolicy(version=1, decline_class=risk_class),
            update_mask=field_mask_pb2.FieldMask(paths=["decline_class"]),
        ),
        metadata=tenant.metadata,
    )
    assert changed.credit_policy.version == 2
    decision = (
        await stub.DecideCreditLimit(_ask(number, 1_000), metadata=tenant.metadata)
    ).decision
    assert decision.outcome == LIM.CREDIT_LIMIT_OUTCOME_DECLINED
    assert decision.policy_version == 2
    old = await stub.GetCreditPolicy(
        limits_pb2.GetCreditPolicyRequest(version=1), metadata=tenant.metadata
    )
    assert old.credit_policy.decline_class == common_pb2.RISK_CLASS_D

    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await stub.UpdateCreditPolicy(
            limits_pb2.UpdateCreditPolicyRequest(
                credit_policy=limits_pb2.CreditPolicy(version=1, decision_validity_days=30),
                update_mask=field_mask_pb2.FieldMask(paths=["decision_validity_days"]),
            ),
            metadata=tenant.metadata,
        )
    assert stale.value.code() == grpc.StatusCode.ABORTED
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.UpdateCreditPolicy(
            limits_pb2.UpdateCreditPolicyRequest(
                credit_policy=limits_pb2.CreditPolicy(
                    decision_validity_days=0, refer_statement_older_than_months=99
                ),
                update_mask=field_mask_pb2.FieldMask(
                    paths=["decision_validity_days", "refer_statement_older_than_months", "version"]
                ),
            ),
            metadata=tenant.metadata,
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(bad.value)) == {"update_mask.paths[2]"}
    with pytest.raises(grpc.aio.AioRpcError) as negative:
        await stub.UpdateCreditPolicy(
            limits_pb2.UpdateCreditPolicyRequest(
                credit_policy=limits_pb2.CreditPolicy(version=-1, decision_validity_days=30),
                update_mask=field_mask_pb2.FieldMask(paths=["decision_validity_days"]),
            ),
            metadata=tenant.metadata,
        )
    assert negative.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(negative.value)) == {"credit_policy.version"}
    unchanged = await stub.GetCreditPolicy(
        limits_pb2.GetCreditPolicyRequest(), metadata=tenant.metadata
    )
    assert unchanged.credit_policy.version == 2


async def test_bad_requests_name_the_field(channel: grpc.aio.Channel, tenant: TenantKey) -> None:
    stub = limits_pb2_grpc.CreditLimitServiceStub(channel)
    bad = limits_pb2.DecideCreditLimitRequest(
        company=common_pb2.CompanyRef(country="NO", register_number="923609017"),
        requested_amount=money_pb2.Money(currency_code="NOK", units=-5),
        requested_payment_terms_days=0,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.DecideCreditLimit(bad, metadata=tenant.metadata)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(caught.value)
    assert "company.register_number" in violations
    assert "requested_payment_terms_days" in violations
    assert any(f.startswith("requested_amount") for f in violations)
    # NUL characters, named by field whatever the decision would be.
    valid = norwegian_numbers(1, start=81_575_000)[0]
    nul = limits_pb2.DecideCreditLimitRequest(
        company=common_pb2.CompanyRef(country="NO", register_number=valid),
        requested_amount=money_pb2.Money(currency_code="NOK", units=5_000),
        requested_payment_terms_days=30,
        external_reference="PO\x001",
        request_id="req\x00",
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.DecideCreditLimit(nul, metadata=tenant.metadata)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(caught.value)) == {"external_reference", "request_id"}


async def test_claims_clock_for_an_insured_overdue_invoice(
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    feed: TenantKey,
    tenant: TenantKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    number = norwegian_numbers(1, start=81_550_000)[0]
    await _statement(channel, feed, number, strong())
    stub = limits_pb2_grpc.CreditLimitServiceStub(channel)
    granted = await stub.DecideCreditLimit(
        _ask(number, 1_000_000, days=60), metadata=tenant.metadata
    )
    limit = granted.decision.credit_limit
    await watch(channel, tenant, [number])
    today = dt.datetime.now(dt.UTC).date()

    def invoice(
        invoiced: dt.date, due: dt.date, invoice_id: str = "INV-9001", **extra: object
    ) -> limits_pb2.OverduePayment:
        return limits_pb2.OverduePayment(
            invoice_id=invoice_id,
            invoice_date=date_pb2.Date(year=invoiced.year, month=invoiced.month, day=invoiced.day),
            invoice_due_date=date_pb2.Date(year=due.year, month=due.month, day=due.day),
            overdue_amount=money_pb2.Money(currency_code="NOK", units=250_000),
            **extra,  # type: ignore[arg-type]
        )

    reported = await stub.ReportOverduePayment(
        limits_pb2.ReportOverduePaymentRequest(parent=limit, overdue_payment=invoice(today, today)),
        metadata=tenant.metadata,
    )
    payment = reported.overdue_payment
    assert reported.created
    with pytest.raises(grpc.aio.AioRpcError) as nul:
        await stub.ReportOverduePayment(
            limits_pb2.ReportOverduePaymentRequest(
                parent=limit, overdue_payment=invoice(today, today, "INV\x009003")
            ),
            metadata=tenant.metadata,
        )
    assert nul.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(nul.value)) == {"overdue_payment.invoice_id"}
    second = await stub.ReportOverduePayment(
        limits_pb2.ReportOverduePaymentRequest(
            parent=limit, overdue_payment=invoice(today, today, "INV-9002")
        ),
        metadata=tenant.metadata,
    )
    assert payment.state == LIM.OVERDUE_PAYMENT_STATE_WAITING
    assert payment.claim_basis == LIM.CLAIM_BASIS_PROTRACTED_DEFAULT
    eligible = today + dt.timedelta(days=180)  # the default protracted-default wait
    assert payment.claim_eligible_date == date_pb2.Date(
        year=eligible.year, month=eligible.month, day=eligible.day
    )

    async def claims() -> Any:
        """A new stream of the tenant's claim alerts (`quiet` ends the one it reads)."""
        call = subscribe(
            channel,
            tenant,
            filter=alerting.alerts_pb2.AlertFilter(
                alert_types=[common_pb2.ALERT_TYPE_CLAIM_ELIGIBLE]
            ),
        )
        await alerting.first_heartbeat(call)
        return call

    # One waiting payment per transaction: the clock pages through them all.
    monkeypatch.setattr(store_limits, "CLAIMS_PAGE", 1)
    # A bankruptcy opened before the invoices were dated (2026-05-01, reported
    # late) is no insolvency of theirs: their clocks stay on protracted default.
    call = await claims()
    await record(channel, feed, bankruptcy(number, "claim-b0"))
    month = dt.datetime.now(dt.UTC) + dt.timedelta(days=31)
    await run_claims_clock(sessions, month)
    assert await alerting.quiet(call, 1.0) == []
    # The buyer goes bankrupt today: insolvency basis, eligible 30 days on.
    call = await claims()
    opened = bankruptcy(number, "claim-b1")
    opened.occurred_time.GetCurrentTime()
    await record(channel, feed, opened)
    await run_claims_clock(sessions, dt.datetime.now(dt.UTC))
    assert await alerting.quiet(call, 0.5) == []  # not yet
    call = await claims()
    assert await run_claims_clock(sessions, month) >= 2
    alert, other = sorted(await alerting.alerts(call, 2), key=lambda a: a.summary)
    assert other.trigger.overdue_payment == second.overdue_payment.name
    assert alert.trigger.overdue_payment == payment.name
    assert alert.severity == common_pb2.SEVERITY_HIGH
    assert "INV-9001" in alert.summary and "bankruptcy" in alert.summary
    assert await run_claims_clock(sessions, month) == 0  # once only
    call.cancel()

    settled = await stub.ReportOverduePayment(
        limits_pb2.ReportOverduePaymentRequest(
            parent=limit,
            overdue_payment=invoice(
                today,
                today,
                settled_date=date_pb2.Date(year=today.year, month=today.month, day=today.day),
            ),
        ),
        metadata=tenant.metadata,
    )
    assert not settled.created
    assert settled.overdue_payment.state == LIM.OVERDUE_PAYMENT_STATE_SETTLED
    assert not settled.overdue_payment.HasField("claim_eligible_date")

    with pytest.raises(grpc.aio.AioRpcError) as uninsured:
        await stub.ReportOverduePayment(
            limits_pb2.ReportOverduePaymentRequest(
                parent=limit,
                overdue_payment=invoice(
                    today - dt.timedelta(days=30), today - dt.timedelta(days=1), "INV-OLD"
                ),
            ),
            metadata=tenant.metadata,
        )
    assert uninsured.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.ReportOverduePayment(
            limits_pb2.ReportOverduePaymentRequest(
                parent=limit, overdue_payment=invoice(today, today - dt.timedelta(days=3))
            ),
            metadata=tenant.metadata,
        )
    assert "overdue_payment.invoice_due_date" in field_violations(bad.value)
    yesterday = today - dt.timedelta(days=1)
    euro = invoice(today, today)
    euro.overdue_amount.currency_code = "EUR"
    for wrong, field in (
        (
            invoice(
                today,
                today,
                settled_date=date_pb2.Date(
                    year=yesterday.year, month=yesterday.month, day=yesterday.day
                ),
            ),
            "overdue_payment.settled_date",
        ),
        (
            euro,
            "overdue_payment.overdue_amount.currency_code",
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ReportOverduePayment(
                limits_pb2.ReportOverduePaymentRequest(parent=limit, overdue_payment=wrong),
                metadata=tenant.metadata,
            )
        assert field in field_violations(refused.value)


async def _get(
    stub: limits_pb2_grpc.CreditLimitServiceStub, tenant: TenantKey, name: str
) -> limits_pb2.CreditLimit:
    response = await stub.GetCreditLimit(
        limits_pb2.GetCreditLimitRequest(name=name), metadata=tenant.metadata
    )
    return response.credit_limit


async def test_concurrent_first_decisions_on_a_buyer_all_succeed(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    numbers = norwegian_numbers(4, start=81_560_000)
    for number in numbers:
        await _statement(channel, feed, number, healthy())
    stub = limits_pb2_grpc.CreditLimitServiceStub(channel)
    for number in numbers:
        # Each call finds no standing limit and creates one: all but one meet
        # the row the first inserted.
        calls = [
            stub.DecideCreditLimit(_ask(number, 100_000 + i, days=30), metadata=tenant.metadata)
            for i in range(3)
        ]
        decisions = [response.decision for response in await asyncio.gather(*calls)]
        assert {d.outcome for d in decisions} == {LIM.CREDIT_LIMIT_OUTCOME_APPROVED}
        assert len({d.credit_limit for d in decisions}) == 1
        listed = await stub.ListCreditLimits(
            limits_pb2.ListCreditLimitsRequest(company=ref(number)), metadata=tenant.metadata
        )
        (limit,) = listed.credit_limits
        assert limit.name == decisions[0].credit_limit
        assert limit.latest_decision in decisions  # the one that committed last
        assert limit.amount == limit.latest_decision.approved_amount


async def test_a_request_without_exposure_keeps_the_one_last_reported(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    number = norwegian_numbers(1, start=81_570_000)[0]
    await _statement(channel, feed, number, healthy())
    stub = limits_pb2_grpc.CreditLimitServiceStub(channel)
    reported = money_pb2.Money(currency_code="NOK", units=70_000)
    first = await stub.DecideCreditLimit(
        _ask(number, 100_000, days=30, current_exposure=reported), metadata=tenant.metadata
    )
    await stub.DecideCreditLimit(_ask(number, 120_000, days=30), metadata=tenant.metadata)
    limit = await _get(stub, tenant, first.decision.credit_limit)
    assert limit.amount.units == 120_000
    assert limit.current_exposure == reported

    lower = money_pb2.Money(currency_code="NOK", units=20_000)
    await stub.DecideCreditLimit(
        _ask(number, 120_000, days=30, current_exposure=lower), metadata=tenant.metadata
    )
    assert (await _get(stub, tenant, first.decision.credit_limit)).current_exposure == lower


async def test_a_lapsed_limit_reads_expired_and_worse_risk_leaves_it_alone(
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    feed: TenantKey,
    tenant: TenantKey,
) -> None:
    number = norwegian_numbers(1, start=81_580_000)[0]
    await _statement(channel, feed, number, strong())
    stub = limits_pb2_grpc.CreditLimitServiceStub(channel)
    granted = await stub.DecideCreditLimit(
        _ask(number, 5_000_000, days=90), metadata=tenant.metadata
    )
    name = granted.decision.credit_limit
    async with sessions.begin() as session:  # its validity ran out yesterday
        await session.execute(
            text(
                "UPDATE credit_limits SET valid_until = now() - interval '1 day' "
                "WHERE tenant_id = :tenant"
            ),
            {"tenant": tenant.tenant_id},
        )
    assert (await _get(stub, tenant, name)).state == LIM.CREDIT_LIMIT_STATE_EXPIRED

    async def listed(*states: int) -> list[str]:
        response = await stub.ListCreditLimits(
            limits_pb2.ListCreditLimitsRequest(states=states), metadata=tenant.metadata
        )
        return [x.name for x in response.credit_limits]

    assert await listed(LIM.CREDIT_LIMIT_STATE_EXPIRED) == [name]
    assert await listed(LIM.CREDIT_LIMIT_STATE_ACTIVE) == []

    # A payment remark (class A -> B) would cut an ACTIVE limit to 4.0M and
    # 60 days (see test_standing_limits_follow_worsening_risk_with_alerts); a
    # lapsed one covers nothing, so it stays as it was.
    await record(channel, feed, remark(number, "lim-lapsed-r1"))
    limit = await _get(stub, tenant, name)
    assert limit.state == LIM.CREDIT_LIMIT_STATE_EXPIRED
    assert (limit.amount.units, limit.max_payment_terms_days) == (5_000_000, 90)
    assert limit.latest_decision.origin == LIM.DECISION_ORIGIN_REQUEST

    # A new decision puts it in force again.
    await stub.DecideCreditLimit(_ask(number, 1_000_000, days=30), metadata=tenant.metadata)
    assert (await _get(stub, tenant, name)).state == LIM.CREDIT_LIMIT_STATE_ACTIVE
    assert await listed(LIM.CREDIT_LIMIT_STATE_ACTIVE) == [name]


async def test_a_request_id_replays_for_24_hours_only(
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    feed: TenantKey,
    tenant: TenantKey,
) -> None:
    number = norwegian_numbers(1, start=81_590_000)[0]
    await _statement(channel, feed, number, healthy())
    stub = limits_pb2_grpc.CreditLimitServiceStub(channel)

    async def decide(amount: int) -> limits_pb2.CreditLimitDecision:
        response = await stub.DecideCreditLimit(
            _ask(number, amount, days=30, request_id="order-42"), metadata=tenant.metadata
        )
        return response.decision

    async def age(hours: int) -> None:
        async with sessions.begin() as session:
            await session.execute(
                text(
                    "UPDATE idempotency_keys SET create_time = now() - make_interval(hours => :h) "
                    "WHERE tenant_id = :tenant"
                ),
                {"h": hours, "tenant": tenant.tenant_id},
            )

    first = await decide(100_000)
    await age(23)
    assert await decide(100_000) == first
    await age(25)
    # Past 24 hours the key is free again, for another request too.
    later = await decide(200_000)
    assert later.requested_amount.units == 200_000
    assert later.decide_time.ToDatetime() > first.decide_time.ToDatetime()
    assert await decide(200_000) == later  # the new decision is the one replayed now


async def test_a_bad_class_policy_names_the_entry_as_sent(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    stub = limits_pb2_grpc.CreditLimitServiceStub(channel)
    # Sent D, C, B, A: the bad values are in entries [0] (D) and [2] (B).
    policies = [
        LIM.ClassPolicy(risk_class=4, max_share_of_equity=99.0),
        LIM.ClassPolicy(risk_class=3, max_share_of_equity=0.05, max_payment_terms_days=30),
        LIM.ClassPolicy(risk_class=2, max_share_of_equity=0.1, max_payment_terms_days=400),
        LIM.ClassPolicy(risk_class=1, max_share_of_equity=0.2, max_payment_terms_days=90),
    ]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpdateCreditPolicy(
            limits_pb2.UpdateCreditPolicyRequest(
                credit_policy=LIM.CreditPolicy(class_policies=policies),
                update_mask=field_mask_pb2.FieldMask(paths=["class_policies"]),
            ),
            metadata=tenant.metadata,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(caught.value)) == {
        "credit_policy.class_policies[0].max_share_of_equity",
        "credit_policy.class_policies[2].max_payment_terms_days",
    }


async def _three_limits(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey, start: int
) -> limits_pb2_grpc.CreditLimitServiceStub:
    stub = limits_pb2_grpc.CreditLimitServiceStub(channel)
    for number in norwegian_numbers(3, start=start):
        await _statement(channel, feed, number, healthy())
        await stub.DecideCreditLimit(_ask(number, 10_000, days=30), metadata=tenant.metadata)
    return stub


async def test_states_unspecified_means_any_state(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    stub = await _three_limits(channel, feed, tenant, 81_500_000)
    for states in ([LIM.CREDIT_LIMIT_STATE_UNSPECIFIED], [0, LIM.CREDIT_LIMIT_STATE_WITHDRAWN]):
        listed = await stub.ListCreditLimits(
            limits_pb2.ListCreditLimitsRequest(states=states), metadata=tenant.metadata
        )
        assert len(listed.credit_limits) == 3, states
    first = await stub.ListCreditLimits(
        limits_pb2.ListCreditLimitsRequest(states=[0], page_size=2), metadata=tenant.metadata
    )
    rest = await stub.ListCreditLimits(
        limits_pb2.ListCreditLimitsRequest(states=[0], page_token=first.next_page_token),
        metadata=tenant.metadata,
    )
    assert len(first.credit_limits) + len(rest.credit_limits) == 3 and not rest.next_page_token


async def test_page_tokens_of_another_tenant_or_forged_are_refused(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey, other_tenant: TenantKey
) -> None:
    stub = await _three_limits(channel, feed, tenant, 81_505_000)
    await _three_limits(channel, feed, other_tenant, 81_505_000)
    first = await stub.ListCreditLimits(
        limits_pb2.ListCreditLimitsRequest(page_size=2), metadata=tenant.metadata
    )
    digest = fingerprint(tenant.tenant_id, [], "")
    some_id = str(uuid.uuid4())
    refused = [
        (other_tenant, first.next_page_token),
        (tenant, encode_token(("2026-01-01T00:00:00", some_id), digest)),  # no UTC offset
        (tenant, encode_token(("2026-01-01T00:00:00+00:00", "x"), digest)),
        (tenant, encode_token(("2026-01-01T00:00:00+00:00\x00", some_id), digest)),
        (tenant, encode_token(("\ud800", some_id), digest)),
    ]
    for caller, token in refused:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListCreditLimits(
                limits_pb2.ListCreditLimitsRequest(page_token=token), metadata=caller.metadata
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, token
        assert "page_token" in field_violations(caught.value)
    # The control: a token issued to this tenant for these filters pages on.
    rest = await stub.ListCreditLimits(
        limits_pb2.ListCreditLimitsRequest(page_token=first.next_page_token),
        metadata=tenant.metadata,
    )
    assert len(rest.credit_limits) == 1


async def test_a_decision_waits_for_an_intake_in_flight_and_uses_its_score(
    channel: grpc.aio.Channel,
    feed: TenantKey,
    tenant: TenantKey,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    number = norwegian_numbers(1, start=81_615_000)[0]
    company = CompanyId("NO", number)
    await _statement(channel, feed, number, healthy())
    stub = limits_pb2_grpc.CreditLimitServiceStub(channel)
    # An intake holds the company and is about to store a class-D score.
    async with sessions.begin() as session:
        await facts.lock_company(session, company)
        before = await facts.latest_score(session, company)
        assert before is not None and before.risk_class != RiskClass.D
        deciding = asyncio.ensure_future(
            stub.DecideCreditLimit(_ask(number, 100_000), metadata=tenant.metadata)
        )
        await asyncio.sleep(1.0)  # it has read the score and waits for the company
        assert not deciding.done()
        worse = before._replace(
            risk_class=RiskClass.D, probability_of_default=0.6, score_time=dt.datetime.now(dt.UTC)
        )
        await facts.add_score(session, company, worse, "test")
    decided = await deciding
    assert decided.decision.outcome == limits_pb2.CREDIT_LIMIT_OUTCOME_DECLINED
    assert decided.decision.score.risk_class == common_pb2.RISK_CLASS_D


def _day(value: dt.date) -> date_pb2.Date:
    return date_pb2.Date(year=value.year, month=value.month, day=value.day)


async def _granted_limit(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey, start: int
) -> tuple[limits_pb2_grpc.CreditLimitServiceStub, str, str]:
    """(stub, company number, the name of a limit granted on a class-A buyer)."""
    number = norwegian_numbers(1, start=start)[0]
    await _statement(channel, feed, number, strong())
    stub = limits_pb2_grpc.CreditLimitServiceStub(channel)
    granted = await stub.DecideCreditLimit(_ask(number, 1_000_000), metadata=tenant.metadata)
    return stub, number, granted.decision.credit_limit


async def test_an_invoice_keeps_its_date_and_concurrent_first_reports_both_land(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    stub, number, limit = await _granted_limit(channel, feed, tenant, 81_625_000)
    today = dt.datetime.now(dt.UTC).date()
    day = _day

    def report(invoiced: dt.date, amount: int) -> limits_pb2.ReportOverduePaymentRequest:
        return limits_pb2.ReportOverduePaymentRequest(
            parent=limit,
            overdue_payment=limits_pb2.OverduePayment(
                invoice_id="INV-RACE",
                invoice_date=day(invoiced),
                invoice_due_date=day(today),
                overdue_amount=money_pb2.Money(currency_code="NOK", units=amount),
            ),
        )

    first, second = await asyncio.gather(
        stub.ReportOverduePayment(report(today, 100), metadata=tenant.metadata),
        stub.ReportOverduePayment(report(today, 200), metadata=tenant.metadata),
    )
    assert sorted([first.created, second.created]) == [False, True]
    assert first.overdue_payment.name == second.overdue_payment.name
    # The limit moves to euros (the buyer now reports in euros): the invoice
    # stays in kroner, a new one is in euros.
    euros = strong()
    euros.currency_code = "EUR"
    # A later period than strong()'s, one that has ended (today's).
    euros.period_end.CopyFrom(day(today))
    euros.period_start.CopyFrom(day(today - dt.timedelta(days=364)))
    await _statement(channel, feed, number, euros)
    regranted = await stub.DecideCreditLimit(
        _ask(number, 50_000, currency="EUR"), metadata=tenant.metadata
    )
    assert regranted.decision.credit_limit == limit
    aged = await stub.ReportOverduePayment(report(today, 250), metadata=tenant.metadata)
    assert not aged.created
    with pytest.raises(grpc.aio.AioRpcError) as kroner:
        fresh = report(today, 10)
        fresh.overdue_payment.invoice_id = "INV-NEW"
        await stub.ReportOverduePayment(fresh, metadata=tenant.metadata)
    assert "overdue_payment.overdue_amount.currency_code" in field_violations(kroner.value)
    # The date that made it insured cannot be moved (out of the cover, say).
    with pytest.raises(grpc.aio.AioRpcError) as moved:
        await stub.ReportOverduePayment(
            report(today - dt.timedelta(days=400), 300), metadata=tenant.metadata
        )
    assert moved.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "overdue_payment.invoice_date" in field_violations(moved.value)


async def test_a_decision_on_a_company_never_seen_does_not_create_it(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    number = norwegian_numbers(1, start=81_635_000)[0]
    stub = limits_pb2_grpc.CreditLimitServiceStub(channel)
    decided = await stub.DecideCreditLimit(_ask(number, 100_000), metadata=tenant.metadata)
    assert decided.decision.outcome == limits_pb2.CREDIT_LIMIT_OUTCOME_REFERRED
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await companies_pb2_grpc.CompanyDataServiceStub(channel).GetCompany(
            companies_pb2.GetCompanyRequest(name=f"companies/NO-{number}"),
            metadata=tenant.metadata,
        )
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_policy_change_does_not_move_a_claim_date_already_given(
    channel: grpc.aio.Channel,
    feed: TenantKey,
    tenant: TenantKey,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    stub, _, limit = await _granted_limit(channel, feed, tenant, 81_645_000)
    today = dt.datetime.now(dt.UTC).date()
    day = _day

    def report(invoice_id: str) -> limits_pb2.ReportOverduePaymentRequest:
        return limits_pb2.ReportOverduePaymentRequest(
            parent=limit,
            overdue_payment=limits_pb2.OverduePayment(
                invoice_id=invoice_id,
                invoice_date=day(today),
                invoice_due_date=day(today),
                overdue_amount=money_pb2.Money(currency_code="NOK", units=1_000),
            ),
        )

    first = await stub.ReportOverduePayment(report("INV-P1"), metadata=tenant.metadata)
    promised = first.overdue_payment.claim_eligible_date
    assert promised == day(today + dt.timedelta(days=180))  # the default policy's wait
    await stub.UpdateCreditPolicy(
        limits_pb2.UpdateCreditPolicyRequest(
            credit_policy=limits_pb2.CreditPolicy(version=1, protracted_default_waiting_days=90),
            update_mask=field_mask_pb2.FieldMask(paths=["protracted_default_waiting_days"]),
        ),
        metadata=tenant.metadata,
    )
    await run_claims_clock(sessions, dt.datetime.now(dt.UTC))
    aged = await stub.ReportOverduePayment(report("INV-P1"), metadata=tenant.metadata)
    assert aged.overdue_payment.claim_eligible_date == promised
    # An invoice first reported under the new policy waits its 90 days.
    second = await stub.ReportOverduePayment(report("INV-P2"), metadata=tenant.metadata)
    assert second.overdue_payment.claim_eligible_date == day(today + dt.timedelta(days=90))


async def test_a_decision_that_waited_for_the_company_uses_the_policy_committed_meanwhile(
    channel: grpc.aio.Channel,
    feed: TenantKey,
    tenant: TenantKey,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A decision held up by an intake's lock on the company, while the tenant
    declines the company's class: it comes after that policy, so it applies it."""
    number = norwegian_numbers(1, start=89_700_000)[0]
    scored = await _statement(channel, feed, number, healthy())
    stub = limits_pb2_grpc.CreditLimitServiceStub(channel)
    async with sessions.begin() as intake:  # an intake holding the company
        holder = await intake.scalar(text("SELECT pg_backend_pid()"))
        await intake.execute(
            text(
                "SELECT 1 FROM companies WHERE country = 'NO' AND register_number = :n FOR UPDATE"
            ),
            {"n": number},
        )
        deciding = asyncio.ensure_future(
            stub.DecideCreditLimit(_ask(number, 1_000), metadata=tenant.metadata)
        )
        async with sessions() as watcher:
            for _ in range(200):  # until a backend waits for the intake: the decision
                waiting = await watcher.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE CAST(:holder AS int) = ANY(pg_blocking_pids(pid))"
                    ),
                    {"holder": holder},
                )
                if waiting:
                    break
                await asyncio.sleep(0.05)
        assert waiting and not deciding.done()
        await stub.UpdateCreditPolicy(
            limits_pb2.UpdateCreditPolicyRequest(
                credit_policy=limits_pb2.CreditPolicy(
                    version=1, decline_class=scored.effect.score.risk_class
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["decline_class"]),
            ),
            metadata=tenant.metadata,
        )
    decision = (await asyncio.wait_for(deciding, 30)).decision
    assert decision.policy_version == 2
    assert decision.outcome == LIM.CREDIT_LIMIT_OUTCOME_DECLINED
