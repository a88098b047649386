"""The schema exists only through Alembic: upgrade an empty database to head and back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
from sqlalchemy.engine import make_url

from creditwatch.server.store import database, migrate


async def _tables(url: str) -> set[str]:
    parsed = make_url(url)
    kwargs: dict[str, object] = {"user": parsed.username, "database": parsed.database}
    if "host" in parsed.query:
        kwargs["host"] = parsed.query["host"]
    else:
        kwargs.update(host=parsed.host, port=parsed.port or 5432)
    conn = await asyncpg.connect(**kwargs)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


def test_upgrade_to_head_then_down_to_base(fresh_database: Callable[[], str]) -> None:
    url = fresh_database()
    async_url = database.async_url(url)
    assert asyncio.run(_tables(url)) == set()

    migrate.upgrade(async_url)
    tables = asyncio.run(_tables(url))
    assert {
        "tenants",
        "api_keys",
        "watch_lists",
        "watch_list_entries",
        "companies",
        "scores",
    } <= tables
    assert "alembic_version" in tables

    migrate.upgrade(async_url)  # a second start of a replica is a no-op

    migrate.downgrade(async_url, "base")
    assert asyncio.run(_tables(url)) == {"alembic_version"}


def test_models_match_the_migrations(database_url: str) -> None:
    """Autogenerate against head finds nothing: no model change without a revision."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from creditwatch.server.store.models import Base

    async def diff() -> list[object]:
        engine = database.create_engine(database.async_url(database_url), 1)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(
                    lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
                )
        finally:
            await engine.dispose()

    assert asyncio.run(diff()) == []
