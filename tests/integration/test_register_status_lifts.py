"""A later register status ends a bankruptcy or dissolution event, in the
intake's re-score and the scheduled one alike (both read the status's time)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.api.scoring_converters import statement
from creditwatch.server.domain.events import CompanyEvent, CompanyStatus, EventType
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.scores import RiskClass
from creditwatch.server.intake import score_companies
from creditwatch.server.jobs.rescoring import Rescorer, RescoreResult
from creditwatch.server.scoring.registry import ModelRegistry
from creditwatch.server.store import facts, rescoring
from tests.conftest import new_tenant
from tests.e2e.test_scoring import healthy
from tests.identifiers import norwegian_numbers
from tests.integration.test_rescore_columns import _comparable

pytestmark = pytest.mark.asyncio

MAY_1 = datetime(2026, 5, 1, tzinfo=UTC)
JUNE_1 = datetime(2026, 6, 1, tzinfo=UTC)


async def test_a_later_status_lifts_the_event_in_both_re_scores(
    sessions: async_sessionmaker[AsyncSession], registry: ModelRegistry
) -> None:
    tenant = (await new_tenant(sessions, "status lifts")).tenant_id
    companies = [CompanyId("NO", n) for n in norwegian_numbers(5, start=98_100_000)]
    lifted, dissolution_lifted, same_day, deleted, bare_lifted = companies
    kinds = {
        lifted: (EventType.BANKRUPTCY_OPENED, CompanyStatus.ACTIVE, JUNE_1),
        dissolution_lifted: (EventType.COMPULSORY_DISSOLUTION, CompanyStatus.ACTIVE, JUNE_1),
        same_day: (EventType.BANKRUPTCY_OPENED, CompanyStatus.ACTIVE, MAY_1.replace(hour=20)),
        deleted: (EventType.BANKRUPTCY_OPENED, CompanyStatus.DELETED, JUNE_1),
        bare_lifted: (EventType.BANKRUPTCY_OPENED, CompanyStatus.ACTIVE, JUNE_1),
    }
    async with sessions.begin() as session:
        for company, (kind, status, at) in kinds.items():
            await facts.lock_company(session, company)
            if company != bare_lifted:
                await facts.put_statement(
                    session, company, statement(healthy(), "s"), "test", tenant
                )
            await rescoring.add_events(
                session,
                [rescoring.NewEvent(company, "e1", CompanyEvent(kind, MAY_1), {}, "t")],
                None,
            )
            await facts.update_master(session, company, {"status": int(status)}, at)

    async with sessions() as session, session.begin():
        effects = await score_companies(session, registry.active, companies)
        await session.rollback()  # only the scores matter here
    intake = {c: _comparable(e.score) for c, e in effects.items()}

    await Rescorer(sessions, registry).rescore(companies, RescoreResult())
    async with sessions() as session:
        job = {c: _comparable(await facts.latest_score(session, c)) for c in companies}
    assert job == intake

    def risk_class(company: CompanyId) -> RiskClass | None:
        score = intake[company]
        return None if score is None else score.risk_class

    assert risk_class(lifted) not in (None, RiskClass.D)
    assert risk_class(dissolution_lifted) not in (None, RiskClass.D)
    assert risk_class(same_day) == RiskClass.D
    assert risk_class(deleted) == RiskClass.D
    assert risk_class(bare_lifted) is None  # nothing left to score it on
