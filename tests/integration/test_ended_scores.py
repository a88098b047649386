"""A score that ends (an override lifted, no statement) is gone everywhere at commit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server import intake as intake_module
from creditwatch.server.domain.alerts import Change
from creditwatch.server.domain.errors import FailedPrecondition
from creditwatch.server.domain.events import CompanyStatus
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.scores import RiskClass
from creditwatch.server.intake import Intake
from creditwatch.server.scoring.registry import ModelRegistry
from creditwatch.server.store import database, facts
from creditwatch.server.store.score_cache import ScoreCache
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio


async def _until(condition: object, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


async def test_another_replicas_cache_drops_a_score_that_ended(
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    other_replica: async_sessionmaker[AsyncSession],
    registry: ModelRegistry,
) -> None:
    company = CompanyId("NO", norwegian_numbers(1, start=97_830_000)[0])
    writer = Intake(sessions, registry)
    cache = ScoreCache(database.async_url(database_url))
    reader = Intake(other_replica, registry, cache)
    cache.start()
    try:
        await _until(lambda: cache.live)
        _, _, bankrupt = await writer.upsert_company(
            company, {"status": int(CompanyStatus.BANKRUPT)}
        )
        assert bankrupt.score is not None and bankrupt.score.risk_class == RiskClass.D
        # The other replica now serves it from memory. (A read that raced with
        # any score notice is not cached: other tests write scores meanwhile.)
        for _ in range(100):
            read, _ = await reader.score_company(company)
            if cache.get(company) is read:
                break
            await asyncio.sleep(0.02)
        assert cache.get(company) is read

        _, _, active = await writer.upsert_company(company, {"status": int(CompanyStatus.ACTIVE)})
        assert active.score is None and active.previous == bankrupt.score
        await _until(lambda: cache.get(company) is None)  # told at commit (NOTIFY)
        with pytest.raises(FailedPrecondition):
            await reader.score_company(company)
        async with sessions() as session:
            assert await facts.latest_score(session, company) is None
            left = await session.scalar(
                text("SELECT count(*) FROM scores WHERE country = 'NO' AND register_number = :n"),
                {"n": company.register_number},
            )
        assert left == 0
    finally:
        await cache.stop()


async def test_an_intake_that_fails_after_ending_a_score_keeps_it(
    sessions: async_sessionmaker[AsyncSession],
    registry: ModelRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ending is part of the intake's one transaction: rolled back with it."""
    company = CompanyId("NO", norwegian_numbers(1, start=97_840_000)[0])
    intake = Intake(sessions, registry)
    _, _, bankrupt = await intake.upsert_company(company, {"status": int(CompanyStatus.BANKRUPT)})
    written = intake_module.write_alerts

    async def fail_after_writing(
        session: AsyncSession, changes: Sequence[tuple[CompanyId, Change]]
    ) -> dict[CompanyId, int]:
        await written(session, changes)
        raise RuntimeError("lost mid-intake")

    monkeypatch.setattr(intake_module, "write_alerts", fail_after_writing)
    with pytest.raises(RuntimeError):
        await intake.upsert_company(company, {"status": int(CompanyStatus.ACTIVE)})
    score, computed = await intake.score_company(company)
    assert not computed and score == bankrupt.score


async def test_a_bankrupt_status_dates_a_bankruptcy_for_the_claims_clock(
    sessions: async_sessionmaker[AsyncSession], registry: ModelRegistry
) -> None:
    """A bureau that sets status BANKRUPT (UpsertCompany) instead of recording
    the event: the claims clock moves waiting invoices to the insolvency basis
    as it does for the event, dated when the status took effect."""
    from datetime import UTC, datetime

    from creditwatch.server.store import limits as store_limits

    company, quiet, undated = (CompanyId("NO", n) for n in norwegian_numbers(3, start=97_850_000))
    intake = Intake(sessions, registry)
    await intake.upsert_company(quiet, {"status": int(CompanyStatus.ACTIVE)})
    before = datetime.now(UTC).date()
    await intake.upsert_company(company, {"status": int(CompanyStatus.BANKRUPT)})
    # A status of before migration 0017 has no time: only its event counts
    # (a later master-data write must not date a bankruptcy to today).
    await intake.upsert_company(undated, {"status": int(CompanyStatus.BANKRUPT)})
    async with sessions.begin() as session:
        await session.execute(
            text("UPDATE companies SET status_time = NULL WHERE register_number = :n"),
            {"n": undated.register_number},
        )
    async with sessions() as session:
        found = await store_limits.bankruptcy_dates(session, [company, quiet, undated])
    assert list(found) == [company]
    assert before <= found[company][0] <= datetime.now(UTC).date()
