"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.domain.overrides import OverridePolicy
from creditwatch.server.scoring.registry import ModelRegistry
from creditwatch.server.store import database, migrate


@pytest.fixture(scope="module")
async def registry() -> AsyncIterator[ModelRegistry]:
    """The shipped model, as a server loads it."""
    with ThreadPoolExecutor(1) as executor:
        yield ModelRegistry.load(executor, OverridePolicy())


@pytest.fixture
async def other_replica(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions of a second replica: an engine and pool of its own."""
    engine = database.create_engine(database.async_url(database_url), 3)
    yield database.session_factory(engine)
    await engine.dispose()


@pytest.fixture
def own_database_url(fresh_database: Callable[[], str]) -> str:
    """A new database at head (async URL)."""
    url = database.async_url(fresh_database())
    migrate.upgrade(url)
    return url


@pytest.fixture
async def own_database(
    own_database_url: str,
) -> AsyncIterator[tuple[str, async_sessionmaker[AsyncSession]]]:
    """A new database at head and its sessions, for a test that changes what
    holds database-wide (the current override policy, say), which the
    session's database must not carry into later tests."""
    engine = database.create_engine(own_database_url, 5)
    yield own_database_url, database.session_factory(engine)
    await engine.dispose()
