"""Revoking a key in PostgreSQL: idempotent, and told to listeners at commit,
also after their connection was lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.domain.errors import NotFound
from creditwatch.server.domain.tenants import parse_key
from creditwatch.server.store import database
from creditwatch.server.store.tenants import TenantStore
from creditwatch.server.store.tenants_revocations import KeyRef, RevocationListener
from tests.conftest import new_tenant

pytestmark = pytest.mark.asyncio


async def _until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


async def test_a_revocation_reaches_a_listener_and_a_reconnect_resets_it(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    store = TenantStore(sessions)
    tenant = await new_tenant(sessions, "revocations")
    key: KeyRef = (tenant.tenant_id, parse_key(tenant.api_key).key_id)
    heard: list[KeyRef | None] = []
    listener = RevocationListener(database.async_url(database_url), heard.append)
    listener.start()
    try:
        await _until(lambda: listener.live)
        assert heard == [None]  # connected: whatever was missed before is forgotten

        first = await store.revoke_api_key(key[1])
        assert not first.already_revoked and first.key.revoke_time is not None
        await _until(lambda: key in heard)
        # Idempotent: the same revoke time, and the replicas are told again.
        again = await store.revoke_api_key(key[1], tenant.tenant_id)
        assert again.already_revoked and again.key.revoke_time == first.key.revoke_time
        await _until(lambda: heard.count(key) == 2)
        assert [k.revoke_time for k in await store.list_api_keys(tenant.tenant_id)] == [
            first.key.revoke_time
        ]
        assert await store.authenticate(parse_key(tenant.api_key)) is None

        # Notices sent while the connection is down are lost: a reconnect
        # reports a reset, so the cache drops every key.
        heard.clear()
        pid = listener._connection.get_server_pid()  # type: ignore[union-attr]
        async with sessions() as session:
            await session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        await _until(lambda: None in heard and listener.live, seconds=15)
    finally:
        await listener.stop()
    assert not listener.live


async def test_revoking_an_unknown_key_or_another_tenants_is_not_found(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    store = TenantStore(sessions)
    tenant = await new_tenant(sessions, "owner")
    other = await new_tenant(sessions, "someone else")
    with pytest.raises(NotFound):
        await store.revoke_api_key("000000000000")
    with pytest.raises(NotFound):
        await store.revoke_api_key(parse_key(tenant.api_key).key_id, other.tenant_id)
    assert await store.authenticate(parse_key(tenant.api_key)) is not None
