"""Watch-list store against real PostgreSQL: concurrency and atomicity."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.domain.errors import NotFound
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.watchlists import EntryColumns, EntrySpec, WatchListSpec
from creditwatch.server.store.watchlists import WatchListStore
from tests.conftest import new_tenant
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio


async def test_concurrent_overlapping_adds_keep_entry_count_exact(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    tenant = await new_tenant(sessions, "concurrency")
    store = WatchListStore(sessions)
    created = await store.create(tenant.tenant_id, WatchListSpec("busy"))
    list_id = uuid.UUID(created.id)
    numbers = norwegian_numbers(3_000)
    # Eight writers with overlapping batches in different orders: upserts must
    # neither deadlock nor double-count.
    batches = [numbers[i * 300 : i * 300 + 900] for i in range(8)]
    batches = [b if i % 2 else list(reversed(b)) for i, b in enumerate(batches)]
    results = await asyncio.gather(
        *(
            store.add_entries(
                tenant.tenant_id,
                list_id,
                EntryColumns.of([EntrySpec(CompanyId("NO", n)) for n in batch]),
            )
            for batch in batches
        )
    )
    distinct = len({n for b in batches for n in b})
    assert sum(r.added for r in results) == distinct
    assert (await store.get(tenant.tenant_id, list_id)).entry_count == distinct
    removed = await store.remove_entries(
        tenant.tenant_id, list_id, [CompanyId("NO", n) for n in numbers[:100]]
    )
    assert removed == 100
    assert (await store.get(tenant.tenant_id, list_id)).entry_count == distinct - 100


async def test_request_id_replay_returns_first_result_without_writing(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    tenant = await new_tenant(sessions, "replay")
    store = WatchListStore(sessions)
    created = await store.create(tenant.tenant_id, WatchListSpec("replay"))
    list_id = uuid.UUID(created.id)
    entries = EntryColumns.of([EntrySpec(CompanyId("NO", n)) for n in norwegian_numbers(10)])
    first, second = await asyncio.gather(
        store.add_entries(tenant.tenant_id, list_id, entries, request_id="r-1"),
        store.add_entries(tenant.tenant_id, list_id, entries, request_id="r-1"),
    )
    assert first == second
    assert first.added == 10


async def test_adding_to_a_missing_watch_list_writes_no_companies(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    from sqlalchemy import func, select

    from creditwatch.server.store.models import Company

    tenant = await new_tenant(sessions, "missing")
    store = WatchListStore(sessions)
    number = norwegian_numbers(1, start=97_000_000)[0]
    with pytest.raises(NotFound):
        await store.add_entries(
            tenant.tenant_id, uuid.uuid4(), EntryColumns.of([EntrySpec(CompanyId("NO", number))])
        )
    async with sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(Company).where(Company.register_number == number)
        )
    assert count == 0


async def test_deleting_a_watch_list_deletes_its_entries(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    from sqlalchemy import func, select

    from creditwatch.server.store.models import WatchListEntry

    tenant = await new_tenant(sessions, "delete")
    store = WatchListStore(sessions)
    created = await store.create(tenant.tenant_id, WatchListSpec("doomed"))
    list_id = uuid.UUID(created.id)
    specs = [EntrySpec(CompanyId("NO", n)) for n in norwegian_numbers(25)]
    await store.add_entries(tenant.tenant_id, list_id, EntryColumns.of(specs))
    assert await store.delete(tenant.tenant_id, list_id) == 25
    async with sessions() as session:
        left = await session.scalar(
            select(func.count())
            .select_from(WatchListEntry)
            .where(
                WatchListEntry.tenant_id == tenant.tenant_id,
                WatchListEntry.watch_list_id == list_id,
            )
        )
    assert left == 0
    with pytest.raises(NotFound):
        await store.add_entries(tenant.tenant_id, list_id, EntryColumns.of(specs))
