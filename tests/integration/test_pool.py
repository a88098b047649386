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
