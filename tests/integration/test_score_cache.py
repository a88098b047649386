"""ScoreCache against a real PostgreSQL: LISTEN/NOTIFY invalidation and bypass when deaf."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.api.scoring_converters import statement
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.overrides import OverridePolicy
from creditwatch.server.domain.scores import RiskClass, StoredScore
from creditwatch.server.intake import Intake
from creditwatch.server.scoring.registry import ModelRegistry
from creditwatch.server.store import database, rescoring, score_cache
from creditwatch.server.store.score_cache import ScoreCache, notices
from creditwatch.server.store.scores import ScoreStore
from tests.conftest import new_tenant
from tests.e2e.test_scoring import healthy
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio

BUILT_IN = OverridePolicy().tag


async def _until(condition: object, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


async def test_a_score_write_anywhere_evicts_the_cached_entry(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    company = CompanyId("NO", norwegian_numbers(1, start=97_500_000)[0])
    score = StoredScore(0.01, RiskClass.B, RiskClass.B, (), "m", None, datetime.now(UTC))
    cache = ScoreCache(database.async_url(database_url))
    assert cache.get(company) is None and not cache.live  # deaf: never serves
    cache.put(company, score, cache.generation)
    assert cache.get(company) is None

    cache.start()
    try:
        await _until(lambda: cache.live)
        cache.put(company, score, cache.generation)
        assert cache.get(company) == score

        stale_generation = cache.generation
        await ScoreStore(sessions).record(company, score, BUILT_IN)  # NOTIFY at commit
        await _until(lambda: cache.get(company) is None)
        cache.put(company, score, stale_generation)  # a look-up that raced the write
        assert cache.get(company) is None
    finally:
        await cache.stop()
    assert not cache.live


async def test_notices_name_every_company_in_payloads_postgres_accepts() -> None:
    companies = [CompanyId("NO", n) for n in norwegian_numbers(2_000, start=97_510_000)]
    payloads = notices([c.key for c in companies])
    assert len(payloads) > 1
    assert all(len(p.encode()) < 8_000 for p in payloads)
    assert [k for p in payloads for k in p.split(",")] == [c.key for c in companies]
    assert notices([]) == []


async def test_a_bulk_write_evicts_every_company_it_names(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    companies = [CompanyId("NO", n) for n in norwegian_numbers(1_500, start=97_520_000)]
    kept = CompanyId("NO", norwegian_numbers(1, start=97_540_000)[0])
    score = StoredScore(0.01, RiskClass.B, RiskClass.B, (), "m", None, datetime.now(UTC))
    cache = ScoreCache(database.async_url(database_url))
    cache.start()
    try:
        await _until(lambda: cache.live)
        for company in [*companies, kept]:
            cache.put(company, score, cache.generation)
        async with sessions.begin() as session:
            await rescoring.ensure_and_lock(session, companies)
            await rescoring.add_scores(session, [(c, score) for c in companies], BUILT_IN)
        await _until(lambda: all(cache.get(c) is None for c in companies))
        assert cache.get(kept) == score  # not named, not evicted
    finally:
        await cache.stop()


async def test_a_notice_evicts_the_keys_it_names_and_star_or_garbage_empties_the_cache(
    database_url: str,
) -> None:
    cache = ScoreCache(database.async_url(database_url))
    score = StoredScore(0.01, RiskClass.B, RiskClass.B, (), "m", None, datetime.now(UTC))
    companies = [
        CompanyId("NO", "923609016"),
        CompanyId("SE", "556677-8899"),
        CompanyId("FI", "1234567-1"),
        CompanyId("DK", "12345678"),
    ]

    def fill() -> None:
        cache._entries.clear()
        cache._entries.update((c, score) for c in companies)

    fill()
    cache._invalidate("SE-556677-8899,FI-1234567-1")  # keys that hold a '-' themselves
    assert list(cache._entries) == [companies[0], companies[3]]
    for flush in ("*", "garbage"):
        fill()
        cache._invalidate(flush)
        assert not cache._entries


async def test_a_bulk_write_past_the_flush_size_empties_every_cache(
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(score_cache, "CACHE_FLUSH_FROM", 3)
    companies = [CompanyId("NO", n) for n in norwegian_numbers(3, start=97_550_000)]
    elsewhere = CompanyId("NO", norwegian_numbers(1, start=97_560_000)[0])
    score = StoredScore(0.01, RiskClass.B, RiskClass.B, (), "m", None, datetime.now(UTC))
    cache = ScoreCache(database.async_url(database_url))
    cache.start()
    try:
        await _until(lambda: cache.live)
        cache.put(elsewhere, score, cache.generation)
        async with sessions.begin() as session:
            await rescoring.ensure_and_lock(session, companies)
            await rescoring.add_scores(session, [(c, score) for c in companies], BUILT_IN)
        await _until(lambda: cache.get(elsewhere) is None)  # '*': everything goes
    finally:
        await cache.stop()


async def test_an_intake_forgets_its_companies_in_its_own_cache_without_waiting_for_notify(
    database_url: str, sessions: async_sessionmaker[AsyncSession], registry: ModelRegistry
) -> None:
    """A caller that writes a fact and then reads the score back from the same
    replica gets the new score, however late the NOTIFY is."""
    company = CompanyId("NO", norwegian_numbers(1, start=91_600_000)[0])
    tenant = (await new_tenant(sessions, "cache reader")).tenant_id
    cache = ScoreCache(database.async_url(database_url))
    cache.start()
    try:
        await _until(lambda: cache.live)
        listener = cache._listener
        assert listener._connection is not None
        # The NOTIFY never arrives here: only the intake itself can evict.
        await listener._connection.remove_listener(score_cache.CHANNEL, listener._on_notify)
        intake = Intake(sessions, registry, cache)
        await intake.submit_statement(company, statement(healthy(), "s"), "test", tenant)
        first, _ = await intake.score_company(company)
        assert cache.get(company) is first  # cached

        _, effect = await intake.submit_statement(
            company, statement(healthy(net_profit=-3_000_000), "s"), "test", tenant
        )
        assert effect.score is not None and effect.score != first
        read, computed = await intake.score_company(company)
        assert not computed and read == effect.score
    finally:
        await cache.stop()
