"""The re-score job reads facts in columns and scores them with
`Scorer.score_columns`; its scores must equal an intake's (statement objects,
`score_many`) for the same stored facts, whatever the facts look like."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.api.scoring_converters import statement
from creditwatch.server.domain.events import CompanyEvent, CompanyStatus, EventType
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.scores import StoredScore
from creditwatch.server.intake import score_companies
from creditwatch.server.jobs.rescoring import Rescorer, RescoreResult
from creditwatch.server.scoring.registry import ModelRegistry
from creditwatch.server.store import facts, rescoring
from tests.conftest import new_tenant
from tests.e2e.test_scoring import healthy
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio


def _comparable(score: StoredScore | None) -> StoredScore | None:
    return None if score is None else score._replace(score_time=datetime.min)


async def _invoice(
    session: AsyncSession,
    creditor: uuid.UUID,
    invoice: str,
    company: CompanyId,
    days: int,
    settled: date | None = None,
) -> None:
    """A creditor's open invoice `days` past due (settled on `settled`, if given)."""
    await facts.payment_experience_put(
        session,
        creditor,
        invoice,
        company,
        {
            "due_date": date.today() - timedelta(days=days),
            "days_past_due": days,
            "currency": "NOK",
            "amount": Decimal(10_000),
            "settled_date": settled,
        },
    )


def _overdue_reasons(score: StoredScore | None) -> list[str]:
    assert score is not None
    return [r.description for r in score.reasons if r.code == "OVERRIDE_OVERDUE_PAYMENTS"]


async def test_rescore_job_scores_equal_intake_scores_for_every_kind_of_company(
    sessions: async_sessionmaker[AsyncSession], registry: ModelRegistry
) -> None:
    tenant = (await new_tenant(sessions, "columns")).tenant_id
    second = (await new_tenant(sessions, "columns 2")).tenant_id
    third = (await new_tenant(sessions, "columns 3")).tenant_id
    companies = [CompanyId("NO", n) for n in norwegian_numbers(90, start=89_200_000)]
    base = statement(healthy(), "s")
    lone, mixed, bankrupt, dissolved, remarked, overdue, bare_bankrupt, bare = companies[-8:]
    async with sessions.begin() as session:
        for i, company in enumerate(companies[:-2]):
            await facts.lock_company(session, company)
            # Varied statements: scaled amounts, some items missing (constant
            # capital is then derived), other currencies, an older statement
            # that the latest must win over.
            changed = dataclasses.replace(
                base,
                total_assets=(base.total_assets or 1) * (1 + i / 7),
                net_profit=(base.net_profit or 1) * (i % 5 - 2) / 3,
                constant_capital=None if i % 3 == 0 else base.constant_capital,
                inventory=None if i % 4 == 0 else base.inventory,
                sales=0.0 if i % 11 == 0 else base.sales,
                currency=("NOK", "EUR", "SEK", "PLN")[i % 4],
            )
            if i % 6 == 0:
                older = dataclasses.replace(
                    base, period_end=date(2023, 12, 31), period_start=date(2023, 1, 1)
                )
                await facts.put_statement(session, company, older, "test", tenant)
            await facts.put_statement(session, company, changed, "test", tenant)
        for company in (bare_bankrupt, bare):
            await facts.lock_company(session, company)
        await facts.update_master(session, dissolved, {"status": CompanyStatus.BANKRUPT})
        opened = datetime(2026, 3, 1, tzinfo=UTC)
        await rescoring.add_events(
            session,
            [
                rescoring.NewEvent(
                    bankrupt, "e1", CompanyEvent(EventType.BANKRUPTCY_OPENED, opened), {}, "t"
                ),
                rescoring.NewEvent(
                    bare_bankrupt, "e2", CompanyEvent(EventType.BANKRUPTCY_OPENED, opened), {}, "t"
                ),
                rescoring.NewEvent(
                    remarked,
                    "e3",
                    CompanyEvent(EventType.PAYMENT_REMARK_REGISTERED, opened, "r1"),
                    {},
                    "t",
                ),
            ],
            None,
        )
        # Two creditors: the pooled invoices count.
        await _invoice(session, tenant, "inv-columns", overdue, 300)
        await _invoice(session, second, "inv-columns", overdue, 120)
        # One creditor, however many invoices: they do not.
        await _invoice(session, tenant, "inv-lone-1", lone, 300)
        await _invoice(session, tenant, "inv-lone-2", lone, 200)
        # Other creditors whose invoices are settled or not yet seriously
        # overdue are no second creditor.
        await _invoice(session, tenant, "inv-mixed", mixed, 300)
        await _invoice(session, second, "inv-mixed", mixed, 300, date.today())
        await _invoice(session, third, "inv-mixed", mixed, 30)

    scorer = registry.active
    async with sessions() as session, session.begin():
        effects = await score_companies(session, scorer, companies)
        await session.rollback()  # only the scores matter, not storing them
    expected = {c: _comparable(e.score) for c, e in effects.items()}
    assert expected[bare] is None and expected[bare_bankrupt] is not None
    assert _overdue_reasons(expected[overdue]) == [
        "2 open invoice(s) more than 90 days past due reported by 2 creditor(s): 1 class(es) worse"
    ]
    assert _overdue_reasons(expected[lone]) == _overdue_reasons(expected[mixed]) == []

    await Rescorer(sessions, registry).rescore(companies, result := RescoreResult())
    async with sessions() as session:
        got = {c: _comparable(await facts.latest_score(session, c)) for c in companies}
    assert result.scored == len(companies) - 1
    assert got == expected


async def test_rescore_job_skips_companies_an_intake_holds(
    sessions: async_sessionmaker[AsyncSession], registry: ModelRegistry
) -> None:
    companies = [CompanyId("NO", n) for n in norwegian_numbers(3, start=89_300_000)]
    tenant = uuid.uuid4()
    base = statement(healthy(), "s")
    async with sessions.begin() as session:
        for company in companies:
            await facts.lock_company(session, company)
            await facts.put_statement(session, company, base, "test", tenant)
    async with sessions.begin() as held:
        await facts.lock_company(held, companies[1])
        await Rescorer(sessions, registry).rescore(companies, result := RescoreResult())
        count = await held.scalar(
            text("SELECT count(*) FROM scores WHERE register_number = :n"),
            {"n": companies[1].register_number},
        )
    assert result.skipped_locked == 1 and result.scored == 2
    assert count == 0


async def test_an_events_only_score_goes_to_its_own_company_whatever_the_key_order(
    sessions: async_sessionmaker[AsyncSession], registry: ModelRegistry
) -> None:
    """A chunk where every company gets a score, one of them from events only
    (no statement) and sorting first: each score lands on its own company."""
    first, *rest = [CompanyId("NO", n) for n in norwegian_numbers(3, start=89_400_000)]
    base = statement(healthy(), "s")
    opened = datetime(2026, 3, 1, tzinfo=UTC)
    async with sessions.begin() as session:
        await facts.lock_company(session, first)
        for i, company in enumerate(rest):
            await facts.lock_company(session, company)
            scaled = dataclasses.replace(base, net_profit=(base.net_profit or 1) * (i + 2))
            await facts.put_statement(session, company, scaled, "test", None)
        await rescoring.add_events(
            session,
            [
                rescoring.NewEvent(
                    first, "e", CompanyEvent(EventType.BANKRUPTCY_OPENED, opened), {}, "t"
                )
            ],
            None,
        )
    async with sessions() as session, session.begin():
        effects = await score_companies(session, registry.active, [first, *rest])
        await session.rollback()
    expected = {c: _comparable(e.score) for c, e in effects.items()}
    assert all(score is not None for score in expected.values())

    await Rescorer(sessions, registry).rescore([first, *rest], result := RescoreResult())
    async with sessions() as session:
        got = {c: _comparable(await facts.latest_score(session, c)) for c in [first, *rest]}
    assert result.scored == 3
    assert got == expected
