"""A real creditwatch server process over loopback gRPC, shared by e2e tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.client.testing import ServerProcess
from creditwatch.server.domain.tenants import SCOPE_COMPANIES_WRITE
from tests.conftest import TenantKey, new_tenant


@pytest.fixture(scope="session")
def server(database_url: str) -> Iterator[ServerProcess]:
    """One server for the e2e session, on the session's database."""
    # It shares the session's database with the integration tests, whose
    # replicas' chunk sharing is under test: it takes no chunks of theirs.
    with ServerProcess(
        database_url, env={"CREDITWATCH_BATCH_SHARE_INTERVAL_SECONDS": "86400"}
    ) as process:
        yield process


@pytest.fixture(scope="session")
async def channel(server: ServerProcess) -> AsyncIterator[grpc.aio.Channel]:
    """An async channel to the server."""
    async with grpc.aio.insecure_channel(server.address) as chan:
        await chan.channel_ready()
        yield chan


@pytest.fixture
async def tenant(sessions: async_sessionmaker[AsyncSession]) -> TenantKey:
    """A fresh tenant per test, so tests never see each other's data."""
    return await new_tenant(sessions, "test tenant")


@pytest.fixture
async def other_tenant(sessions: async_sessionmaker[AsyncSession]) -> TenantKey:
    """A second tenant, for isolation tests."""
    return await new_tenant(sessions, "other tenant")


@pytest.fixture
async def feed(sessions: async_sessionmaker[AsyncSession]) -> TenantKey:
    """A data feed's key: granted company-data intake."""
    return await new_tenant(sessions, "bureau feed", scopes=(SCOPE_COMPANIES_WRITE,))
