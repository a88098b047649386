"""A URL with libpq's `sslmode` works for the pool and the dedicated connections alike."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from creditwatch.server.store import database

pytestmark = pytest.mark.asyncio


async def test_sslmode_in_the_url_reaches_every_connection(database_url: str) -> None:
    url = make_url(database_url).update_query_dict({"sslmode": "disable"})
    written = url.render_as_string(hide_password=False)
    engine = database.create_engine(database.async_url(written), 1)
    try:
        async with engine.connect() as connection:
            assert await connection.scalar(text("SELECT 1")) == 1
    finally:
        await engine.dispose()
    kwargs = database.connect_kwargs(written)
    assert kwargs["ssl"] == "disable"
    connection = await asyncpg.connect(**kwargs)
    try:
        assert await connection.fetchval("SELECT 1") == 1
    finally:
        await connection.close()
