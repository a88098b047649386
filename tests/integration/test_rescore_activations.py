"""Re-scoring and model activations across replicas, on a real PostgreSQL.

Each "replica" is a ModelRegistry (the models it loaded, its active one) with
a Rescorer or Jobs on it. Activations are recorded in a database of the
test's own (`own_database`), so they do not reach other tests' re-scores."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.api.scoring_converters import statement
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.intake import Intake
from creditwatch.server.jobs.rescoring import Rescorer, RescoreResult
from creditwatch.server.jobs.scheduler import Jobs
from creditwatch.server.scoring.engine import Scorer
from creditwatch.server.scoring.registry import ModelRegistry
from creditwatch.server.store import rescoring
from creditwatch.server.store.activations import ActivationStore
from tests.e2e.test_scoring import distressed
from tests.integration.test_jobs import _settings, _watched

pytestmark = pytest.mark.asyncio

DAY = 86_400.0


def _models(registry: ModelRegistry) -> tuple[Scorer, Scorer]:
    """(the newest shipped model, an older one)."""
    newest, older, *_ = registry.all()
    return newest, older


async def _latest(
    sessions: async_sessionmaker[AsyncSession], companies: Sequence[CompanyId]
) -> dict[str, str]:
    """Each company's current score's model version, by register number."""
    async with sessions() as session:
        rows = await session.execute(
            text(
                "SELECT DISTINCT ON (register_number) register_number, model_version "
                "FROM scores WHERE country = 'NO' AND register_number = ANY(:numbers) "
                "ORDER BY register_number, id DESC"
            ),
            {"numbers": [c.register_number for c in companies]},
        )
        return {number: version for number, version in rows.all()}


async def _count(sessions: async_sessionmaker[AsyncSession], sql: str, **values: object) -> int:
    async with sessions() as session:
        return int(await session.scalar(text(sql), values) or 0)


async def test_a_replica_without_the_activated_model_neither_leads_nor_shares_a_rescore(
    own_database: tuple[str, async_sessionmaker[AsyncSession]],
    registry: ModelRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A half-rolled-out activation: replica A has the activated (older)
    model, replica B has not. Runs led in turn by A and B leave every company
    on the activated model, re-scored once, with no alert after A's first
    run; B's runs, its share of left-over chunks and its register-feed pass
    do nothing, and it says which version it lacks."""
    url, sessions = own_database
    newest, older = _models(registry)
    has_both = ModelRegistry(registry.all(), newest.version)
    lacks_older = ModelRegistry([newest])
    tenant, companies = await _watched(sessions, has_both, 99_410_000, 12)
    intake = Intake(sessions, has_both)
    for company in companies[::3]:  # classes that the two models see differently
        await intake.submit_statement(company, statement(distressed(), "s2"), "test", tenant)

    activations = ActivationStore(sessions)
    await activations.record(older.version, None)
    await has_both.sync(activations)
    await lacks_older.sync(activations)
    assert (has_both.active, lacks_older.active) == (older, newest)

    a = Rescorer(sessions, has_both, chunk=5, workers=2, replica="a")
    b = Rescorer(sessions, lacks_older, chunk=5, workers=2, replica="b")
    first = await a.run(stale_after_seconds=DAY)
    assert first.scored == len(companies)
    alerts = await _count(sessions, "SELECT count(*) FROM alerts WHERE tenant_id = :t", t=tenant)
    with caplog.at_level(logging.WARNING, logger="creditwatch.server.jobs.rescoring"):
        for leader in (b, a, b):
            result = await leader.run(stale_after_seconds=DAY)
            assert (result.companies, result.scored) == (0, 0)
    assert set((await _latest(sessions, companies)).values()) == {older.version}
    assert alerts == await _count(
        sessions, "SELECT count(*) FROM alerts WHERE tenant_id = :t", t=tenant
    )
    lacking = [r for r in caplog.records if getattr(r, "activated", None) == older.version]
    assert len(lacking) == 2 and all(r.levelno == logging.WARNING for r in lacking)
    assert all(older.version in r.getMessage() for r in lacking)  # the version it lacks

    # Chunks of B's model left by an earlier run (its leader died): B leaves them.
    async with sessions.begin() as session:
        await rescoring.add_chunks(
            session,
            uuid.uuid4(),
            rescoring.Maker(newest.version, newest.policy.tag, datetime.now(UTC)),
            [rescoring.Keys(["NO"] * 4, [c.register_number for c in companies[:4]])],
        )
    shared = await b.share()
    assert shared.chunks == 0
    assert set((await _latest(sessions, companies)).values()) == {older.version}
    assert shared.superseded == older.version
    assert await _count(sessions, "SELECT max(failures) FROM rescore_chunks") == 0

    # The register feeds store scores too: B leaves them to A for the
    # rollout window after the activation; past it, it runs them all the
    # same (their events must not wait for a model no replica may have).
    settings = _settings()
    b_jobs = Jobs(settings, url, sessions, lacks_older, intake=Intake(sessions, lacks_older))
    a_jobs = Jobs(settings, url, sessions, has_both, intake=Intake(sessions, has_both))
    assert await b_jobs.registers() is None
    assert await a_jobs.registers() == []  # a pass (no feed is enabled here)
    late = _settings(policy_rollout_seconds=0)
    b_late = Jobs(late, url, sessions, lacks_older, intake=Intake(sessions, lacks_older))
    caplog.clear()
    assert await b_late.registers() == []
    assert any("past the rollout window" in r.getMessage() for r in caplog.records)


class _Paused(Rescorer):
    """A replica whose `pause_at`-th chunk waits for `resume` after its claim,
    before it locks the chunk's companies."""

    def __init__(self, *args: object, pause_at: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.pause_at = pause_at
        self.calls = 0
        self.paused = asyncio.Event()
        self.resume = asyncio.Event()

    async def _rescore_in(
        self,
        session: AsyncSession,
        scorer: Scorer,
        companies: Sequence[CompanyId] | rescoring.Keys,
        fresh_from: rescoring.Maker | None,
    ) -> RescoreResult:
        self.calls += 1
        if self.calls == self.pause_at:
            self.paused.set()
            await self.resume.wait()
        return await super()._rescore_in(session, scorer, companies, fresh_from)


async def test_a_model_activated_during_a_run_stops_it_and_a_run_of_the_new_model_follows(
    own_database: tuple[str, async_sessionmaker[AsyncSession]], registry: ModelRegistry
) -> None:
    """The leader's second chunk is claimed when another model is activated
    and an intake on another replica re-scores one of its companies with it.
    The chunk does not store the old model's score over the intake's; the run
    stops, its chunks are dropped, and the leader re-scores with the new
    model at once: nothing the old model scored after the activation stays."""
    url, sessions = own_database
    newest, older = _models(registry)
    leader_models = ModelRegistry(registry.all(), newest.version)
    other_models = ModelRegistry(registry.all(), newest.version)
    tenant, companies = await _watched(sessions, leader_models, 99_420_000, 20)
    async with sessions.begin() as session:  # due: made two days ago
        await session.execute(text("UPDATE scores SET score_time = score_time - interval '2 days'"))
    settings = _settings(rescore_stale_seconds=DAY)
    jobs = Jobs(settings, url, sessions, leader_models)
    leader = _Paused(sessions, leader_models, chunk=5, workers=1, replica="a", pause_at=2)
    jobs.rescorer = leader
    run = asyncio.create_task(jobs.rescore())
    await asyncio.wait_for(leader.paused.wait(), 60)

    activations = ActivationStore(sessions)
    activated_at = await activations.record(older.version, None)
    await other_models.sync(activations)  # the leader's follower has not run yet
    rescored = sorted(companies, key=lambda c: c.register_number)[7]  # in chunk 2
    await Intake(sessions, other_models).submit_statement(
        rescored, statement(distressed(), "s2"), "test", tenant
    )
    assert (await _latest(sessions, [rescored]))[rescored.register_number] == older.version
    leader.resume.set()
    result = await asyncio.wait_for(run, 120)

    assert set((await _latest(sessions, companies)).values()) == {older.version}
    stale_model_after = await _count(
        sessions,
        "SELECT count(*) FROM scores WHERE model_version = :v AND score_time >= :t",
        v=newest.version,
        t=activated_at,
    )
    assert stale_model_after == 0
    by_older = await _count(
        sessions,
        "SELECT count(*) FROM scores WHERE register_number = :n AND model_version = :v",
        n=rescored.register_number,
        v=older.version,
    )
    assert by_older == 1  # the intake's, neither overwritten nor redone
    assert result is not None and result.superseded is None  # the new model's run
    assert result.scored == len(companies) - 1
    assert leader_models.active is older
    assert await _count(sessions, "SELECT count(*) FROM rescore_chunks") == 0


async def test_a_run_stops_before_its_next_chunk_once_the_replica_switched_models(
    own_database: tuple[str, async_sessionmaker[AsyncSession]], registry: ModelRegistry
) -> None:
    """The leader's own active model changes while its first chunk is under
    way (no activation recorded: a single replica): that chunk ends, the run
    stops before its next claim, as its result says, and drops the chunks
    not done; the next run re-scores everything with the new model."""
    _, sessions = own_database
    newest, older = _models(registry)
    models = ModelRegistry(registry.all(), newest.version)
    _, companies = await _watched(sessions, models, 99_430_000, 15)
    async with sessions.begin() as session:
        await session.execute(text("UPDATE scores SET score_time = score_time - interval '2 days'"))
    leader = _Paused(sessions, models, chunk=5, workers=1, replica="a", pause_at=1)
    run = asyncio.create_task(leader.run(stale_after_seconds=DAY))
    await asyncio.wait_for(leader.paused.wait(), 60)
    models.activate(older.version)
    leader.resume.set()
    result = await asyncio.wait_for(run, 120)

    assert (result.chunks, result.scored, result.given_up) == (1, 5, 0)
    assert result.superseded == older.version
    assert await _count(sessions, "SELECT count(*) FROM rescore_chunks") == 0
    again = await Rescorer(sessions, models, chunk=5).run(stale_after_seconds=DAY)
    assert again.scored == len(companies) and again.superseded is None
    assert set((await _latest(sessions, companies)).values()) == {older.version}
