"""A standing limit withdrawn and later granted again does not cover the gap
(the store's grant and risk re-decision keep `cover`; migration 0019 backfills it)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.domain.alerts import Change, RescoreFact, RescoreReason
from creditwatch.server.domain.financials import FinancialStatement
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.limits import Decision, LimitState, Outcome, PaymentState, Request
from creditwatch.server.domain.scores import RiskClass, StoredScore
from creditwatch.server.store import database, facts, migrate
from creditwatch.server.store import limits as store
from tests.conftest import new_tenant
from tests.identifiers import norwegian_numbers

JAN_10 = datetime(2026, 1, 10, 9, tzinfo=UTC)
MAR_1 = datetime(2026, 3, 1, 9, tzinfo=UTC)
MAY_1 = datetime(2026, 5, 1, 9, tzinfo=UTC)
END = datetime(2026, 12, 31, tzinfo=UTC)
ASKED = Request("NOK", Decimal(100_000), 30)


def _approved(until: datetime) -> Decision:
    return Decision(Outcome.APPROVED, Decimal(100_000), 30, until)


def _score(risk_class: RiskClass) -> StoredScore:
    return StoredScore(0.01, risk_class, risk_class, (), "test", None, MAR_1)


@pytest.mark.asyncio
async def test_a_limit_granted_again_after_a_withdrawal_does_not_cover_the_gap(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    tenant = (await new_tenant(sessions, "cover")).tenant_id
    company = CompanyId("NO", norwegian_numbers(1, start=98_300_000)[0])
    async with sessions.begin() as session:
        await facts.lock_company(session, company)
        await store.grant(
            session, tenant, company, _approved(END), ASKED, "",
            {}, JAN_10,
        )  # fmt: skip
    async with sessions.begin() as session:
        # The company falls to class D: the default policy declines D, which withdraws.
        fact = RescoreFact(RescoreReason.PAYMENT_DATA, "test")
        changed = await store.redecide_on_risk(
            session,
            [(company, Change(fact, _score(RiskClass.B), _score(RiskClass.D), MAR_1))],
            MAR_1,
        )
        assert [c.withdrawn for c in changed] == [True]
    async with sessions.begin() as session:
        limit = await store.grant(
            session, tenant, company, _approved(datetime(2027, 4, 30, tzinfo=UTC)), ASKED, "",
            {}, MAY_1,
        )  # fmt: skip
    assert limit.state == LimitState.ACTIVE
    insured = {
        day: limit.insured_on(day)
        for day in (date(2026, 1, 9), date(2026, 2, 1), date(2026, 3, 1), date(2026, 4, 1))
    }
    assert insured == {
        date(2026, 1, 9): False,  # before the first grant
        date(2026, 2, 1): True,
        date(2026, 3, 1): False,  # withdrawn that day
        date(2026, 4, 1): False,  # the gap: counted as insured before
    }
    assert limit.insured_on(date(2026, 5, 1)) and limit.insured_on(date(2027, 4, 30))
    assert not limit.insured_on(date(2027, 5, 1))


async def _sql(url: str, statement: str, **values: object) -> list[tuple[object, ...]]:
    engine = database.create_engine(url, 1)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(statement), values)
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        await engine.dispose()


def test_0019_backfills_the_period_each_row_tells(fresh_database: Callable[[], str]) -> None:
    url = database.async_url(fresh_database())
    migrate.upgrade(url, "0018")
    tenant = uuid.uuid4()
    asyncio.run(_sql(url, "INSERT INTO tenants (id, display_name) VALUES (:t, 'cover')", t=tenant))
    rows = {
        # id: (state, create, update, valid_until)
        "active": (1, JAN_10, datetime(2026, 2, 1, tzinfo=UTC), END),
        "withdrawn": (2, JAN_10, MAR_1, END),
        "withdrawn at once": (2, JAN_10, JAN_10.replace(hour=11), END),
    }
    ids = {name: uuid.uuid4() for name in rows}
    for i, (name, (state, created, updated, until)) in enumerate(rows.items()):
        asyncio.run(
            _sql(
                url,
                "INSERT INTO credit_limits (tenant_id, id, country, register_number, "
                "external_reference, state, currency, amount, max_payment_terms_days, "
                "valid_until, latest_decision, create_time, update_time) VALUES "
                "(:t, :i, 'NO', :n, '', :s, 'NOK', 1000, 30, :v, '{}', :c, :u)",
                t=tenant,
                i=ids[name],
                n=f"9000000{i}",
                s=state,
                v=until,
                c=created,
                u=updated,
            )
        )
    migrate.upgrade(url, "0019")
    got = dict(
        asyncio.run(_sql(url, "SELECT id, cover FROM credit_limits WHERE tenant_id = :t", t=tenant))
    )
    assert got[ids["active"]] == [["2026-01-10", "2026-12-31"]]
    assert got[ids["withdrawn"]] == [["2026-01-10", "2026-02-28"]]
    assert got[ids["withdrawn at once"]] == []
    migrate.downgrade(url, "0018")
    columns = asyncio.run(
        _sql(
            url,
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'credit_limits'",
        )
    )
    assert ("cover",) not in columns


async def _old_release_update(
    sessions: async_sessionmaker[AsyncSession], tenant: uuid.UUID, limit_id: uuid.UUID, sql: str,
    **values: object,
) -> None:  # fmt: skip
    """An UPDATE as a replica of the release before 0019 writes it: no `cover`."""
    async with sessions.begin() as session:
        await session.execute(
            text(f"UPDATE credit_limits SET {sql} WHERE tenant_id = :tenant AND id = :id"),
            {"tenant": tenant, "id": limit_id, **values},
        )


@pytest.mark.asyncio
async def test_a_withdrawal_or_a_grant_by_an_older_replica_is_read_from_the_row(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """During a rolling upgrade, replicas of the earlier release change limits
    without keeping `cover`; the row itself still tells what they did."""
    tenant = (await new_tenant(sessions, "cover, old replicas")).tenant_id
    withdrawn_co, regranted_co, shortened_co = (
        CompanyId("NO", n) for n in norwegian_numbers(3, start=98_390_000)
    )
    limits = {}
    for company in (withdrawn_co, regranted_co, shortened_co):
        async with sessions.begin() as session:
            await facts.lock_company(session, company)
            limits[company] = await store.grant(
                session, tenant, company, _approved(END), ASKED, "", {}, JAN_10
            )
    # The earlier release's withdrawal on 1 March: the gap is not insured.
    await _old_release_update(
        sessions, tenant, limits[withdrawn_co].id,
        "state = 2, amount = 0, max_payment_terms_days = 0, update_time = :t", t=MAR_1,
    )  # fmt: skip
    # This release withdraws the other on 1 March, and the earlier one grants
    # it again on 1 May: the new period is insured, the gap is not.
    async with sessions.begin() as session:
        fact = RescoreFact(RescoreReason.PAYMENT_DATA, "test")
        worse = Change(fact, _score(RiskClass.B), _score(RiskClass.D), MAR_1)
        await store.redecide_on_risk(session, [(regranted_co, worse)], MAR_1)
    await _old_release_update(
        sessions, tenant, limits[regranted_co].id,
        "state = 1, amount = 100000, valid_until = :u, update_time = :t",
        u=datetime(2027, 4, 30, tzinfo=UTC), t=MAY_1,
    )  # fmt: skip
    # The earlier release decides the third again on 1 March, until 30 June only.
    await _old_release_update(
        sessions, tenant, limits[shortened_co].id, "valid_until = :u, update_time = :t",
        u=datetime(2026, 6, 30, tzinfo=UTC), t=MAR_1,
    )  # fmt: skip
    async with sessions() as session:
        withdrawn = await store.get(session, tenant, limits[withdrawn_co].id)
        regranted = await store.get(session, tenant, limits[regranted_co].id)
        shortened = await store.get(session, tenant, limits[shortened_co].id)
    assert withdrawn is not None and regranted is not None and shortened is not None
    assert shortened.insured_on(date(2026, 6, 30)) and not shortened.insured_on(date(2026, 8, 1))
    assert withdrawn.insured_on(date(2026, 2, 1)) and not withdrawn.insured_on(date(2026, 4, 1))
    assert [regranted.insured_on(date(2026, m, 1)) for m in (2, 4, 6)] == [True, False, True]


@pytest.mark.asyncio
async def test_an_invoice_eligible_once_then_waiting_again_alerts_no_second_time(
    own_database: tuple[str, async_sessionmaker[AsyncSession]],
) -> None:
    # A database of its own: the claims clock runs over every tenant's
    # waiting invoices, and here on this tenant's policy.
    _, sessions = own_database
    tenant = (await new_tenant(sessions, "claims once")).tenant_id
    company = CompanyId("NO", norwegian_numbers(1, start=98_310_000)[0])
    async with sessions.begin() as session:
        await facts.lock_company(session, company)
        limit = await store.grant(
            session, tenant, company, _approved(datetime(2027, 12, 31, tzinfo=UTC)), ASKED, "",
            {}, JAN_10,
        )  # fmt: skip
        rules = await store.policy(session, tenant)
    wait = timedelta(days=rules.protracted_default_waiting_days)
    invoiced = date(2026, 1, 15)
    values = {
        "invoice_id": "INV-MOVED",
        "invoice_date": invoiced,
        "due_date": invoiced,
        "currency": "NOK",
        "amount": Decimal(5_000),
        "settled_date": None,
    }
    # Reported when its protracted-default wait is over: eligible, alerted.
    reported_at = datetime.combine(invoiced + wait, datetime.min.time(), UTC)
    async with sessions.begin() as session:
        payment, _, claim = await store.report_overdue(
            session, tenant, limit, values, rules, reported_at
        )
    assert payment.state == PaymentState.CLAIM_ELIGIBLE and claim is not None
    # Reported again with a due date 60 days later: waiting again.
    later_due = invoiced + timedelta(days=60)
    async with sessions.begin() as session:
        payment, _, claim = await store.report_overdue(
            session, tenant, limit, values | {"due_date": later_due}, rules, reported_at
        )
    assert payment.state == PaymentState.WAITING and claim is None

    async def rules_of(_tenant: uuid.UUID, _version: int | None) -> object:
        return rules

    # When the moved date's wait is over, the clock marks it eligible again,
    # without a second alert: the invoice's one CLAIM_ELIGIBLE alert was raised.
    due_again = datetime.combine(later_due + wait, datetime.min.time(), UTC)
    after = None
    found = []
    while True:
        async with sessions.begin() as session:
            due, after = await store.claims_due(session, rules_of, due_again, after)
        found += [c for c in due if c.overdue_payment == payment.name]
        if after is None:
            break
    assert found == []
    async with sessions() as session:
        state = await session.scalar(
            text("SELECT state FROM overdue_payments WHERE id = :i"), {"i": payment.id}
        )
    assert state == int(PaymentState.CLAIM_ELIGIBLE)


@pytest.mark.asyncio
async def test_a_referred_re_decision_keeps_the_amount_and_caps_the_terms(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    tenant = (await new_tenant(sessions, "referred terms")).tenant_id
    company = CompanyId("NO", norwegian_numbers(1, start=98_320_000)[0])
    ninety_days = Request("NOK", Decimal(100_000), 90)
    async with sessions.begin() as session:
        await facts.lock_company(session, company)
        # The latest statement is years old: the rules refer any new decision.
        await facts.put_statement(
            session,
            company,
            FinancialStatement(
                period_start=date(2020, 1, 1),
                period_end=date(2020, 12, 31),
                currency="NOK",
                total_assets=1e7,
                equity=5e6,
                sales=2e7,
            ),
            "test",
            tenant,
        )
        await store.grant(
            session, tenant, company,
            Decision(Outcome.APPROVED, Decimal(100_000), 90, END), ninety_days, "",
            {}, JAN_10,
        )  # fmt: skip
    async with sessions.begin() as session:
        # A to C: class C allows 30 days of terms (the default policy).
        fact = RescoreFact(RescoreReason.SCHEDULED, "test")
        changed = await store.redecide_on_risk(
            session,
            [(company, Change(fact, _score(RiskClass.A), _score(RiskClass.C), MAR_1))],
            MAR_1,
        )
    assert [(c.withdrawn, "30 days" in c.summary) for c in changed] == [(False, True)]
    async with sessions() as session:
        after = await store.standing(session, tenant, company)
    assert after is not None
    assert after.amount == Decimal(100_000)  # the rules could not size it: kept
    assert after.max_payment_terms_days == 30
    assert after.state == LimitState.ACTIVE
    codes = [code for code, _ in after.latest_decision["reasons"]]
    assert codes[0] == "TERMS_CAPPED" and "STATEMENT_TOO_OLD" in codes

    # B, which allows 60 days, asks nothing more of a limit at 30: no change.
    async with sessions.begin() as session:
        again = await store.redecide_on_risk(
            session,
            [(company, Change(fact, _score(RiskClass.A), _score(RiskClass.B), MAR_1))],
            MAR_1,
        )
    assert again == []
