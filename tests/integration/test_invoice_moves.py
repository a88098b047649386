"""Two first reports of one invoice on different companies, at once: whichever
commits last holds the invoice, and both companies are scored on where it
ended (before, the company it was taken from kept a score counting it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.api.scoring_converters import statement
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.overrides import OverridePolicy
from creditwatch.server.domain.scores import StoredScore
from creditwatch.server.intake import Intake, PaymentReport, score_companies
from creditwatch.server.scoring.registry import ModelRegistry
from creditwatch.server.store import facts
from tests.conftest import new_tenant
from tests.e2e.test_scoring import healthy
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def intake(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[Intake]:
    with ThreadPoolExecutor(1) as executor:
        yield Intake(sessions, ModelRegistry.load(executor, OverridePolicy()))


def _overdue(company: CompanyId, invoice: str) -> PaymentReport:
    days = 200
    return PaymentReport(
        invoice,
        company,
        {
            "due_date": date.today() - timedelta(days=days),
            "days_past_due": days,
            "currency": "NOK",
            "amount": Decimal(10_000),
            "settled_date": None,
        },
    )


def _comparable(score: StoredScore | None) -> tuple[object, ...] | None:
    return None if score is None else (score.risk_class, score.probability_of_default)


async def test_concurrent_first_reports_of_one_invoice_leave_both_companies_scored_right(
    sessions: async_sessionmaker[AsyncSession], intake: Intake
) -> None:
    first, second = [CompanyId("NO", n) for n in norwegian_numbers(2, start=98_400_000)]
    creditor = (await new_tenant(sessions, "invoice moves")).tenant_id
    other = (await new_tenant(sessions, "another creditor")).tenant_id
    for company in (first, second):
        async with sessions.begin() as session:
            await facts.lock_company(session, company)
            await facts.put_statement(session, company, statement(healthy(), "s"), "t", other)
        # Another creditor's overdue invoice on each: one more creditor is
        # enough for the pooled data to move a class.
        await intake.report_payment(other, _overdue(company, f"other-{company.register_number}"))

    # The first report waits for the lock on `first` (held here), after it has
    # read where the invoice is; the second report starts meanwhile.
    async with sessions.begin() as holder:
        await holder.execute(
            text("SELECT 1 FROM companies WHERE register_number = :n FOR UPDATE"),
            {"n": first.register_number},
        )
        to_first = asyncio.create_task(intake.report_payment(creditor, _overdue(first, "inv-1")))
        await asyncio.sleep(0.5)
        to_second = asyncio.create_task(intake.report_payment(creditor, _overdue(second, "inv-1")))
        await asyncio.sleep(0.5)
    await asyncio.gather(to_first, to_second)

    async with sessions() as session:
        holds = await facts.invoice_company(session, creditor, "inv-1")
        stored = {c: _comparable(await facts.latest_score(session, c)) for c in (first, second)}
    async with sessions() as session, session.begin():
        fresh = await score_companies(session, intake._registry.active, [first, second])
        await session.rollback()
    assert holds == second  # the report that committed last
    assert stored == {c: _comparable(e.score) for c, e in fresh.items()}
    assert stored[first] != stored[second]  # only `second` has two creditors now
