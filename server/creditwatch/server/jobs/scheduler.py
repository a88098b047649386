"""APScheduler wiring: periodic jobs, each run by exactly one replica.

Every replica schedules every job; a run first takes the job's advisory lock
(`Leadership`) and skips if another replica holds it. Jobs: re-scoring of
stale watched companies, and alert retention.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.config import Settings
from creditwatch.server.jobs.leader import Leadership
from creditwatch.server.jobs.rescoring import Rescorer, RescoreResult
from creditwatch.server.scoring.registry import ModelRegistry
from creditwatch.server.store import alerts

log = logging.getLogger(__name__)


async def purge_alerts(
    sessions: async_sessionmaker[AsyncSession], retention_days: float, batch: int = 10_000
) -> int:
    """Delete alerts older than retention, in batches; returns how many."""
    older_than = datetime.now(UTC) - timedelta(days=retention_days)
    total = 0
    while True:
        async with sessions.begin() as session:
            deleted = await alerts.purge(session, older_than, batch)
        total += deleted
        if deleted < batch:
            break
    if total:
        log.info("alert retention", extra={"deleted": total, "retention_days": retention_days})
    return total


class Jobs:
    """The replica's scheduler and its jobs."""

    def __init__(
        self,
        settings: Settings,
        url: str,
        sessions: async_sessionmaker[AsyncSession],
        registry: ModelRegistry,
        on_alerts: Callable[[], None] | None = None,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._leadership = Leadership(url)
        self.rescorer = Rescorer(
            sessions,
            registry,
            chunk=settings.rescore_chunk,
            workers=settings.rescore_workers,
            on_alerts=on_alerts,
        )
        self._scheduler = AsyncIOScheduler(timezone=UTC)

    async def rescore(self) -> RescoreResult | None:
        """One re-scoring run if this replica leads it; None if another does."""
        async with self._leadership.lead("rescore") as leader:
            if not leader:
                log.debug("re-scoring runs on another replica")
                return None
            return await self.rescorer.run(self._settings.rescore_stale_seconds)

    async def retention(self) -> int | None:
        """One retention run if this replica leads it."""
        async with self._leadership.lead("alert-retention") as leader:
            if not leader:
                return None
            return await purge_alerts(self._sessions, self._settings.alert_retention_days)

    async def _guarded(self, name: str, job: Callable[[], Awaitable[object]]) -> None:
        try:
            await job()
        except Exception:
            log.exception("job failed", extra={"job": name})

    def start(self) -> None:
        """Schedule the jobs; the first runs come one interval after start-up."""
        self._scheduler.add_job(
            self._guarded,
            "interval",
            args=("rescore", self.rescore),
            seconds=self._settings.rescore_interval_seconds,
            id="rescore",
            max_instances=1,
            coalesce=True,
        )
        self._scheduler.add_job(
            self._guarded,
            "interval",
            args=("alert-retention", self.retention),
            seconds=self._settings.retention_interval_seconds,
            id="alert-retention",
            max_instances=1,
            coalesce=True,
        )
        self._scheduler.start()

    def run_soon(self, job: str) -> None:
        """Run a job now instead of at its next interval (e.g. a model was activated)."""
        self._scheduler.modify_job(job, next_run_time=datetime.now(UTC))

    def stop(self) -> None:
        """Stop scheduling; a running job is abandoned with its transaction."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
