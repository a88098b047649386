"""GetPortfolioSummary's figures as PostgreSQL adds them up
(`store.portfolio.summary_totals` + `domain.portfolio.summary_of`) equal the
pure Python reference (`domain.portfolio.summarize`) over the same entries,
on a random book with every kind of entry: scored and unscored, exposures
with nine decimals and none, in the reporting currency and not; and so do
the day-by-day figures of its snapshots (GetRiskTrend, `since_date`) and
the class migration between two of them (GetMigrationMatrix); and the
score x exposure segments and their entries, page by page (ListSegments,
ListSegmentEntries)."""

from __future__ import annotations

import math
import random
import uuid
from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.api.scoring_converters import statement
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.money import Money
from creditwatch.server.domain.portfolio import (
    Segment,
    Summary,
    cents,
    migration,
    segment_of,
    segments,
    segments_of,
    summarize,
    summary_of,
    upper_median,
)
from creditwatch.server.domain.watchlists import EntryColumns, EntrySpec, WatchListSpec
from creditwatch.server.intake import Intake
from creditwatch.server.jobs.snapshots import Snapshotter
from creditwatch.server.scoring.registry import ModelRegistry
from creditwatch.server.store import portfolio
from creditwatch.server.store.watchlists import WatchListStore
from tests.conftest import new_tenant
from tests.e2e.test_scoring import healthy
from tests.identifiers import norwegian_numbers


def _exposure(rng: random.Random) -> Money | None:
    roll = rng.random()
    if roll < 0.15:
        return None
    currency = "EUR" if roll < 0.35 else "NOK"
    digits = rng.choice((0, 2, 9))
    amount = Decimal(rng.randrange(0, 10**13)) / Decimal(10**digits)
    return Money(currency, amount)


async def _shuffle_scores(
    sessions: async_sessionmaker[AsyncSession], companies: list[CompanyId], rng: random.Random
) -> None:
    """Give the companies' latest scores random PDs and classes."""
    async with sessions.begin() as session:
        for company in companies:
            pd = rng.choice((rng.random(), rng.random() ** 6, 1e-7 * rng.random(), 0.5))
            await session.execute(
                text(
                    "UPDATE scores SET probability_of_default = :pd, risk_class = :c "
                    "WHERE id = (SELECT max(id) FROM scores WHERE country = 'NO' "
                    "AND register_number = :n)"
                ),
                {"pd": pd, "c": rng.randint(1, 4), "n": company.register_number},
            )


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
    await _shuffle_scores(sessions, companies[:70], rng)
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


async def test_sql_day_totals_equal_the_python_reference(
    sessions: async_sessionmaker[AsyncSession], registry: ModelRegistry
) -> None:
    tenant, watch_list = await _book(sessions, registry, 3)
    first, second = date(2030, 1, 1), date(2030, 1, 2)
    await Snapshotter(sessions).run(first)
    companies = [CompanyId("NO", n) for n in norwegian_numbers(70, start=90_400_000)]
    await _shuffle_scores(sessions, companies, random.Random(4))  # the next day differs
    # ... and has entries the first had not, and lacks some it had.
    store = WatchListStore(sessions)
    await store.remove_entries(tenant, watch_list, companies[:5] + companies[-5:])
    newcomers = [CompanyId("NO", n) for n in norwegian_numbers(4, start=90_410_000)]
    await store.add_entries(
        tenant,
        watch_list,
        EntryColumns.of(
            [
                EntrySpec(c, exposure=Money(cur, Decimal("1234.5")))
                for c, cur in zip(newcomers, ("NOK", "EUR", "NOK", "NOK"), strict=True)
            ]
        ),
    )
    await Snapshotter(sessions).run(second)
    async with sessions() as session:
        snapshots = await portfolio.snapshots(session, tenant, watch_list, first, second)
        for currency, lgd in (("NOK", 0.45), ("EUR", 0.37)):
            days = await portfolio.day_totals(
                session, tenant, watch_list, first, second, currency, lgd
            )
            assert sorted(days) == [first, second]
            for day in days:
                _same(summary_of(days[day], []), summarize(snapshots[day], currency, lgd, 0))
            cells, excluded = await portfolio.migration_cells(
                session, tenant, watch_list, first, second, currency
            )
            assert (cells, excluded) == migration(snapshots[first], snapshots[second], currency)
            assert len(cells) > 4 and excluded > 0
        # A day without a snapshot is not there.
        assert (
            await portfolio.day_totals(
                session, tenant, watch_list, date(2029, 12, 31), date(2029, 12, 31), "NOK", 0.45
            )
            == {}
        )
    first_pd = summarize(snapshots[first], "NOK", 0.45, 0).exposure_weighted_pd
    assert first_pd != summarize(snapshots[second], "NOK", 0.45, 0).exposure_weighted_pd


@pytest.mark.parametrize(
    ("currency", "lgd", "pd_split", "exposure_split"),
    [
        ("NOK", 0.45, 0.2, None),  # the exposure split: the median
        ("EUR", 0.6, 1e-7, None),
        ("NOK", 0.45, 0.5, Decimal("5000000000")),  # a PD on the split counts as high
    ],
)
async def test_sql_segments_equal_the_python_reference(
    sessions: async_sessionmaker[AsyncSession],
    registry: ModelRegistry,
    currency: str,
    lgd: float,
    pd_split: float,
    exposure_split: Decimal | None,
) -> None:
    tenant, watch_list = await _book(sessions, registry, 5)
    async with sessions() as session:
        positions = await portfolio.positions(session, tenant, watch_list)
        split, totals = await portfolio.segment_totals(
            session, tenant, watch_list, currency, lgd, pd_split, exposure_split
        )
        expected_split = exposure_split
        if expected_split is None:
            expected_split = upper_median(
                [p.amount for p in positions if p.scored and p.counted_in(currency)]
            )
        assert split == expected_split
        figures, unscored, excluded = segments_of(totals)
        rows, their_unscored, their_excluded = segments(
            positions, currency, lgd, pd_split, expected_split
        )
        assert (unscored, excluded) == (their_unscored, their_excluded)
        for mine, theirs in zip(figures, rows, strict=True):
            assert (mine.segment, mine.entry_count) == (theirs.segment, len(theirs.entries))
            assert cents(mine.exposure) == cents(theirs.exposure)
            assert cents(mine.expected_loss) == cents(theirs.expected_loss)
            if theirs.exposure_weighted_pd is None:
                assert mine.exposure_weighted_pd is None
            else:
                assert mine.exposure_weighted_pd is not None
                assert math.isclose(
                    mine.exposure_weighted_pd, theirs.exposure_weighted_pd, rel_tol=1e-12
                )
        assert sum(f.entry_count for f in figures) > 0

        # Each segment's entries, read in pages of 7, are the reference's in
        # its order: largest expected loss first, ties by register number,
        # then country (as the summary's top contributors).
        lgd_d = Decimal(repr(lgd))
        counted = [p for p in positions if p.counted_in(currency)]
        total = sum((p.expected_loss(lgd_d) for p in counted), Decimal(0))
        for segment in Segment:
            chosen = sorted(
                (
                    (p, p.expected_loss(lgd_d))
                    for p in counted
                    if p.scored and segment_of(p, pd_split, expected_split) == segment
                ),
                key=lambda pair: (
                    -pair[1],
                    pair[0].company.register_number,
                    pair[0].company.country,
                ),
            )

            async def page_of(
                after: portfolio.SegmentMark | None, offset: int = 0, segment: Segment = segment
            ) -> portfolio.SegmentPage:
                return await portfolio.segment_entries(
                    session,
                    tenant,
                    watch_list,
                    currency,
                    lgd,
                    pd_split,
                    exposure_split,
                    segment,
                    after,
                    7,
                    offset,
                )

            read: list[tuple[str, Decimal]] = []
            after: portfolio.SegmentMark | None = None
            while True:
                page = await page_of(after)
                assert page.exposure_split == expected_split
                assert cents(page.total_loss) == cents(total)
                assert page.count == len(chosen)
                read += [(p.company.register_number, cents(loss)) for p, loss in page.entries]
                assert page.more == (len(read) < len(chosen))
                if not page.more:
                    break
                last, loss = page.entries[-1]
                after = portfolio.SegmentMark(
                    loss, last.company.register_number, last.company.country
                )
            assert read == [(p.company.register_number, cents(loss)) for p, loss in chosen]
            # An earlier release's token: an offset.
            if len(chosen) > 7:
                skipped = await page_of(None, offset=7)
                assert [p.company.register_number for p, _ in skipped.entries] == [
                    number for number, _ in read[7:14]
                ]

    if exposure_split is None:
        # The median of an odd and of an even number of exposures: one fewer.
        scored = [p for p in positions if p.scored and p.counted_in(currency)]
        await WatchListStore(sessions).remove_entries(tenant, watch_list, [scored[0].company])
        async with sessions() as session:
            fewer = await portfolio.positions(session, tenant, watch_list)
            split, _ = await portfolio.segment_totals(
                session, tenant, watch_list, currency, lgd, pd_split, None
            )
        amounts = [p.amount for p in fewer if p.scored and p.counted_in(currency)]
        assert len(amounts) == len(scored) - 1
        assert split == upper_median(amounts)


async def test_segment_pages_neither_skip_nor_repeat_entries_as_the_list_changes(
    sessions: async_sessionmaker[AsyncSession], registry: ModelRegistry
) -> None:
    tenant, watch_list = await _book(sessions, registry, 6)
    lgd, pd_split, split = 0.45, 0.0, Decimal(0)  # every counted scored entry: one segment
    segment = Segment.HIGH_RISK_HIGH_EXPOSURE

    async def page(after: portfolio.SegmentMark | None) -> portfolio.SegmentPage:
        async with sessions() as session:
            return await portfolio.segment_entries(
                session, tenant, watch_list, "NOK", lgd, pd_split, split, segment, after, 7
            )

    first = await page(None)
    assert first.more and first.count > 16
    async with sessions() as session:
        ordered = await portfolio.segment_entries(
            session, tenant, watch_list, "NOK", lgd, pd_split, split, segment, None, 100
        )
    companies = [p.company for p, _ in ordered.entries]
    assert companies[:7] == [p.company for p, _ in first.entries]
    # Entries before the page's end leave the list, and one's loss grows past it.
    store = WatchListStore(sessions)
    await store.remove_entries(tenant, watch_list, [companies[0], companies[3]])
    mover = max(range(8, 15), key=lambda i: ordered.entries[i][0].pd or 0.0)
    async with sessions.begin() as session:
        await session.execute(
            text(
                "UPDATE watch_list_entries SET exposure_amount = 1e15, exposure_currency = 'NOK'"
                " WHERE tenant_id = :t AND watch_list_id = :w AND register_number = :n"
            ),
            {"t": tenant, "w": watch_list, "n": companies[mover].register_number},
        )
    moved = await page(None)
    assert moved.entries[0][0].company == companies[mover]  # now the largest loss
    last, loss = first.entries[-1]
    second = await page(portfolio.SegmentMark(loss, last.company.register_number, "NO"))
    # The entries after the first page's last, as they were but for the one
    # whose loss moved ahead of it (a reader who wants it starts again).
    rest = [c for i, c in enumerate(companies) if i >= 7 and i != mover]
    assert [p.company for p, _ in second.entries] == rest[:7]
