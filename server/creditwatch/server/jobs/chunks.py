"""What batch work shared in chunks (re-scoring runs, a day's snapshots) does
alike on every replica: count a chunk's failed attempt, and the leader's wait
for the chunks other replicas hold."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.store.database import CHUNK_FAILURES

log = logging.getLogger(__name__)

# How long a leader waits between looks at chunks other replicas hold.
WAIT_FOR_OTHERS = 0.05


async def count_failure(
    sessions: async_sessionmaker[AsyncSession],
    fail: Callable[[AsyncSession, int], Awaitable[int]],
    chunk_id: int,
    what: str,
) -> None:
    """Count a failed attempt at a chunk, in a transaction of its own (the
    chunk's rolled back), and log the error being handled; at CHUNK_FAILURES
    failures the chunk is given up."""
    async with sessions.begin() as session:
        failures = await fail(session, chunk_id)
    log.exception(
        f"{what} failed",
        extra={"chunk": chunk_id, "failures": failures, "given_up": failures >= CHUNK_FAILURES},
    )


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
