"""Leadership by PostgreSQL advisory lock: exactly one replica runs a job.

A job run first tries `pg_try_advisory_lock` on a connection of its own; the
replica that gets it runs the job, the others skip this run. The lock is held
by the connection, so a replica that dies (even by kill -9) releases it when
PostgreSQL notices the connection is gone.

The lock lives only as long as that connection, which can go while the job
runs (a failover, a terminated backend, a firewall's cut): then another
replica may take the lock and run the job too. So the leader cancels the job
(`LeadershipLost`) as soon as its lock connection closes, and probes it every
`probe_seconds` for one gone silent (no answer in time); and PostgreSQL sends
TCP keepalives on it, so that a leader cut off without a word (its host gone,
a network partition) loses the lock within about a minute
(`LOCK_KEEPALIVES`), after that leader has stopped (its probe gets no answer
within two probe intervals, 30 seconds).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import asyncpg

from creditwatch.server.store import database

log = logging.getLogger(__name__)

# PostgreSQL's TCP keepalives on the lock connection (server settings, in
# seconds; ignored on a Unix socket): the first after 30 s of silence, then
# every 10 s, the connection dropped after 3 unanswered.
LOCK_KEEPALIVES = {
    "tcp_keepalives_idle": "30",
    "tcp_keepalives_interval": "10",
    "tcp_keepalives_count": "3",
}
PROBE_SECONDS = 15.0


def lock_key(job: str) -> int:
    """A stable signed 64-bit advisory-lock key for a job name."""
    digest = hashlib.sha256(f"creditwatch-job:{job}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class LeadershipLost(Exception):
    """The lock connection of a job this replica led was lost while the job
    ran; the job was cancelled (another replica may lead it now)."""

    def __init__(self, job: str) -> None:
        super().__init__(f"lost the lock of job {job!r}: its connection to PostgreSQL is gone")
        self.job = job


class Leadership:
    """Tries to become the one replica running a job."""

    def __init__(self, url: str, probe_seconds: float = PROBE_SECONDS) -> None:
        self._connect = database.connect_kwargs(url)
        self._probe_seconds = probe_seconds

    async def connect(self) -> Any:
        """A new lock connection (asyncpg), with PostgreSQL's TCP keepalives on."""
        return await asyncpg.connect(**self._connect, server_settings=dict(LOCK_KEEPALIVES))

    @asynccontextmanager
    async def lead(self, job: str) -> AsyncIterator[bool]:
        """Yields True while this replica holds the job's lock, False if another
        does. Should the lock connection be lost meanwhile, the body is
        cancelled and LeadershipLost raised in its place."""
        connection = await self.connect()
        try:
            held = bool(await connection.fetchval("SELECT pg_try_advisory_lock($1)", lock_key(job)))
            if not held:
                yield False
                return
            body = asyncio.current_task()
            assert body is not None
            lost: list[str] = []

            def lose(why: str) -> None:
                if not lost:
                    lost.append(why)
                    log.warning(
                        "lost the lock connection of a job this replica leads: stopping the job",
                        extra={"job": job, "error": why},
                    )
                    body.cancel()

            def closed(_: object) -> None:
                lose("connection closed")

            # A connection PostgreSQL closes (a terminated backend, a restart)
            # is noticed at once; one that goes silent, by the probe.
            connection.add_termination_listener(closed)
            probe = asyncio.create_task(self._probe(connection, lose))
            try:
                yield True
            except asyncio.CancelledError:
                # Our cancel alone (not also a shutdown's): the job ends here.
                if lost and body.uncancel() == 0:
                    raise LeadershipLost(job) from None
                raise
            finally:
                connection.remove_termination_listener(closed)
                probe.cancel()
                with suppress(asyncio.CancelledError):
                    await probe
        finally:
            await _close(connection)  # ends the session: the lock is released

    async def _probe(self, connection: Any, lose: Callable[[str], None]) -> None:
        """Until cancelled, check the lock connection answers in time."""
        while True:
            await asyncio.sleep(self._probe_seconds)
            try:
                await connection.fetchval("SELECT 1", timeout=self._probe_seconds)
            except Exception as error:  # closed, reset, terminated, timed out
                lose(type(error).__name__)
                return


async def _close(connection: Any) -> None:
    """Close a lock connection, whatever state it is in."""
    if connection.is_closed():
        return
    try:
        await connection.close(timeout=5)
    except Exception:  # a dead peer: drop the socket
        connection.terminate()
