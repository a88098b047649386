"""Leadership by PostgreSQL advisory lock: exactly one replica runs a job.

A job run first tries `pg_try_advisory_lock` on a connection of its own; the
replica that gets it runs the job, the others skip this run. The lock is held
by the connection, so a replica that dies (even by kill -9) releases it when
PostgreSQL notices the connection is gone.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from creditwatch.server.store import database


def lock_key(job: str) -> int:
    """A stable signed 64-bit advisory-lock key for a job name."""
    digest = hashlib.sha256(f"creditwatch-job:{job}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Leadership:
    """Tries to become the one replica running a job."""

    def __init__(self, url: str) -> None:
        self._connect = database.connect_kwargs(url)

    @asynccontextmanager
    async def lead(self, job: str) -> AsyncIterator[bool]:
        """Yields True while this replica holds the job's lock, False if another does."""
        connection = await asyncpg.connect(**self._connect)
        try:
            held = bool(await connection.fetchval("SELECT pg_try_advisory_lock($1)", lock_key(job)))
            yield held
        finally:
            await connection.close()  # ends the session: the lock is released
