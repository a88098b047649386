"""A job leader whose advisory-lock connection is lost stops leading: its
job is cancelled (LeadershipLost), and PostgreSQL keeps the lock connection
under TCP keepalives so that a leader cut off without a word loses the lock."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid

import asyncpg
import pytest

from creditwatch.server.jobs.leader import LOCK_KEEPALIVES, Leadership, LeadershipLost, lock_key
from creditwatch.server.store import database

pytestmark = pytest.mark.asyncio


async def test_the_lock_connection_has_tcp_keepalives(database_url: str) -> None:
    connection = await Leadership(database.async_url(database_url)).connect()
    try:
        if await connection.fetchval("SELECT inet_client_addr()") is None:
            pytest.skip("a Unix socket: PostgreSQL has no TCP keepalives for it")
        settings = {
            name: await connection.fetchval("SELECT current_setting($1)", name)
            for name in LOCK_KEEPALIVES
        }
    finally:
        await connection.close()
    assert settings == LOCK_KEEPALIVES


async def _lock_backend(url: str, job: str) -> int:
    """The pid of the PostgreSQL backend holding `job`'s lock."""
    admin = await asyncpg.connect(**database.connect_kwargs(url))
    try:
        pid: int = await admin.fetchval(
            """
            SELECT pid FROM pg_locks
            WHERE locktype = 'advisory' AND granted
              AND classid = (($1::bigint >> 32) & 4294967295)::oid
              AND objid = ($1::bigint & 4294967295)::oid AND objsubid = 1
            """,
            lock_key(job),
        )
    finally:
        await admin.close()
    return pid


async def _lead_long(leadership: Leadership, job: str) -> tuple[asyncio.Task[None], list[bool]]:
    """A job run (an hour long) under `leadership`, once it holds the lock;
    and a list that gets an item should the run ever finish."""
    leading = asyncio.Event()
    finished: list[bool] = []

    async def run() -> None:
        async with leadership.lead(job) as held:
            assert held
            leading.set()
            await asyncio.sleep(3600)
            finished.append(True)

    task = asyncio.create_task(run())
    await asyncio.wait_for(leading.wait(), 60)
    return task, finished


async def test_a_leader_whose_lock_connection_is_closed_stops_its_job(database_url: str) -> None:
    url = database.async_url(database_url)
    job = f"test-lost-lock-{uuid.uuid4()}"
    # No probe within the test: PostgreSQL closing the connection is enough.
    task, finished = await _lead_long(Leadership(url, probe_seconds=3600), job)
    admin = await asyncpg.connect(**database.connect_kwargs(url))
    try:  # an operator, a failover, an idle-session timeout
        assert await admin.fetchval(
            "SELECT pg_terminate_backend($1)", await _lock_backend(url, job)
        )
    finally:
        await admin.close()
    with pytest.raises(LeadershipLost):
        await asyncio.wait_for(task, 60)
    assert not finished
    async with Leadership(url).lead(job) as other:
        assert other  # another replica leads it now, and this one no longer does


async def test_a_leader_whose_lock_connection_goes_silent_stops_its_job(database_url: str) -> None:
    url = database.async_url(database_url)
    job = f"test-silent-lock-{uuid.uuid4()}"
    task, finished = await _lead_long(Leadership(url, probe_seconds=0.2), job)
    backend = await _lock_backend(url, job)
    try:
        os.kill(backend, signal.SIGSTOP)  # answers nothing, closes nothing
    except (PermissionError, ProcessLookupError):
        task.cancel()
        pytest.skip("PostgreSQL runs on another host or as another user")
    try:
        with pytest.raises(LeadershipLost):
            await asyncio.wait_for(task, 60)
    finally:
        os.kill(backend, signal.SIGCONT)
    assert not finished


async def test_a_shutdown_cancel_is_not_taken_for_a_lost_lock(database_url: str) -> None:
    url = database.async_url(database_url)
    leading = asyncio.Event()

    async def run() -> None:
        async with Leadership(url, probe_seconds=0.1).lead(f"test-{uuid.uuid4()}") as held:
            assert held
            leading.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(run())
    await asyncio.wait_for(leading.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
