"""Scheduled re-scoring: watched companies with a stale score, or one made by
another model version, are re-scored in chunks, producing alerts like any
other change.

Each chunk is one transaction: lock the chunk's companies (skipping any an
intake holds; that intake re-scores them itself) and read their facts in
columns in one statement, run the model once for the chunk (no statement
object per company), store the scores and write
the alerts (risk-class changes and PD-threshold crossings; the trigger says
"re-scored" with the reason, MODEL_CHANGED or SCHEDULED).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server import metrics
from creditwatch.server.domain.alerts import Change, RescoreFact, RescoreReason
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.intake import write_alerts
from creditwatch.server.scoring.engine import Scorer, ScoreRequest, ScoreRows, StatementColumns
from creditwatch.server.scoring.registry import ModelRegistry
from creditwatch.server.store import rescoring

log = logging.getLogger(__name__)


@dataclass
class RescoreResult:
    """What a re-scoring run did."""

    companies: int = 0
    scored: int = 0
    alerts: int = 0
    skipped_locked: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Companies per second."""
        return self.companies / self.seconds if self.seconds else 0.0


class Rescorer:
    """Re-scores watched companies whose score is stale or from another model."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        registry: ModelRegistry,
        *,
        chunk: int = 1_000,
        workers: int = 2,
        on_alerts: Callable[[], None] | None = None,
    ) -> None:
        self._workers = workers
        self._sessions = sessions
        self._registry = registry
        self._chunk = chunk
        self._on_alerts = on_alerts

    async def rescore(
        self, companies: Sequence[CompanyId] | rescoring.Keys, result: RescoreResult
    ) -> None:
        """Re-score one chunk in one transaction."""
        chunk = len(companies)
        scorer = self._registry.active
        now = datetime.now(UTC)
        facts_ = {
            reason: RescoreFact(reason, scorer.version)
            for reason in (RescoreReason.MODEL_CHANGED, RescoreReason.SCHEDULED)
        }
        async with self._sessions.begin() as session:
            known = await rescoring.lock_and_read(session, companies, scorer.policy.overdue_days)
            result.skipped_locked += chunk - len(known)
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
                old, old_reasons = previous[i]
                reason = (
                    RescoreReason.MODEL_CHANGED
                    if old.model_version != scorer.version
                    else RescoreReason.SCHEDULED
                )
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
        written = sum(counts.values())
        result.companies += chunk
        result.scored += len(rows)
        result.alerts += written
        if written and self._on_alerts is not None:
            self._on_alerts()

    async def run(
        self,
        stale_after_seconds: float,
        progress: Callable[[RescoreResult], None] | None = None,
    ) -> RescoreResult:
        """Re-score everything due now, in company order. One task pages through
        the due companies; `workers` tasks re-score chunks concurrently, each in
        its own transaction, so database round trips overlap the model runs."""
        started = time.perf_counter()
        result = RescoreResult()
        stale_before = datetime.fromtimestamp(time.time() - stale_after_seconds, UTC)
        version = self._registry.active.version
        chunks: asyncio.Queue[rescoring.Keys | None] = asyncio.Queue(maxsize=self._workers)
        last_log = started

        async def page() -> None:
            after: CompanyId | None = None
            try:
                while True:
                    # A page per round of workers: one query (and session)
                    # per chunk kept this task behind the workers.
                    async with self._sessions() as session:
                        due = await rescoring.due(
                            session, version, stale_before, after, self._chunk * self._workers
                        )
                    if not len(due):
                        break
                    for start in range(0, len(due), self._chunk):
                        await chunks.put(due.slice(start, start + self._chunk))
                    after = due.last()
            finally:
                for _ in range(self._workers):
                    await chunks.put(None)

        async def work() -> None:
            nonlocal last_log
            while (chunk := await chunks.get()) is not None:
                await self.rescore(chunk, result)
                result.seconds = time.perf_counter() - started
                if progress is not None:
                    progress(result)
                if time.perf_counter() - last_log > 5:
                    last_log = time.perf_counter()
                    log.info(
                        "re-scoring",
                        extra={"companies": result.companies, "alerts": result.alerts},
                    )

        await asyncio.gather(page(), *(work() for _ in range(self._workers)))
        result.seconds = time.perf_counter() - started
        log.info(
            "re-scoring done",
            extra={
                "companies": result.companies,
                "scored": result.scored,
                "alerts": result.alerts,
                "skipped_locked": result.skipped_locked,
                "per_second": round(result.rate),
            },
        )
        return result


async def _score(scorer: Scorer, known: rescoring.ChunkFacts) -> tuple[list[int], ScoreRows]:
    """Scores of a chunk's companies and, for each, the company's index in the
    chunk: those with a statement from the columns as read, in chunk order;
    then the few without one that still get a score (class D from their
    events), as any intake scores them."""
    count = len(known)
    rows = known.with_statement
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
        scored = ScoreRows(scorer.version)
    order = list(rows)
    if len(rows) < count:
        bare = sorted(set(range(count)) - set(rows))
        requests = [ScoreRequest(None, known.states[i]) for i in bare]
        for i, maybe in zip(bare, await scorer.score_many(requests), strict=True):
            if maybe is not None:
                order.append(i)
                scored.append(maybe)
    return order, scored
