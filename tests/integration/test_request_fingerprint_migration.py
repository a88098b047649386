"""Migration 0018 (request fingerprints) on a database that has keys already.

Keys stored before it keep replaying whatever a repeat asks (rolling-upgrade
safe); keys stored after it refuse a repeat that asks something else; and the
downgrade keeps every key.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest
from sqlalchemy import text

from creditwatch.server.domain.errors import InvalidArgument
from creditwatch.server.store import database, migrate
from creditwatch.server.store import limits as store


async def _sql(url: str, statement: str, **values: object) -> list[tuple[object, ...]]:
    engine = database.create_engine(url, 1)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(statement), values)
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        await engine.dispose()


async def _replay(url: str, tenant: uuid.UUID, request_id: str, fingerprint: str) -> object:
    engine = database.create_engine(url, 1)
    try:
        async with database.session_factory(engine).begin() as session:
            return await store.replayed_decision(session, tenant, request_id, fingerprint)
    finally:
        await engine.dispose()


def test_keys_from_before_0018_replay_and_the_downgrade_keeps_every_key(
    fresh_database: Callable[[], str],
) -> None:
    url = database.async_url(fresh_database())
    migrate.upgrade(url, "0017")
    tenant = uuid.uuid4()
    asyncio.run(
        _sql(url, "INSERT INTO tenants (id, display_name) VALUES (:t, 'before 0018')", t=tenant)
    )
    asyncio.run(
        _sql(
            url,
            "INSERT INTO idempotency_keys (tenant_id, method, request_id, result) "
            """VALUES (:t, 'DecideCreditLimit', 'before', '{"n": 1}')""",
            t=tenant,
        )
    )

    migrate.upgrade(url, "0018")
    assert asyncio.run(_replay(url, tenant, "before", "any request")) == {"n": 1}
    assert asyncio.run(_replay(url, tenant, "after", "first request")) is None
    assert asyncio.run(_replay(url, tenant, "after", "first request")) == {}
    with pytest.raises(InvalidArgument) as refused:
        asyncio.run(_replay(url, tenant, "after", "another request"))
    assert [v.field for v in refused.value.violations] == ["request_id"]

    migrate.downgrade(url, "0017")
    columns = asyncio.run(
        _sql(
            url,
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'idempotency_keys'",
        )
    )
    assert ("fingerprint",) not in columns
    keys = asyncio.run(_sql(url, "SELECT request_id FROM idempotency_keys ORDER BY request_id"))
    assert keys == [("after",), ("before",)]
