"""Idempotency keys in PostgreSQL: replayed within 24 hours, then absent
(DecideCreditLimit, AddEntries and CreateWatchList promise "a repeat within
24 hours"), and purged once past that window."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.jobs.scheduler import purge_request_ids
from creditwatch.server.store import idempotency, models
from tests.conftest import new_tenant

pytestmark = pytest.mark.asyncio


async def test_keys_past_24_hours_are_claimed_anew_then_purged(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    tenant = (await new_tenant(sessions, "idempotency")).tenant_id
    async with sessions.begin() as session:
        for n, request_id in enumerate(("fresh", "old", "older")):
            assert await idempotency.claim(session, tenant, "Decide", request_id) is None
            await idempotency.remember(session, tenant, "Decide", request_id, {"n": n})
    async with sessions.begin() as session:
        await session.execute(
            text(
                "UPDATE idempotency_keys SET create_time = now() - CASE request_id "
                "WHEN 'fresh' THEN interval '23 hours' ELSE interval '25 hours' END "
                "WHERE tenant_id = :t"
            ),
            {"t": tenant},
        )

    async with sessions.begin() as session:
        assert await idempotency.claim(session, tenant, "Decide", "fresh") == {"n": 0}
        # Expired: this call is the first again, and its result is the one kept.
        assert await idempotency.claim(session, tenant, "Decide", "old") is None
        await idempotency.remember(session, tenant, "Decide", "old", {"n": 9})
    async with sessions.begin() as session:
        assert await idempotency.claim(session, tenant, "Decide", "old") == {"n": 9}
        assert await idempotency.purge(session) >= 1
    async with sessions() as session:
        kept = await session.scalars(
            select(models.IdempotencyKey.request_id).where(
                models.IdempotencyKey.tenant_id == tenant
            )
        )
        assert sorted(kept) == ["fresh", "old"]


async def test_the_retention_job_purges_expired_keys_in_batches(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    tenant = (await new_tenant(sessions, "idempotency purge")).tenant_id
    async with sessions.begin() as session:
        for request_id in ("a", "b", "c", "kept"):
            assert await idempotency.claim(session, tenant, "Create", request_id) is None
        await session.execute(
            text(
                "UPDATE idempotency_keys SET create_time = now() - interval '25 hours' "
                "WHERE tenant_id = :t AND request_id <> 'kept'"
            ),
            {"t": tenant},
        )
    assert await purge_request_ids(sessions, batch=2) >= 3
    async with sessions() as session:
        left = await session.scalars(
            select(models.IdempotencyKey.request_id).where(
                models.IdempotencyKey.tenant_id == tenant
            )
        )
        assert list(left) == ["kept"]
