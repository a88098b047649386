"""What batch work shared in chunks (re-scoring runs, a day's snapshots) does
alike on every replica: count a chunk's failed attempt, and the leader's wait
for the chunks other replicas hold."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server import metrics
from creditwatch.server.store.database import CHUNK_FAILURES, connection_lost

T = TypeVar("T")

log = logging.getLogger(__name__)

# How long a leader waits between looks at chunks other replicas hold.
WAIT_FOR_OTHERS = 0.05


class Abandoned(Exception):
    """A claimed chunk's work found that the chunk is no longer this
    replica's to do (a re-scoring run whose model was replaced, say): its
    transaction rolls back and the chunk is left, not counted as failed."""


async def attempt(
    session: AsyncSession,
    work: Callable[[], Awaitable[T]],
    fail: Callable[[AsyncSession, int], Awaitable[int]],
    chunk_id: int,
    kind: str,
) -> T | None:
    """A claimed chunk's work in a savepoint of the claim's transaction; None
    if it failed (not for a lost connection: that is the replica's, not the
    chunk's, and is raised). A failed attempt is rolled back and counted in
    the claim's transaction, which still holds the chunk's lock, so no other
    worker claims it before the count is in; at CHUNK_FAILURES failures the
    chunk is given up. `Abandoned` is raised, uncounted."""
    try:
        async with session.begin_nested():
            return await work()
    except Abandoned:
        raise
    except Exception as error:
        if connection_lost(error):
            raise
        failures = await fail(session, chunk_id)
        given_up = failures >= CHUNK_FAILURES
        metrics.BATCH_CHUNK_FAILURES.labels(kind, str(given_up).lower()).inc()
        log.exception(
            f"a {kind} chunk failed" + ("; given up" if given_up else ""),
            extra={"chunk": chunk_id, "failures": failures, "given_up": given_up},
        )
        return None


async def together(*work: Awaitable[None]) -> None:
    """Run `work` concurrently until all of it is done; should one part
    raise (or this be cancelled), the others are cancelled and waited for
    before the first error goes on up. Plain `asyncio.gather` leaves them
    running: a run that failed (a lost connection) and gave up its
    leadership kept planning and claiming chunks, beside the next leader's."""
    tasks = [asyncio.ensure_future(part) for part in work]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def wait_for_others(
    sessions: async_sessionmaker[AsyncSession],
    unfinished: Callable[[AsyncSession], Awaitable[int]],
    claim_and_do: Callable[[], Awaitable[bool]],
) -> None:
    """The leader's end of a run: until no chunk is left undone (but those
    given up), take any that comes free (a replica that died rolls its chunk
    back) and otherwise wait for the replicas that hold them."""
    while True:
        async with sessions() as session:
            if not await unfinished(session):
                return
        if not await claim_and_do():
            await asyncio.sleep(WAIT_FOR_OTHERS)
