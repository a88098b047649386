"""The day's portfolio snapshots are caught up: a replica started after
00:00 UTC takes them at start-up, and a day whose leader did not plan it is
taken at the next attempt; taking a day again changes nothing taken."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.api.scoring_converters import statement
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.watchlists import EntryColumns, EntrySpec, WatchListSpec
from creditwatch.server.intake import Intake
from creditwatch.server.jobs.leader import Leadership
from creditwatch.server.jobs.scheduler import Jobs, take_snapshots
from creditwatch.server.scoring.registry import ModelRegistry
from creditwatch.server.store.watchlists import WatchListStore
from tests.e2e.test_scoring import distressed
from tests.integration.test_jobs import _settings, _watched

pytestmark = pytest.mark.asyncio


async def _snapshot(
    sessions: async_sessionmaker[AsyncSession], tenant: uuid.UUID, day: date
) -> list[tuple[str, float | None]]:
    """The tenant's snapshot rows of `day`: (company, PD), by company."""
    async with sessions() as session:
        rows = await session.execute(
            text(
                "SELECT register_number, probability_of_default FROM portfolio_snapshots "
                "WHERE tenant_id = :t AND snapshot_date = :day ORDER BY register_number"
            ),
            {"t": tenant, "day": day},
        )
        return [(number, pd) for number, pd in rows.all()]


async def _days(sessions: async_sessionmaker[AsyncSession], tenant: uuid.UUID) -> list[date]:
    async with sessions() as session:
        rows = await session.execute(
            text("SELECT snapshot_date FROM portfolio_snapshot_days WHERE tenant_id = :t"),
            {"t": tenant},
        )
        return [day for (day,) in rows.all()]


async def _until(condition: Callable[[], Awaitable[bool]], seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not so within {seconds} s")
        await asyncio.sleep(0.05)


async def test_taking_a_day_again_writes_only_the_lists_without_its_snapshot(
    own_database: tuple[str, async_sessionmaker[AsyncSession]], registry: ModelRegistry
) -> None:
    _, sessions = own_database
    today = datetime.now(UTC).date()
    tenant, companies = await _watched(sessions, registry, 99_440_000, 3)
    assert await take_snapshots(sessions, today) == 3
    first = await _snapshot(sessions, tenant, today)
    # A company's score changes and a list is created after the day was taken.
    await Intake(sessions, registry).submit_statement(
        companies[0], statement(distressed(), "s2"), "test", tenant
    )
    assert await take_snapshots(sessions, today) == 0
    assert await _snapshot(sessions, tenant, today) == first  # nothing rewritten
    store = WatchListStore(sessions)
    late = await store.create(tenant, WatchListSpec("late"))
    newcomer = CompanyId("NO", companies[1].register_number)
    await store.add_entries(tenant, uuid.UUID(late.id), EntryColumns.of([EntrySpec(newcomer)]))
    assert await take_snapshots(sessions, today) == 1  # the new list's entry only
    again = await _snapshot(sessions, tenant, today)
    assert sorted(again) == sorted([*first, (newcomer.register_number, first[1][1])])
    assert await take_snapshots(sessions, today) == 0
    assert sorted(await _days(sessions, tenant)) == [today, today]  # one per list


class _Counted(Jobs):
    """Jobs that count their scheduled attempts at the day's snapshots."""

    attempts = 0

    async def _scheduled_snapshots(self) -> int | None:
        try:
            return await super()._scheduled_snapshots()
        finally:
            self.attempts += 1


async def test_a_replica_started_after_midnight_takes_the_days_snapshots(
    own_database: tuple[str, async_sessionmaker[AsyncSession]], registry: ModelRegistry
) -> None:
    url, sessions = own_database
    today = datetime.now(UTC).date()
    tenant, _ = await _watched(sessions, registry, 99_450_000, 2)
    jobs = Jobs(_settings(), url, sessions, registry)
    jobs.start()
    try:

        async def taken() -> bool:
            return await _days(sessions, tenant) == [today]

        await _until(taken)
    finally:
        await jobs.stop()


async def test_a_day_whose_leader_died_before_planning_it_is_taken_at_the_next_attempt(
    own_database: tuple[str, async_sessionmaker[AsyncSession]], registry: ModelRegistry
) -> None:
    """Another replica holds the day's lock at this one's start-up, then
    dies before its plan commits: the next attempt, within the catch-up
    interval, takes the day. Once taken, the day is not attempted again: a
    list created later gets its first snapshot the next day."""
    url, sessions = own_database
    today = datetime.now(UTC).date()
    tenant, _ = await _watched(sessions, registry, 99_460_000, 2)
    jobs = _Counted(_settings(), url, sessions, registry, snapshot_catch_up_seconds=0.5)
    try:
        async with Leadership(url).lead("portfolio-snapshots") as leading:
            assert leading
            jobs.start()

            async def tried() -> bool:
                return jobs.attempts >= 1

            await _until(tried)
            assert await _days(sessions, tenant) == []  # the other replica's day, not planned

        async def taken() -> bool:
            return await _days(sessions, tenant) == [today]

        await _until(taken)
        assert len(await _snapshot(sessions, tenant, today)) == 2
        await WatchListStore(sessions).create(tenant, WatchListSpec("later"))
        later = jobs.attempts

        async def tried_twice_more() -> bool:
            return jobs.attempts >= later + 2

        await _until(tried_twice_more)
        assert await _days(sessions, tenant) == [today]
    finally:
        await jobs.stop()


class _CountedClaims(Jobs):
    """Jobs that count their runs of the claims clock."""

    claim_runs = 0

    async def claims(self) -> int | None:
        try:
            return await super().claims()
        finally:
            self.claim_runs += 1


async def test_the_claims_clock_runs_at_start_up_and_then_on_an_interval(
    own_database: tuple[str, async_sessionmaker[AsyncSession]], registry: ModelRegistry
) -> None:
    """Not only at 00:05 UTC: a replica restarted across it would otherwise
    alert a claim that became eligible a day late."""
    url, sessions = own_database
    jobs = _CountedClaims(_settings(), url, sessions, registry, claims_catch_up_seconds=1.0)
    jobs.start()
    try:

        async def ran_twice() -> bool:
            return jobs.claim_runs >= 2

        await _until(ran_twice, seconds=30)
    finally:
        await jobs.stop()
