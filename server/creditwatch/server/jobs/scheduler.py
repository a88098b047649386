"""APScheduler wiring: periodic jobs, each run by exactly one replica.

Every replica schedules every job; a run first takes the job's advisory lock
(`Leadership`) and skips if another replica holds it. Jobs: re-scoring of
stale watched companies, alert retention, daily portfolio snapshots (00:00
UTC, and at start-up and every `SNAPSHOT_CATCH_UP_SECONDS`, so that a day a
replica started after midnight, or whose leader died before planning it, is
still taken), and the official register feeds. The chunks of a re-scoring
run and of a day's snapshots are shared: every replica looks for free ones
every few seconds ("batch-share").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.config import Settings
from creditwatch.server.intake import Intake
from creditwatch.server.jobs.leader import Leadership, LeadershipLost
from creditwatch.server.jobs.rescoring import (
    Rescorer,
    RescoreResult,
    on_activated_model,
    settled,
)
from creditwatch.server.jobs.snapshots import SnapshotResult, Snapshotter
from creditwatch.server.registers.base import RegisterHttp, SyncResult, sync
from creditwatch.server.registers.brreg import Enhetsregisteret
from creditwatch.server.scoring.registry import ModelRegistry
from creditwatch.server.store import alerts, idempotency
from creditwatch.server.store import limits as credit_limits
from creditwatch.server.store.activations import ActivationStore

log = logging.getLogger(__name__)

# The day's snapshots are also attempted this often (and at start-up), until
# this replica has taken the day: the 00:00 run is in one replica's memory
# only. An attempt snapshots only the watch lists without one of the day
# (store.portfolio.plan), so a day is never taken twice.
SNAPSHOT_CATCH_UP_SECONDS = 600.0
CLAIMS_CATCH_UP_SECONDS = 3600.0
"""Besides its 00:05 UTC run, the claims clock runs at start-up and this often:
a replica restarted across 00:05, or a leader that died mid-run, no longer
delays a claim's eligibility alert by a day (a run handles whatever is due)."""


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


async def purge_request_ids(sessions: async_sessionmaker[AsyncSession], batch: int = 10_000) -> int:
    """Delete idempotency keys past their replay window, in batches; returns how many."""
    total = 0
    while True:
        async with sessions.begin() as session:
            deleted = await idempotency.purge(session, batch)
        total += deleted
        if deleted < batch:
            break
    if total:
        log.info("request id retention", extra={"deleted": total})
    return total


async def sync_registers(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    intake: Intake,
    progress: Callable[[str, SyncResult], None] | None = None,
) -> list[SyncResult]:
    """One pass over every enabled register feed."""
    results = []
    if settings.brreg_enabled:
        http = RegisterHttp(settings.brreg_base_url)
        try:
            adapter = Enhetsregisteret(http, page_size=settings.brreg_page_size)
            results.append(
                await sync(
                    adapter,
                    sessions,
                    intake,
                    every_company=settings.registers_every_company,
                    progress=progress,
                    read_batch=settings.registers_read_batch,
                    unit_patience=timedelta(hours=settings.registers_unit_patience_hours),
                )
            )
        finally:
            await http.close()
    return results


async def take_snapshots(
    sessions: async_sessionmaker[AsyncSession], day: date, workers: int = 2
) -> int:
    """Snapshot every watch list for `day` (idempotent), with any other
    replica that shares the chunks; returns the entries written."""
    return (await Snapshotter(sessions, workers=workers).run(day)).written


async def run_claims_clock(sessions: async_sessionmaker[AsyncSession], now: datetime) -> int:
    """Mark insured overdue payments eligible for a claim as of `now` and alert
    on them, a page of waiting payments per transaction (each page's marks and
    alerts together); returns how many alerted (an invoice alerts once: one
    eligible again after a later due date was reported is marked, not
    alerted again)."""
    policies: dict[Any, Any] = {}
    count = 0
    after = None
    while True:
        async with sessions.begin() as session:

            async def rules_of(tenant: Any, version: int | None) -> Any:
                key = (tenant, version or 0)
                if key not in policies:
                    policies[key] = await credit_limits.policy(session, tenant, version or 0)
                return policies[key]

            due, after = await credit_limits.claims_due(
                session, rules_of, now, after, credit_limits.CLAIMS_PAGE
            )
            if due:
                await alerts.write(session, [], claims=due)
        count += len(due)
        if after is None:
            break
    if count:
        log.info("claims became eligible and alerted", extra={"count": count})
    return count


class Jobs:
    """The replica's scheduler and its jobs."""

    def __init__(
        self,
        settings: Settings,
        url: str,
        sessions: async_sessionmaker[AsyncSession],
        registry: ModelRegistry,
        on_alerts: Callable[[], None] | None = None,
        intake: Intake | None = None,
        snapshot_catch_up_seconds: float = SNAPSHOT_CATCH_UP_SECONDS,
        claims_catch_up_seconds: float = CLAIMS_CATCH_UP_SECONDS,
    ) -> None:
        self._settings = settings
        self._snapshot_catch_up = snapshot_catch_up_seconds
        self._claims_catch_up = claims_catch_up_seconds
        self._snapshots_taken: date | None = None  # the last day this replica led to its end
        self._activations = ActivationStore(sessions)
        self._intake = intake
        self._sessions = sessions
        self._leadership = Leadership(url)
        self.rescorer = Rescorer(
            sessions,
            registry,
            chunk=settings.rescore_chunk,
            workers=settings.rescore_workers,
            on_alerts=on_alerts,
            policy_rollout_seconds=settings.policy_rollout_seconds,
        )
        self._registry = registry
        self.snapshotter = Snapshotter(sessions)
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._running: set[asyncio.Task[Any]] = set()

    async def rescore(self) -> RescoreResult | None:
        """One re-scoring run if this replica leads it; None if another does."""
        async with self._leadership.lead("rescore") as leader:
            if not leader:
                log.debug("re-scoring runs on another replica")
                return None
            result = await self.rescorer.run(self._settings.rescore_stale_seconds)
            while result.superseded is not None:
                # A model activated during the run stopped it: re-score with
                # it now (still leading), once this replica has switched to it
                # (its follower may not have yet). A replica that has not
                # loaded it leaves the run to one that has (Rescorer.run).
                await self._registry.sync(self._activations)
                result = await self.rescorer.run(self._settings.rescore_stale_seconds)
            return result

    async def share(self) -> tuple[RescoreResult, SnapshotResult]:
        """Take part in the batch work another replica leads, if it has chunks
        free: a re-scoring run, a day's portfolio snapshots."""
        rescored, snapshotted = RescoreResult(), SnapshotResult()
        try:
            rescored = await self.rescorer.share()
        except Exception:  # one kind's failure must not stop the other's sharing
            log.exception("sharing a re-scoring run failed")
        try:
            snapshotted = await self.snapshotter.share()
        except Exception:
            log.exception("sharing a day's snapshots failed")
        return rescored, snapshotted

    async def retention(self) -> int | None:
        """One retention run if this replica leads it."""
        async with self._leadership.lead("alert-retention") as leader:
            if not leader:
                return None
            purged = await purge_alerts(self._sessions, self._settings.alert_retention_days)
            await purge_request_ids(self._sessions)  # replayed for 24 hours only
            return purged

    async def registers(self) -> list[SyncResult] | None:
        """One pass over the register feeds if this replica leads it."""
        if self._intake is None:
            return None
        async with self._leadership.lead("registers") as leader:
            if not leader:
                return None
            # Its intakes store scores: with the current policy and the
            # activated model, or none.
            policy = self._registry.active.policy
            rollout = self._settings.policy_rollout_seconds
            if not await settled(self._sessions, policy, rollout, "registers"):
                return None
            # With the activated model, as a re-score would: first switch to
            # it if this replica has it and has not looked yet. A replica
            # without it leaves the feed to those that have it for the
            # rollout window after the activation; past it, the feed's events
            # (a bankruptcy) matter more than which model scores them, so it
            # applies them (warned, counted) rather than no replica ever doing
            # so; a re-score on the activated model then redoes those scores.
            await self._registry.sync(self._activations)
            if not await on_activated_model(self._activations, self._registry, "registers"):
                activated = await self._activations.current()
                assert activated is not None  # on_activated_model is True without one
                if datetime.now(UTC) - activated[1] < timedelta(seconds=rollout):
                    return None
                log.warning(
                    "the activated model has been missing here past the rollout window: "
                    "applying the register feeds with this replica's model",
                    extra={
                        "activated": activated[0],
                        "this_replica": self._registry.active.version,
                    },
                )
            return await sync_registers(self._settings, self._sessions, self._intake)

    async def snapshots(self, day: date | None = None) -> int | None:
        """Today's portfolio snapshots of every watch list, if this replica leads it."""
        async with self._leadership.lead("portfolio-snapshots") as leader:
            if not leader:
                return None
            return (await self.snapshotter.run(day or datetime.now(UTC).date())).written

    async def _scheduled_snapshots(self) -> int | None:
        """Today's snapshots, unless this replica has led them to their end
        already. That memory is this replica's: another replica, or this one
        after a restart, runs the day again, which takes the lists created
        since (as they stand then) and leaves the others' snapshots as they
        are (see store.portfolio.plan)."""
        today = datetime.now(UTC).date()
        if self._snapshots_taken == today:
            return None
        written = await self.snapshots(today)
        if written is not None:
            self._snapshots_taken = today
        return written

    async def claims(self) -> int | None:
        """The claims clock, if this replica leads it."""
        async with self._leadership.lead("claims-clock") as leader:
            if not leader:
                return None
            return await run_claims_clock(self._sessions, datetime.now(UTC))

    async def _guarded(self, name: str, job: Callable[[], Awaitable[object]]) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            await job()
        except asyncio.CancelledError:
            log.info("job cancelled by shutdown", extra={"job": name})
            raise
        except LeadershipLost:
            # Its transactions rolled back; another replica may lead it now,
            # and this one tries again at the next run.
            log.warning("job stopped: its leadership lock was lost", extra={"job": name})
        except Exception:
            log.exception("job failed", extra={"job": name})
        finally:
            if task is not None:
                self._running.discard(task)

    def start(self) -> None:
        """Schedule the jobs; the first runs come one interval after start-up,
        but for the day's snapshots (at once), the register feeds (5 s) and
        the claims clock (10 s)."""
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
            args=("batch-share", self.share),
            seconds=self._settings.batch_share_interval_seconds,
            id="batch-share",
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
        self._scheduler.add_job(
            self._guarded,
            OrTrigger(
                [
                    CronTrigger(hour=0, minute=0, timezone=UTC),
                    IntervalTrigger(seconds=self._snapshot_catch_up, timezone=UTC),
                ]
            ),
            args=("portfolio-snapshots", self._scheduled_snapshots),
            id="portfolio-snapshots",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=6 * 3600,
            next_run_time=datetime.now(UTC),
        )
        self._scheduler.add_job(
            self._guarded,
            OrTrigger(
                [
                    CronTrigger(hour=0, minute=5, timezone=UTC),
                    IntervalTrigger(seconds=self._claims_catch_up, timezone=UTC),
                ]
            ),
            args=("claims-clock", self.claims),
            id="claims-clock",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=6 * 3600,
            next_run_time=datetime.now(UTC) + timedelta(seconds=10),
        )
        if self._settings.brreg_enabled and self._intake is not None:
            self._scheduler.add_job(
                self._guarded,
                "interval",
                args=("registers", self.registers),
                seconds=self._settings.registers_interval_seconds,
                id="registers",
                max_instances=1,
                coalesce=True,
                next_run_time=datetime.now(UTC) + timedelta(seconds=5),
            )
        self._scheduler.start()

    def run_soon(self, job: str) -> None:
        """Run a job now instead of at its next interval (e.g. a model was activated)."""
        self._scheduler.modify_job(job, next_run_time=datetime.now(UTC))

    async def stop(self, seconds: float = 5.0) -> None:
        """Stop scheduling and cancel running jobs (their transactions roll back;
        every job is safe to run again)."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        running = list(self._running)
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running, timeout=seconds)
