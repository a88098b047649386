"""Scheduled re-scoring: watched companies with a stale score, or one made by
another model version or override policy, are re-scored in chunks, producing
alerts like any other change.

The leading replica lists the due companies in chunks that every replica's
workers claim (see `Rescorer`). Each chunk is one transaction: claim it, lock
its companies (skipping any an intake holds; that intake re-scores them
itself, as it may have since the chunk was listed) and read their facts in
columns in one statement, run the model once for the chunk (no statement
object per company), store the scores and write
the alerts (risk-class changes and PD-threshold crossings; the trigger says
"re-scored" with the reason, MODEL_CHANGED, POLICY_CHANGED or SCHEDULED).

Only a replica running the current override policy (store.policies) leads or
shares a run: in a rolling deploy the replicas still on the old policy leave
the re-score to the new ones, whose run redoes the scores the old ones made.
Likewise only a replica on the activated model (store.activations) leads one:
a replica that has not loaded it would put every company back on its own
model, and the next run on the activated one back again, alerting each time.
A model activated during a run stops it (`Superseded`): its chunks are
checked against the activation after their companies are locked, so a run
never stores an old model's score over one the activated model made.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server import metrics
from creditwatch.server.domain.alerts import Change, RescoreFact, RescoreReason
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.overrides import OverridePolicy
from creditwatch.server.intake import write_alerts
from creditwatch.server.jobs.chunks import Abandoned, attempt, together, wait_for_others
from creditwatch.server.scoring.engine import Scorer, ScoreRequest, ScoreRows, StatementColumns
from creditwatch.server.scoring.registry import ModelRegistry
from creditwatch.server.store import activations, policies, rescoring
from creditwatch.server.store.activations import ActivationStore
from creditwatch.server.waits import wait_set

log = logging.getLogger(__name__)


@dataclass
class RescoreResult:
    """What a re-scoring run did (in `run`'s result: every replica's part)."""

    companies: int = 0
    scored: int = 0
    alerts: int = 0
    skipped_locked: int = 0
    seconds: float = 0.0
    chunks: int = 0
    given_up: int = 0
    """Chunks whose re-score failed store.database.CHUNK_FAILURES times."""
    replicas: int = 1
    superseded: str | None = None
    """The model version activated during the run, which stopped it (its
    chunks not done were dropped); None for a run that ran to its end."""

    @property
    def rate(self) -> float:
        """Companies per second."""
        return self.companies / self.seconds if self.seconds else 0.0

    def add(self, done: RescoreResult) -> None:
        """Count a chunk's re-score in."""
        self.companies += done.companies
        self.scored += done.scored
        self.alerts += done.alerts
        self.skipped_locked += done.skipped_locked
        self.chunks += 1


class Superseded(Abandoned):
    """Another model than a re-scoring run's is active now: on this replica,
    or by an activation recorded in PostgreSQL (which this replica may not
    have followed yet, or cannot: it has not loaded that model)."""

    def __init__(self, run_version: str, active_version: str) -> None:
        super().__init__(f"model {active_version} was activated during a run of {run_version}")
        self.run_version = run_version
        self.active_version = active_version


# Who marked a chunk done, in its row (and so how many replicas shared a run).
REPLICA = f"{socket.gethostname()}:{os.getpid()}"
# A leader's workers look for newly queued chunks this often while it plans.
_WAIT_FOR_CHUNKS = 0.01


class Rescorer:
    """Re-scores watched companies whose score is stale or from another model
    version or override policy.

    A run is shared by the replicas: the leading replica (`run`) lists the due
    companies in chunks in the `rescore_chunks` table, and its own workers and
    every other replica's (`share`) claim chunks and re-score each in one
    transaction (see store.rescoring.claim).
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        registry: ModelRegistry,
        *,
        chunk: int = 1_000,
        workers: int = 2,
        on_alerts: Callable[[], None] | None = None,
        replica: str = REPLICA,
        policy_rollout_seconds: float = 3600.0,
    ) -> None:
        """`policy_rollout_seconds`: how long a replica whose override policy
        is not the current one leaves runs to others (store.policies.settle)."""
        self._rollout = policy_rollout_seconds
        self._workers = workers
        self._sessions = sessions
        self._registry = registry
        self._chunk = chunk
        self._on_alerts = on_alerts
        self._replica = replica
        self._leading = False
        self._activations = ActivationStore(sessions)

    async def rescore(
        self, companies: Sequence[CompanyId] | rescoring.Keys, result: RescoreResult
    ) -> None:
        """Re-score one chunk in one transaction (whatever their scores)."""
        scorer = self._registry.active
        async with self._sessions.begin() as session:
            done = await self._rescore_in(session, scorer, companies, None)
        self._count(done, result)

    def _count(self, done: RescoreResult, result: RescoreResult) -> None:
        result.add(done)
        if done.alerts and self._on_alerts is not None:
            self._on_alerts()

    async def _rescore_in(
        self,
        session: AsyncSession,
        scorer: Scorer,
        companies: Sequence[CompanyId] | rescoring.Keys,
        fresh_from: rescoring.Maker | None,
    ) -> RescoreResult:
        """Re-score a chunk in the session's transaction, but for companies
        whose score is fresh by `fresh_from` (see rescoring.lock_and_read)."""
        now = datetime.now(UTC)
        facts_ = {
            reason: RescoreFact(reason, scorer.version)
            for reason in (
                RescoreReason.MODEL_CHANGED,
                RescoreReason.POLICY_CHANGED,
                RescoreReason.SCHEDULED,
            )
        }
        known = await rescoring.lock_and_read(
            session, companies, scorer.policy.overdue_days, fresh_from
        )
        if fresh_from is not None:  # a run's chunk: is its model still the activated one?
            await self._check_activation(session, fresh_from.model_version)
        order, rows = await _score(scorer, known)
        # A re-score alerts only on a class change or on a PD rising
        # across a threshold; the rest cannot raise one, so they skip
        # alert planning, and their old scores' reasons are never read.
        alerting = [
            (j, i)
            for j, (i, pd, risk_class) in enumerate(
                zip(order, rows.pds, rows.risk_classes, strict=True)
            )
            if (before := known.previous_pd(i)) is not None
            and (risk_class != known.previous_class(i) or pd > before)
        ]
        previous = await rescoring.previous_scores(session, known, [i for _, i in alerting])
        # Row j of `rows` is company order[j]: the chunk's order only when
        # every company had a statement (events-only scores come last).
        in_order = order == list(range(len(known)))
        await rescoring.add_score_rows(
            session,
            known.countries if in_order else [known.countries[i] for i in order],
            known.numbers if in_order else [known.numbers[i] for i in order],
            rows,
        )
        metrics.SCORES.labels("rescoring").inc(len(rows))
        changes = []
        for j, i in alerting:
            old, old_reasons, old_policy = previous[i]
            if old.model_version != scorer.version:
                reason = RescoreReason.MODEL_CHANGED
            elif old_policy != scorer.policy.tag:
                reason = RescoreReason.POLICY_CHANGED
            else:
                reason = RescoreReason.SCHEDULED
            change = Change(
                facts_[reason],
                old,
                rows.score(j, with_reasons=False),
                now,
                fact_alert=False,
                previous_reasons_text=old_reasons,
                score_reasons_text=rows.reasons_json[j],
            )
            changes.append((known.company(i), change))
        counts = await write_alerts(session, changes) if changes else {}
        return RescoreResult(
            companies=len(companies),
            scored=len(rows),
            alerts=sum(counts.values()),
            skipped_locked=len(companies) - len(known),
        )

    async def _check_activation(self, session: AsyncSession, version: str) -> None:
        """Raise Superseded if an activation of another model than `version`
        is recorded; run after the chunk's companies are locked (see
        store.activations.activated_version)."""
        activated = await activations.activated_version(session)
        if activated is not None and activated != version:
            raise Superseded(version, activated)

    def _check_registry(self, scorer: Scorer) -> None:
        """Raise Superseded if this replica's active model is no longer `scorer`."""
        active = self._registry.active
        if active is not scorer:
            raise Superseded(scorer.version, active.version)

    async def _claim_and_rescore(self, scorer: Scorer, result: RescoreResult) -> bool:
        """Claim a queued chunk for the scorer's model version and override
        policy and re-score it, in one transaction; False if no chunk was
        free. A chunk whose re-score
        fails (but for a lost connection: that is the replica's, not the
        chunk's) is counted against it and left for another attempt.
        Superseded if another model is active now (the chunk, if claimed,
        rolled back and left)."""
        self._check_registry(scorer)
        async with self._sessions.begin() as session:
            chunk = await rescoring.claim(session, scorer.version, scorer.policy.tag)
            if chunk is None:
                return False
            claimed = chunk

            async def work() -> RescoreResult:
                done = await self._rescore_in(session, scorer, claimed.companies, claimed.maker)
                await rescoring.finish(
                    session, claimed, self._replica, done.scored, done.alerts, done.skipped_locked
                )
                return done

            done = await attempt(session, work, rescoring.fail, chunk.id, "rescore")
        if done is None:
            return True
        self._count(done, result)
        return True

    async def share(self) -> RescoreResult:
        """Re-score chunks of another replica's run until none is free (one
        claim first, then `workers` at a time); what this replica did. A
        replica whose active model or override policy differs from the run's
        leaves its chunks alone (so does one whose model is not the activated
        one, or no longer: it stops at its next chunk)."""
        result = RescoreResult()
        if self._leading:
            return result  # its own run's workers are at it
        started = time.perf_counter()
        scorer = self._registry.active
        stopped: list[Superseded] = []

        async def work() -> None:
            try:
                while not stopped and await self._claim_and_rescore(scorer, result):
                    pass
            except Superseded as error:
                stopped.append(error)

        # One claim first: an idle replica polls with one session, and the
        # other workers join only when there is a run to share.
        try:
            if not await self._claim_and_rescore(scorer, result):
                return result
        except Superseded as error:
            stopped.append(error)
        else:
            await together(*(work() for _ in range(self._workers)))
        if stopped:
            result.superseded = stopped[0].active_version
            log.warning(
                "left a re-scoring run's chunks: its model is not the activated one",
                extra={"run_model": scorer.version, "activated": result.superseded},
            )
        result.seconds = time.perf_counter() - started
        if result.chunks:
            log.info(
                "re-scored chunks of a shared run",
                extra={
                    "chunks": result.chunks,
                    "companies": result.companies,
                    "alerts": result.alerts,
                    "per_second": round(result.rate),
                },
            )
        return result

    async def run(
        self,
        stale_after_seconds: float,
        progress: Callable[[RescoreResult], None] | None = None,
    ) -> RescoreResult:
        """Re-score everything due now, in company order, shared with the other
        replicas; run by one replica at a time (the caller's leadership).

        One task pages through the due companies and queues them in chunks
        (committed page by page, so every replica can start at once);
        `workers` tasks claim and re-score chunks concurrently, each in its own
        transaction, so database round trips overlap the model runs. The run
        ends when every chunk is done, whichever replica did it; its result
        is every replica's. A replica whose override policy is not the
        current one does nothing for a rollout window, then makes its own
        current (store.policies.settle); one whose model is not the
        activated one does nothing (`on_activated_model`). Another model
        activated during the run stops it at the next chunk or page, with
        the chunks not done dropped (`RescoreResult.superseded`); the caller
        starts a run of the new model."""
        started = time.perf_counter()
        mine = RescoreResult()
        scorer = self._registry.active
        if not await settled(self._sessions, scorer.policy, self._rollout, "re-scoring"):
            return mine
        if not await on_activated_model(self._activations, self._registry, "re-scoring"):
            return mine
        maker = rescoring.Maker(
            scorer.version,
            scorer.policy.tag,
            datetime.fromtimestamp(time.time() - stale_after_seconds, UTC),
        )
        run_id = uuid.uuid4()
        planned = False
        queued = asyncio.Event()
        last_log = started
        stopped: list[Superseded] = []
        self._leading = True
        try:
            async with self._sessions.begin() as session:
                if dropped := await rescoring.drop_other_runs(session, run_id):
                    log.warning("dropped an earlier run's chunks", extra={"chunks": dropped})

            async def plan() -> None:
                nonlocal planned
                after: CompanyId | None = None
                page = self._chunk * max(self._workers, 4)
                try:
                    while not stopped:
                        async with self._sessions.begin() as session:
                            self._check_registry(scorer)
                            await self._check_activation(session, scorer.version)
                            due = await rescoring.due(session, maker, after, page)
                            if not len(due):
                                break
                            await rescoring.add_chunks(
                                session,
                                run_id,
                                maker,
                                [
                                    due.slice(start, start + self._chunk)
                                    for start in range(0, len(due), self._chunk)
                                ],
                            )
                        queued.set()
                        after = due.last()
                except Superseded as error:
                    stopped.append(error)
                finally:
                    planned = True
                    queued.set()

            async def work() -> None:
                nonlocal last_log
                while not stopped:
                    try:
                        claimed = await self._claim_and_rescore(scorer, mine)
                    except Superseded as error:
                        stopped.append(error)
                        return
                    if not claimed:
                        if planned:
                            return
                        queued.clear()
                        await wait_set(queued, _WAIT_FOR_CHUNKS)
                        continue
                    mine.seconds = time.perf_counter() - started
                    if progress is not None:
                        progress(mine)
                    if time.perf_counter() - last_log > 5:
                        last_log = time.perf_counter()
                        log.info(
                            "re-scoring",
                            extra={"companies": mine.companies, "alerts": mine.alerts},
                        )

            await together(plan(), *(work() for _ in range(self._workers)))
            if not stopped:
                # Chunks other replicas hold are theirs to finish (or, should
                # one die, to roll back and leave for another claim: ours).
                try:
                    await wait_for_others(
                        self._sessions,
                        lambda session: rescoring.unfinished(session, run_id),
                        lambda: self._claim_and_rescore(scorer, mine),
                    )
                except Superseded as error:
                    stopped.append(error)
            # A stopped run's chunks not done go with it; a chunk another
            # replica holds is theirs until it commits or (finding the new
            # activation) rolls back.
            async with self._sessions.begin() as session:
                totals = await rescoring.close_run(session, run_id)
        finally:
            self._leading = False
        result = RescoreResult(
            companies=totals.companies,
            scored=totals.scored,
            alerts=totals.alerts,
            skipped_locked=totals.skipped_locked,
            seconds=time.perf_counter() - started,
            chunks=totals.chunks,
            replicas=totals.replicas,
            given_up=totals.given_up,
            superseded=stopped[0].active_version if stopped else None,
        )
        if stopped:
            log.warning(
                "re-scoring run stopped: another model was activated; the chunks not done "
                "are dropped, for a run of the activated model",
                extra={
                    "run_model": scorer.version,
                    "activated": result.superseded,
                    "companies": result.companies,
                    "chunks": result.chunks,
                },
            )
            return result
        log.info(
            "re-scoring done",
            extra={
                "companies": result.companies,
                "scored": result.scored,
                "alerts": result.alerts,
                "skipped_locked": result.skipped_locked,
                "chunks": result.chunks,
                "replicas": result.replicas,
                "chunks_given_up": result.given_up,
                "by_this_replica": mine.companies,
                "per_second": round(result.rate),
            },
        )
        return result


async def on_activated_model(
    activations: ActivationStore, registry: ModelRegistry, job: str
) -> bool:
    """Whether this replica may run `job`, a job that stores scores in bulk,
    with its active model: yes if that is the activated one (store.activations)
    or none was ever activated (every replica then runs its configured or
    newest model). Says why not: the activated model is not loaded here, or
    this replica has not switched to it yet (registry.follow)."""
    current = await activations.current()
    active = registry.active.version
    if current is None or current[0] == active:
        return True
    metrics.JOBS_OFF_MODEL.labels(job).inc()
    version = current[0]
    if registry.has(version):
        log.warning(
            "job left to the replicas on the activated model: this replica has not "
            "switched to it yet",
            extra={"job": job, "activated": version, "this_replica": active},
        )
    else:
        log.warning(
            f"job left to the replicas that have the activated model {version}: it is not "
            f"loaded on this replica, which runs {active}",
            extra={"job": job, "activated": version, "this_replica": active, "loaded": False},
        )
    return False


async def settled(
    sessions: async_sessionmaker[AsyncSession],
    policy: OverridePolicy,
    rollout_seconds: float,
    job: str,
) -> bool:
    """Whether this replica may run `job`, a job that stores scores, with its
    override policy (store.policies.settle); says why not, or that its policy
    took over."""
    allowed, before = await policies.settle(sessions, policy, rollout_seconds)
    if before is not None and not before.matches(policy):
        if allowed:
            log.warning(
                "the current override policy was recorded longer ago than the rollout "
                "window and this replica runs another: its policy is current now",
                extra={"job": job, "was": before.version, "now": policy.version},
            )
        else:
            log.warning(
                "job left to the replicas on the current override policy",
                extra={"job": job, "current": before.version, "this_replica": policy.version},
            )
    return allowed


async def _score(scorer: Scorer, known: rescoring.ChunkFacts) -> tuple[list[int], ScoreRows]:
    """Scores of a chunk's companies and, for each, the company's index in the
    chunk: those with a statement from the columns as read, in chunk order;
    then the few without one that still get a score (class D from their
    events), as any intake scores them. Companies whose score is `fresh`
    are left out."""
    count = len(known)
    skip = {i for i, fresh in enumerate(known.fresh) if fresh}
    rows = [i for i in known.with_statement if i not in skip] if skip else known.with_statement
    if rows:
        whole = len(rows) == count
        columns = StatementColumns(
            known.items if whole else known.items[:, rows],
            [known.currencies[i] or "" for i in rows],
            [known.period_ends[i] or date.min for i in rows],
        )
        states = known.states if whole else [known.states[i] for i in rows]
        scored = await scorer.score_columns_stored(columns, states)
    else:
        scored = ScoreRows(scorer.version, scorer.policy.tag)
    order = list(rows)
    if len(rows) + len(skip) < count:
        bare = sorted(set(range(count)) - set(rows) - skip)
        requests = [ScoreRequest(None, known.states[i]) for i in bare]
        for i, maybe in zip(bare, await scorer.score_many(requests), strict=True):
            if maybe is not None:
                order.append(i)
                scored.append(maybe)
    return order, scored
