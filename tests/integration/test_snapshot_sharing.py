"""A day's portfolio snapshots shared by replicas on a real PostgreSQL: the
leader queues chunks of watch lists, every replica's workers claim them, a
replica that fails mid-chunk leaves it to another, and every entry is
snapshotted once, with its company's current score.

Each "replica" is a Snapshotter on an engine (connection pool) of its own.
Each test takes a day of its own, far from today, so that the day's rows are
its own (every watch list in the database is snapshotted, other tests' too)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.api.scoring_converters import statement
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.money import Money
from creditwatch.server.domain.watchlists import EntryColumns, EntrySpec, WatchListSpec
from creditwatch.server.intake import Intake
from creditwatch.server.jobs.snapshots import Snapshotter
from creditwatch.server.scoring.registry import ModelRegistry
from creditwatch.server.store import portfolio
from creditwatch.server.store.database import CHUNK_FAILURES
from creditwatch.server.store.watchlists import WatchListStore
from tests.chunk_metrics import failure_counts
from tests.conftest import new_tenant
from tests.e2e.test_scoring import distressed, healthy
from tests.identifiers import norwegian_numbers

# Entries per watch list: one empty, one larger than a chunk of CHUNK.
SIZES = (7, 3, 0, 12, 5, 9)
CHUNK = 8


async def _portfolios(
    sessions: async_sessionmaker[AsyncSession], registry: ModelRegistry, start: int
) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A tenant with watch lists of SIZES entries over 12 companies (so lists
    share companies): four scored healthy, four healthy then distressed, four
    never scored."""
    tenant = (await new_tenant(sessions, "snapshots")).tenant_id
    companies = [CompanyId("NO", n) for n in norwegian_numbers(12, start=start)]
    intake = Intake(sessions, registry)
    for company in companies[:4]:
        await intake.submit_statement(company, statement(healthy(), "s"), "test", tenant)
    for company in companies[4:8]:  # scored twice: the snapshot takes the later score
        await intake.submit_statement(company, statement(healthy(), "s"), "test", tenant)
        await intake.submit_statement(company, statement(distressed(), "s"), "test", tenant)
    store = WatchListStore(sessions)
    lists = []
    for i, size in enumerate(SIZES):
        watch_list = await store.create(tenant, WatchListSpec(f"book {i}"))
        members = [companies[(i + k) % len(companies)] for k in range(size)]
        if members:
            await store.add_entries(
                tenant,
                uuid.UUID(watch_list.id),
                EntryColumns.of(
                    [
                        EntrySpec(c, exposure=Money("NOK", Decimal(100 * (k + 1))))
                        for k, c in enumerate(members)
                    ]
                ),
            )
        lists.append(uuid.UUID(watch_list.id))
    return tenant, lists


async def _check_day(
    sessions: async_sessionmaker[AsyncSession], tenant: uuid.UUID, day: date
) -> tuple[int, int]:
    """Every entry of the tenant's lists has one snapshot row of `day` with its
    exposure and its company's current score, and every list a day marker
    with its entry count; returns (snapshot rows, day markers) of the day,
    every tenant's."""
    async with sessions() as session:
        mismatched = await session.scalar(
            text(
                """
                SELECT count(*) FROM watch_list_entries e
                LEFT JOIN portfolio_snapshots p
                  ON p.tenant_id = e.tenant_id AND p.watch_list_id = e.watch_list_id
                 AND p.country = e.country AND p.register_number = e.register_number
                 AND p.snapshot_date = :day
                LEFT JOIN LATERAL (
                    SELECT probability_of_default, risk_class FROM scores s
                    WHERE s.country = e.country AND s.register_number = e.register_number
                    ORDER BY id DESC LIMIT 1
                ) s ON true
                WHERE e.tenant_id = :t AND (
                    p.tenant_id IS NULL
                    OR p.exposure_amount IS DISTINCT FROM e.exposure_amount
                    OR p.probability_of_default IS DISTINCT FROM s.probability_of_default
                    OR p.risk_class IS DISTINCT FROM s.risk_class)
                """
            ),
            {"t": tenant, "day": day},
        )
        markers = await session.scalar(
            text(
                """
                SELECT count(*) FROM watch_lists w JOIN portfolio_snapshot_days d
                  ON d.tenant_id = w.tenant_id AND d.watch_list_id = w.id
                 AND d.snapshot_date = :day AND d.entry_count = w.entry_count
                WHERE w.tenant_id = :t
                """
            ),
            {"t": tenant, "day": day},
        )
        scored = await session.scalar(
            text(
                "SELECT count(*) FROM portfolio_snapshots WHERE tenant_id = :t "
                "AND snapshot_date = :day AND probability_of_default IS NOT NULL"
            ),
            {"t": tenant, "day": day},
        )
        rows = await session.scalar(
            text("SELECT count(*) FROM portfolio_snapshots WHERE snapshot_date = :day"),
            {"day": day},
        )
        days = await session.scalar(
            text("SELECT count(*) FROM portfolio_snapshot_days WHERE snapshot_date = :day"),
            {"day": day},
        )
        left = await session.scalar(text("SELECT count(*) FROM snapshot_chunks"))
    assert mismatched == 0
    assert markers == len(SIZES)
    assert 0 < scored < sum(SIZES)  # scored and never-scored companies both
    assert left == 0  # the leader closed the day
    return int(rows or 0), int(days or 0)


class _Gated(Snapshotter):
    """A replica whose chunks wait for `gate` before they are taken, and that
    can be told to lose its connection in each chunk after taking it (as a
    replica dying before commit would), or to fail every time the chunk
    holding the watch list `poison` (as bad data would)."""

    def __init__(self, *args: object, gate: asyncio.Event | None = None, **kwargs: object):
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.gate = gate
        self.fail = False
        self.poison: uuid.UUID | None = None
        self.poisoned = 0  # attempts at the poisoned chunk
        self.claimed = asyncio.Event()

    async def _take(self, session: AsyncSession, chunk: portfolio.SnapshotChunk) -> int:
        self.claimed.set()
        if self.gate is not None:
            await self.gate.wait()
        written = await super()._take(session, chunk)
        if self.fail:
            raise ConnectionResetError("replica lost before commit")
        if self.poison in chunk.watch_list_ids:
            self.poisoned += 1
            raise ValueError("a watch list whose data breaks the snapshot")
        return written


def test_watch_lists_are_grouped_by_entries_and_count() -> None:
    t, w = uuid.uuid4(), [uuid.uuid4() for _ in range(7)]
    lists = [(t, w[i], n) for i, n in enumerate((3, 4, 2, 20, 0, 5, 5))]
    sizes = [[n for _, _, n in c] for c in portfolio.group(lists, 8, 3)]
    # 3+4 fits, +2 would not; 20 alone; 0+5 fits, +5 would not; lists kept in order.
    assert sizes == [[3, 4], [2], [20], [0, 5], [5]]
    assert [x for c in portfolio.group(lists, 8, 3) for x in c] == lists
    assert [len(c) for c in portfolio.group([(t, w[0], 0)] * 7, 8, 3)] == [3, 3, 1]
    # A chunk holds one tenant's lists.
    u = uuid.uuid4()
    mixed = [(t, w[0], 1), (t, w[1], 1), (u, w[2], 1), (u, w[3], 1)]
    assert portfolio.group(mixed, 8, 3) == [mixed[:2], mixed[2:]]
    assert portfolio.group([], 8, 3) == []


async def test_two_replicas_share_a_day_and_every_entry_is_snapshotted_once(
    sessions: async_sessionmaker[AsyncSession],
    other_replica: async_sessionmaker[AsyncSession],
    registry: ModelRegistry,
) -> None:
    tenant, _ = await _portfolios(sessions, registry, 90_300_000)
    day = date(2031, 3, 1)
    # The leader's chunks wait until the other replica has claimed one: both
    # must take part, whatever the timing.
    shared = asyncio.Event()
    leader = _Gated(sessions, workers=1, chunk_entries=CHUNK, replica="a", gate=shared)
    other = _Gated(other_replica, workers=2, chunk_entries=CHUNK, replica="b")
    run = asyncio.create_task(leader.run(day))
    helped = 0
    while not run.done():
        helped += (await other.share()).chunks
        if other.claimed.is_set():
            shared.set()
        await asyncio.sleep(0.01)
    result = await run

    assert result.replicas == 2 and helped >= 1 and result.chunks > helped
    rows, days = await _check_day(sessions, tenant, day)
    # The totals are both replicas' work, each row counted once.
    assert (result.written, result.lists) == (rows, days)
    assert result.written >= sum(SIZES)

    # Again for the same day: nothing is left to do.
    again = await Snapshotter(sessions).run(day)
    assert (again.written, again.lists, again.chunks) == (0, 0, 0)


async def test_a_chunk_whose_replica_fails_mid_way_is_taken_by_another(
    sessions: async_sessionmaker[AsyncSession],
    other_replica: async_sessionmaker[AsyncSession],
    registry: ModelRegistry,
) -> None:
    tenant, _ = await _portfolios(sessions, registry, 90_310_000)
    day = date(2031, 3, 2)
    failed = asyncio.Event()
    leader = _Gated(sessions, workers=1, chunk_entries=CHUNK, replica="a", gate=failed)
    doomed = _Gated(other_replica, workers=1, chunk_entries=CHUNK, replica="b")
    doomed.fail = True
    run = asyncio.create_task(leader.run(day))
    with pytest.raises(ConnectionResetError, match="replica lost"):
        while not doomed.claimed.is_set():
            await doomed.share()
            await asyncio.sleep(0.01)
    failed.set()  # the leader goes on only once the other replica's chunk rolled back
    result = await run

    assert result.replicas == 1  # every chunk was taken by the leader in the end
    rows, days = await _check_day(sessions, tenant, day)
    assert (result.written, result.lists) == (rows, days)


async def test_a_plan_whose_leader_died_is_finished_not_planned_again(
    sessions: async_sessionmaker[AsyncSession], registry: ModelRegistry
) -> None:
    tenant, lists = await _portfolios(sessions, registry, 90_320_000)
    day = date(2031, 3, 3)
    # A leader queued the day and died before any chunk was taken; a done
    # chunk of an earlier day was never closed either, and a chunk of another
    # earlier day was never done (taken now, it would store today's scores
    # under that day).
    async with sessions.begin() as session:
        planned = await portfolio.plan(session, day, CHUNK)
        await session.execute(
            text(
                "INSERT INTO snapshot_chunks (snapshot_date, tenant_id, watch_list_ids, "
                "entries, done_time, done_by, written) "
                "VALUES ('2031-02-01', :t, '{}', 0, now(), 'gone', 0)"
            ),
            {"t": tenant},
        )
        await session.execute(
            text(
                "INSERT INTO snapshot_chunks (snapshot_date, tenant_id, watch_list_ids, entries) "
                "VALUES ('2031-02-02', :t, :lists, 36)"
            ),
            {"t": tenant, "lists": lists},
        )
    assert planned >= 5  # SIZES in chunks of CHUNK: at least [7], [3, 0], [12], [5], [9]
    async with sessions.begin() as session:
        assert await portfolio.plan(session, day, CHUNK) == 0  # a plan stands

    result = await Snapshotter(sessions, chunk_entries=CHUNK).run(day)

    assert result.chunks == planned  # the standing plan, not a new one
    rows, days = await _check_day(sessions, tenant, day)  # (every chunk gone)
    assert (result.written, result.lists) == (rows, days)
    async with sessions() as session:
        stale = await session.scalar(
            text("SELECT count(*) FROM portfolio_snapshots WHERE snapshot_date = '2031-02-02'")
        )
    assert stale == 0  # the earlier day's chunk was dropped, not taken


async def test_a_chunk_that_keeps_failing_is_given_up_and_the_day_ends(
    sessions: async_sessionmaker[AsyncSession], registry: ModelRegistry
) -> None:
    tenant, lists = await _portfolios(sessions, registry, 90_330_000)
    day = date(2031, 3, 4)
    leader = _Gated(sessions, workers=2, chunk_entries=CHUNK)
    leader.poison = lists[3]  # the list of 12 entries: a chunk of its own
    failures = failure_counts("snapshot")
    result = await leader.run(day)

    assert result.given_up == 1  # tried CHUNK_FAILURES times, then left
    assert leader.poisoned == CHUNK_FAILURES
    after = failure_counts("snapshot")
    assert (after[0] - failures[0], after[1] - failures[1]) == (CHUNK_FAILURES - 1, 1)
    async with sessions() as session:
        marked = set(
            (
                await session.execute(
                    text(
                        "SELECT watch_list_id FROM portfolio_snapshot_days "
                        "WHERE tenant_id = :t AND snapshot_date = :day"
                    ),
                    {"t": tenant, "day": day},
                )
            ).scalars()
        )
        poisoned_rows = await session.scalar(
            text(
                "SELECT count(*) FROM portfolio_snapshots WHERE watch_list_id = :w "
                "AND snapshot_date = :day"
            ),
            {"w": lists[3], "day": day},
        )
        left = await session.scalar(text("SELECT count(*) FROM snapshot_chunks"))
    assert marked == set(lists) - {lists[3]}  # every other list has its day
    assert poisoned_rows == 0  # each attempt rolled back
    assert left == 0  # the day closed, the chunk given up went with it


async def test_a_day_taken_after_it_ended_records_the_scores_it_ended_with(
    sessions: async_sessionmaker[AsyncSession], registry: ModelRegistry
) -> None:
    tenant, _ = await _portfolios(sessions, registry, 90_340_000)
    companies = [CompanyId("NO", n) for n in norwegian_numbers(12, start=90_340_000)]
    day = date(2031, 3, 5)
    # Companies 4-7 were scored healthy then distressed: make the distressed
    # score the next day's, and one company's only score too.
    async with sessions.begin() as session:
        midnight = datetime(2031, 3, 6, tzinfo=UTC)
        for company, when in [
            *((c, midnight) for c in companies[4:8]),
            (companies[0], midnight + timedelta(hours=8)),
        ]:
            await session.execute(
                text(
                    "UPDATE scores SET score_time = :when WHERE id = ("
                    "SELECT max(id) FROM scores WHERE country = 'NO' AND register_number = :n)"
                ),
                {"when": when, "n": company.register_number},
            )
        latest = {
            r.register_number: (r.probability_of_default, r.risk_class)
            for r in await session.execute(
                text(
                    "SELECT DISTINCT ON (register_number) register_number,"
                    " probability_of_default, risk_class FROM scores"
                    " WHERE register_number = ANY(:n) AND score_time < '2031-03-06'"
                    " ORDER BY register_number, id DESC"
                ),
                {"n": [c.register_number for c in companies]},
            )
        }
    assert len(latest) == 7  # companies 1-7; company 0's only score is the next day's
    result = await Snapshotter(sessions, chunk_entries=CHUNK).run(day)
    assert result.written >= sum(SIZES)
    async with sessions() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT register_number, probability_of_default, risk_class"
                    " FROM portfolio_snapshots WHERE tenant_id = :t AND snapshot_date = :day"
                ),
                {"t": tenant, "day": day},
            )
        ).all()
        newest = await session.scalar(
            text(
                "SELECT probability_of_default FROM scores WHERE register_number = :n"
                " ORDER BY id DESC LIMIT 1"
            ),
            {"n": companies[4].register_number},
        )
    assert newest != latest[companies[4].register_number][0]  # the next day's differs
    assert len(rows) == sum(SIZES)
    for row in rows:
        expected = latest.get(row.register_number, (None, None))
        assert (row.probability_of_default, row.risk_class) == expected, row
