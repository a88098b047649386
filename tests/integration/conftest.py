"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.domain.overrides import OverridePolicy
from creditwatch.server.scoring.registry import ModelRegistry
from creditwatch.server.store import database


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
