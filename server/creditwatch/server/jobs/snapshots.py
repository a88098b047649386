"""Daily portfolio snapshots, shared by the replicas.

The replica that leads the day's snapshots (advisory lock) queues the watch
lists without one in chunks of about `store.portfolio.CHUNK_ENTRIES` entries;
every replica's workers claim chunks (`FOR UPDATE SKIP LOCKED`) and take a
chunk's snapshots in the transaction that holds it and marks it done. A
replica that dies mid-chunk rolls back and leaves the chunk to another; a
snapshot is idempotent, so nothing is written twice.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.jobs.chunks import attempt, together, wait_for_others
from creditwatch.server.jobs.rescoring import REPLICA
from creditwatch.server.store import portfolio

log = logging.getLogger(__name__)


@dataclass
class SnapshotResult:
    """What a day's snapshots did (in `run`'s result: every replica's part)."""

    written: int = 0
    lists: int = 0
    chunks: int = 0
    replicas: int = 0
    seconds: float = 0.0
    given_up: int = 0
    """Chunks whose snapshot failed store.database.CHUNK_FAILURES times."""


class Snapshotter:
    """Takes the day's portfolio snapshots in chunks of watch lists: `run` on
    the leading replica, `share` on every replica."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        workers: int = 2,
        chunk_entries: int = portfolio.CHUNK_ENTRIES,
        chunk_lists: int = portfolio.CHUNK_LISTS,
        replica: str = REPLICA,
    ) -> None:
        self._sessions = sessions
        self._workers = workers
        self._chunk_entries = chunk_entries
        self._chunk_lists = chunk_lists
        self._replica = replica
        self._leading = False

    async def _take(self, session: AsyncSession, chunk: portfolio.SnapshotChunk) -> int:
        """One claimed chunk's snapshots, in the session's transaction."""
        return await portfolio.take_chunk(session, chunk, self._replica)

    async def _claim_and_take(self, mine: SnapshotResult) -> bool:
        """Claim a queued chunk and take its snapshots, in one transaction;
        False if no chunk was free. A chunk whose snapshot fails (but for a
        lost connection: that is the replica's, not the chunk's) is counted
        against it and left for another attempt."""
        async with self._sessions.begin() as session:
            chunk = await portfolio.claim(session)
            if chunk is None:
                return False
            claimed = chunk
            written = await attempt(
                session,
                lambda: self._take(session, claimed),
                portfolio.fail,
                chunk.id,
                "snapshot",
            )
        if written is None:
            return True
        mine.written += written
        mine.lists += len(chunk.watch_list_ids)
        mine.chunks += 1
        return True

    async def _drain(self, mine: SnapshotResult) -> None:
        async def work() -> None:
            while await self._claim_and_take(mine):
                pass

        await together(*(work() for _ in range(self._workers)))

    async def share(self) -> SnapshotResult:
        """Take chunks of another replica's day until none is free (one claim
        first, then `workers` at a time); what this replica did."""
        mine = SnapshotResult()
        if self._leading:
            return mine  # its own workers are at it
        started = time.perf_counter()
        if not await self._claim_and_take(mine):
            return mine
        await self._drain(mine)
        mine.seconds = time.perf_counter() - started
        log.info(
            "took snapshot chunks of a shared day",
            extra={"chunks": mine.chunks, "lists": mine.lists, "entries": mine.written},
        )
        return mine

    async def run(self, day: date) -> SnapshotResult:
        """Snapshot every watch list that has no snapshot of `day`, shared with
        the other replicas; run by one replica at a time (the caller's
        leadership). Ends when every chunk of the day is done, whichever
        replica did it; its result is every replica's."""
        started = time.perf_counter()
        mine = SnapshotResult()
        self._leading = True
        try:
            async with self._sessions.begin() as session:
                if dropped := await portfolio.drop_earlier_days(session, day):
                    log.warning(
                        "dropped earlier days' snapshot chunks not done",
                        extra={"day": str(day), "chunks": dropped},
                    )
                planned = await portfolio.plan(session, day, self._chunk_entries, self._chunk_lists)
            log.info("portfolio snapshots queued", extra={"day": str(day), "chunks": planned})
            await self._drain(mine)
            # Chunks other replicas hold are theirs to finish (or, should one
            # die, to roll back and leave for another claim: ours).
            await wait_for_others(
                self._sessions,
                lambda session: portfolio.unfinished(session, day),
                lambda: self._claim_and_take(mine),
            )
            async with self._sessions.begin() as session:
                totals = await portfolio.close_day(session, day)
        finally:
            self._leading = False
        result = SnapshotResult(
            written=totals.written,
            lists=totals.lists,
            chunks=totals.chunks,
            replicas=totals.replicas,
            seconds=time.perf_counter() - started,
            given_up=totals.given_up,
        )
        log.info(
            "portfolio snapshots taken",
            extra={
                "day": day.isoformat(),
                "entries": result.written,
                "watch_lists": result.lists,
                "chunks": result.chunks,
                "replicas": result.replicas,
                "chunks_given_up": result.given_up,
                "by_this_replica": mine.written,
                "seconds": round(result.seconds, 2),
            },
        )
        return result
