"""GetPortfolioSummary's figures as PostgreSQL adds them up
(`store.portfolio.summary_totals` + `domain.portfolio.summary_of`) equal the
pure Python reference (`domain.portfolio.summarize`) over the same entries,
on a random book with every kind of entry: scored and unscored, exposures
with nine decimals and none, in the reporting currency and not."""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.api.scoring_converters import statement
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.money import Money
from creditwatch.server.domain.overrides import OverridePolicy
from creditwatch.server.domain.portfolio import Summary, cents, summarize, summary_of
from creditwatch.server.domain.watchlists import EntryColumns, EntrySpec, WatchListSpec
from creditwatch.server.intake import Intake
from creditwatch.server.scoring.registry import ModelRegistry
from creditwatch.server.store import portfolio
from creditwatch.server.store.watchlists import WatchListStore
from tests.conftest import new_tenant
from tests.e2e.test_scoring import healthy
from tests.identifiers import norwegian_numbers


@pytest.fixture(scope="module")
async def registry() -> AsyncIterator[ModelRegistry]:
    with ThreadPoolExecutor(1) as executor:
        yield ModelRegistry.load(executor, OverridePolicy())


def _exposure(rng: random.Random) -> Money | None:
    roll = rng.random()
    if roll < 0.15:
        return None
    currency = "EUR" if roll < 0.35 else "NOK"
    digits = rng.choice((0, 2, 9))
    amount = Decimal(rng.randrange(0, 10**13)) / Decimal(10**digits)
    return Money(currency, amount)


async def _book(
    sessions: async_sessionmaker[AsyncSession], registry: ModelRegistry, seed: int
) -> tuple[uuid.UUID, uuid.UUID]:
    """A watch list over 90 companies: 70 scored (PDs and classes drawn at
    random, some scored twice), 20 never scored; and another tenant's list of
    the same companies, which must not count."""
    rng = random.Random(seed)
    companies = [CompanyId("NO", n) for n in norwegian_numbers(90, start=90_400_000)]
    tenant = (await new_tenant(sessions, "book")).tenant_id
    intake = Intake(sessions, registry)
    for company in companies[:70]:
        await intake.submit_statement(company, statement(healthy(), "s"), "test", tenant)
    for company in companies[:10]:  # a second, later score: the one that counts
        await intake.submit_statement(company, statement(healthy(), "t"), "test", tenant)
    async with sessions.begin() as session:
        for company in companies[:70]:
            pd = rng.choice((rng.random(), rng.random() ** 6, 1e-7 * rng.random(), 0.5))
            await session.execute(
                text(
                    "UPDATE scores SET probability_of_default = :pd, risk_class = :c "
                    "WHERE id = (SELECT max(id) FROM scores WHERE country = 'NO' "
                    "AND register_number = :n)"
                ),
                {"pd": pd, "c": rng.randint(1, 4), "n": company.register_number},
            )
    store = WatchListStore(sessions)
    lists = []
    for owner in (tenant, (await new_tenant(sessions, "other")).tenant_id):
        watch_list = await store.create(owner, WatchListSpec(f"book {seed}"))
        await store.add_entries(
            owner,
            uuid.UUID(watch_list.id),
            EntryColumns.of([EntrySpec(c, exposure=_exposure(rng)) for c in companies]),
        )
        lists.append(uuid.UUID(watch_list.id))
    return tenant, lists[0]


def _same(sql: Summary, reference: Summary) -> None:
    assert (sql.entry_count, sql.scored_entry_count, sql.excluded_entry_count) == (
        reference.entry_count,
        reference.scored_entry_count,
        reference.excluded_entry_count,
    )
    assert cents(sql.total_exposure) == cents(reference.total_exposure)
    assert cents(sql.expected_loss) == cents(reference.expected_loss)
    for mine, theirs in zip(sql.classes, reference.classes, strict=True):
        assert (mine.risk_class, mine.entry_count) == (theirs.risk_class, theirs.entry_count)
        assert cents(mine.exposure) == cents(theirs.exposure)
        assert cents(mine.expected_loss) == cents(theirs.expected_loss)
        assert math.isclose(mine.exposure_share, theirs.exposure_share, rel_tol=1e-12)
    assert [(p.company, p.legal_name, p.pd, p.risk_class) for p, _, _ in sql.top] == [
        (p.company, p.legal_name, p.pd, p.risk_class) for p, _, _ in reference.top
    ]
    for (_, loss, share), (_, their_loss, their_share) in zip(sql.top, reference.top, strict=True):
        assert cents(loss) == cents(their_loss)
        assert math.isclose(share, their_share, rel_tol=1e-12)
    if reference.exposure_weighted_pd is None:
        assert sql.exposure_weighted_pd is None
    else:
        assert sql.exposure_weighted_pd is not None
        assert math.isclose(sql.exposure_weighted_pd, reference.exposure_weighted_pd, rel_tol=1e-12)


@pytest.mark.parametrize("seed", [1, 2])
async def test_sql_summary_equals_the_python_reference(
    sessions: async_sessionmaker[AsyncSession], registry: ModelRegistry, seed: int
) -> None:
    tenant, watch_list = await _book(sessions, registry, seed)
    async with sessions() as session:
        positions = await portfolio.positions(session, tenant, watch_list)
        for currency, lgd, top_n in (("NOK", 0.45, 10), ("EUR", 0.37, 100), ("SEK", 1.0, 5)):
            totals, top = await portfolio.summary_totals(
                session, tenant, watch_list, currency, lgd, top_n
            )
            reference = summarize(positions, currency, lgd, top_n)
            _same(summary_of(totals, top), reference)
    # The book has what the comparison is about.
    nok = summarize(positions, "NOK", 0.45, 100)
    assert nok.excluded_entry_count > 0 and nok.entry_count > nok.scored_entry_count
    assert len(nok.top) > 10 and nok.exposure_weighted_pd is not None
