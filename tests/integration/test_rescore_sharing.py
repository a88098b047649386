"""A re-scoring run shared by replicas on a real PostgreSQL: the leader queues
chunks, every replica's workers claim them, a replica that fails mid-chunk
leaves it to another, and nothing is re-scored twice or skipped.

Each "replica" is a Rescorer on an engine (connection pool) of its own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.api.scoring_converters import statement
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.intake import Intake
from creditwatch.server.jobs.rescoring import Rescorer, RescoreResult
from creditwatch.server.scoring.engine import Scorer
from creditwatch.server.scoring.registry import ModelRegistry
from creditwatch.server.store import rescoring
from creditwatch.server.store.database import CHUNK_FAILURES
from tests.chunk_metrics import failure_counts
from tests.e2e.test_scoring import distressed
from tests.integration.test_jobs import _watched

pytestmark = pytest.mark.asyncio


async def _retire(
    sessions: async_sessionmaker[AsyncSession],
    companies: Sequence[CompanyId],
    *,
    as_class_a: bool = False,
) -> None:
    """Make the companies' scores another model's, so that they are due (and,
    `as_class_a`, say class A with a tiny PD, so that a worse re-score alerts)."""
    lowered = ", risk_class = 1, model_risk_class = 1, probability_of_default = 0.001"
    async with sessions.begin() as session:
        await session.execute(
            text(
                "UPDATE scores SET model_version = 'retired'"
                + (lowered if as_class_a else "")
                + " WHERE country = 'NO' AND register_number = ANY(:numbers)"
            ),
            {"numbers": [c.register_number for c in companies]},
        )


async def _scores_by(
    sessions: async_sessionmaker[AsyncSession], companies: Sequence[CompanyId], version: str
) -> dict[str, int]:
    """How many scores of `version` each company has."""
    async with sessions() as session:
        rows = await session.execute(
            text(
                "SELECT register_number, count(*) FROM scores WHERE country = 'NO' "
                "AND register_number = ANY(:numbers) AND model_version = :v "
                "GROUP BY register_number"
            ),
            {"numbers": [c.register_number for c in companies], "v": version},
        )
        counts = {number: int(count) for number, count in rows.all()}
    return {c.register_number: counts.get(c.register_number, 0) for c in companies}


class _Gated(Rescorer):
    """A replica whose chunks wait for `gate` before their re-score starts, and
    that can be told to lose its connection in each chunk after re-scoring it
    (as a replica dying before commit would), or to fail every time the
    chunk holding the company numbered `poison` (as bad data would)."""

    def __init__(self, *args: object, gate: asyncio.Event | None = None, **kwargs: object):
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.gate = gate
        self.fail = False
        self.poison: str | None = None
        self.poisoned = 0  # attempts at the poisoned chunk
        self.claimed = asyncio.Event()

    async def _rescore_in(
        self,
        session: AsyncSession,
        scorer: Scorer,
        companies: Sequence[CompanyId] | rescoring.Keys,
        fresh_from: tuple[str, datetime] | None,
    ) -> RescoreResult:
        self.claimed.set()
        if self.gate is not None:
            await self.gate.wait()
        done = await super()._rescore_in(session, scorer, companies, fresh_from)
        if self.fail:
            raise ConnectionResetError("replica lost before commit")
        numbers = (
            companies.numbers
            if isinstance(companies, rescoring.Keys)
            else [c.register_number for c in companies]
        )
        if self.poison in numbers:
            self.poisoned += 1
            raise ValueError("a company whose data breaks the re-score")
        return done


async def test_two_replicas_share_a_run_and_each_company_is_rescored_once(
    sessions: async_sessionmaker[AsyncSession],
    other_replica: async_sessionmaker[AsyncSession],
    registry: ModelRegistry,
) -> None:
    tenant, companies = await _watched(sessions, registry, 89_500_000, 60)
    # Half are distressed, their retired scores say class A: their re-score
    # downgrades them, so alerts come from chunks of both replicas.
    intake = Intake(sessions, registry)
    for company in companies[::2]:
        await intake.submit_statement(company, statement(distressed(), "s"), "test", tenant)
    await _retire(sessions, companies)
    await _retire(sessions, companies[::2], as_class_a=True)
    version = registry.active.version
    before = await _scores_by(sessions, companies, version)

    # The leader's chunks wait until the other replica has claimed one: both
    # must take part, whatever the timing.
    shared = asyncio.Event()
    leader = _Gated(sessions, registry, chunk=8, workers=2, replica="a", gate=shared)
    other = _Gated(other_replica, registry, chunk=8, workers=2, replica="b")
    run = asyncio.create_task(leader.run(stale_after_seconds=3600))
    helped = RescoreResult()
    while not run.done():
        part = await other.share()
        helped.chunks += part.chunks
        helped.companies += part.companies
        if other.claimed.is_set():
            shared.set()
        await asyncio.sleep(0.01)
    result = await run

    assert result.replicas == 2
    assert helped.chunks >= 1 and helped.companies >= 8
    # (Other tests' due companies in the database come along: at least ours.)
    assert result.companies >= len(companies) and result.scored >= len(companies)
    assert result.chunks > helped.chunks
    # Each company got exactly one new score from the active model.
    after = await _scores_by(sessions, companies, version)
    assert {n: after[n] - before[n] for n in after} == {c.register_number: 1 for c in companies}
    async with sessions() as session:
        downgrades = await session.scalar(
            text(
                "SELECT count(*) FROM alerts WHERE tenant_id = :t "
                "AND trigger -> 'rescoring' IS NOT NULL"
            ),
            {"t": tenant},
        )
        left = await session.scalar(text("SELECT count(*) FROM rescore_chunks"))
    assert downgrades == len(companies[::2])  # one per distressed company, none twice
    assert left == 0  # the leader closed the run


async def test_a_chunk_whose_replica_fails_mid_way_is_rescored_by_another(
    sessions: async_sessionmaker[AsyncSession],
    other_replica: async_sessionmaker[AsyncSession],
    registry: ModelRegistry,
) -> None:
    _, companies = await _watched(sessions, registry, 89_600_000, 24)
    await _retire(sessions, companies)
    version = registry.active.version
    before = await _scores_by(sessions, companies, version)

    failed = asyncio.Event()
    leader = _Gated(sessions, registry, chunk=8, workers=1, replica="a", gate=failed)
    doomed = _Gated(other_replica, registry, chunk=8, workers=1, replica="b")
    doomed.fail = True
    run = asyncio.create_task(leader.run(stale_after_seconds=3600))
    with pytest.raises(ConnectionResetError, match="replica lost"):
        while not doomed.claimed.is_set():
            await doomed.share()
            await asyncio.sleep(0.01)
    failed.set()  # the leader goes on only once the other replica's chunk rolled back
    result = await run

    assert result.replicas == 1  # every chunk was done by the leader in the end
    assert result.companies >= len(companies)
    after = await _scores_by(sessions, companies, version)
    assert {n: after[n] - before[n] for n in after} == {c.register_number: 1 for c in companies}


async def test_a_company_an_intake_rescored_after_it_was_queued_is_skipped(
    sessions: async_sessionmaker[AsyncSession], registry: ModelRegistry
) -> None:
    tenant, companies = await _watched(sessions, registry, 89_700_000, 3)
    await _retire(sessions, companies)
    version = registry.active.version
    async with sessions.begin() as session:
        await rescoring.add_chunks(
            session,
            uuid.uuid4(),
            rescoring.Maker(
                version, registry.active.policy.tag, datetime.now(UTC) - timedelta(hours=1)
            ),
            [rescoring.Keys(["NO"] * 3, [c.register_number for c in companies])],
        )
    # Queued while due; then an intake re-scores the first with the active model.
    await Intake(sessions, registry).submit_statement(
        companies[0], statement(distressed(), "s"), "test", tenant
    )
    before = await _scores_by(sessions, companies, version)

    done = await Rescorer(sessions, registry, replica="a").share()

    assert (done.chunks, done.companies, done.scored) == (1, 3, 2)
    after = await _scores_by(sessions, companies, version)
    assert [after[c.register_number] - before[c.register_number] for c in companies] == [0, 1, 1]
    async with sessions.begin() as session:  # an orphan of a run nobody leads: tidy up
        await session.execute(text("DELETE FROM rescore_chunks"))


async def test_a_chunk_that_keeps_failing_is_given_up_and_the_run_ends(
    sessions: async_sessionmaker[AsyncSession], registry: ModelRegistry
) -> None:
    _, companies = await _watched(sessions, registry, 89_800_000, 24)
    await _retire(sessions, companies)
    version = registry.active.version
    before = await _scores_by(sessions, companies, version)

    leader = _Gated(sessions, registry, chunk=8, workers=2, replica="a")
    leader.poison = companies[12].register_number
    failures = failure_counts("rescore")
    result = await leader.run(stale_after_seconds=3600)

    assert result.given_up == 1  # tried CHUNK_FAILURES times, then left
    assert leader.poisoned == CHUNK_FAILURES
    after = failure_counts("rescore")
    assert (after[0] - failures[0], after[1] - failures[1]) == (CHUNK_FAILURES - 1, 1)
    after = await _scores_by(sessions, companies, version)
    moved = {n: after[n] - before[n] for n in after}
    # The chunk that failed holds the poisoned company and was re-scored not
    # at all (each attempt rolled back); every other company once.
    assert moved[companies[12].register_number] == 0
    assert set(moved.values()) == {0, 1} and sum(moved.values()) >= len(companies) - 8
    async with sessions() as session:
        left = await session.scalar(text("SELECT count(*) FROM rescore_chunks"))
    assert left == 0  # the run closed, the chunk given up went with it
