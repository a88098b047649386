"""The connection pool on a real PostgreSQL: a connection the server closed is
never handed out (no round trip spent checking the open ones)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy import text

from creditwatch.server.store import database

pytestmark = pytest.mark.asyncio


async def test_a_pooled_connection_postgresql_closed_is_replaced(database_url: str) -> None:
    engine = database.create_engine(database.async_url(database_url), 1)
    sessions = database.session_factory(engine)
    admin = await asyncpg.connect(**database.connect_kwargs(database.async_url(database_url)))
    try:
        async with sessions() as session:
            first = await session.scalar(text("SELECT pg_backend_pid()"))
        # The backend goes away (a restart, an operator, idle_session_timeout)
        # while its connection sits in the pool.
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", first)
        for _ in range(50):
            await asyncio.sleep(0.02)  # the event loop sees the socket close
            if not await admin.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)", first
            ):
                break
        await asyncio.sleep(0.05)
        async with sessions.begin() as session:
            connection = await database.driver(session)  # raw statements work too
            second = await connection.fetchval("SELECT pg_backend_pid()")
        assert second != first
    finally:
        await admin.close()
        await engine.dispose()


async def test_a_connection_back_inside_a_hidden_transaction_is_closed_not_reused(
    database_url: str,
) -> None:
    # What a cancelled call can leave (sqlalchemy#13381): the driver inside a
    # transaction SQLAlchemy thinks ended. Kept, it would turn every later
    # transaction into a savepoint of one that never ends, holding its locks
    # and the alert outbox's horizon for good.
    engine = database.create_engine(database.async_url(database_url), 1)
    sessions = database.session_factory(engine)
    admin = await asyncpg.connect(**database.connect_kwargs(database.async_url(database_url)))
    try:
        async with engine.connect() as pooled:
            connection = (await pooled.get_raw_connection()).driver_connection
            first = await connection.fetchval("SELECT pg_backend_pid()")
            await connection.execute("BEGIN")  # behind SQLAlchemy's back
            await connection.execute("SELECT 1")
            assert connection.is_in_transaction()
        async with sessions.begin() as session:
            second = await session.scalar(text("SELECT pg_backend_pid()"))
        assert second != first
        for _ in range(100):
            hidden = await admin.fetchval(
                "SELECT state FROM pg_stat_activity WHERE pid = $1", first
            )
            if hidden is None:
                break
            await asyncio.sleep(0.02)
        assert hidden is None  # its backend, and so its transaction, ended
    finally:
        await admin.close()
        await engine.dispose()
