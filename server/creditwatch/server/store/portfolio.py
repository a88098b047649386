"""Watch lists as portfolios: current positions, and daily snapshots (taken
in chunks of watch lists that any replica can claim: `plan`, `claim`,
`take_chunk`, `close_day`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.portfolio import (
    ClassTotals,
    MigrationCell,
    Position,
    Segment,
    SegmentTotals,
    sides,
)
from creditwatch.server.store.database import CHUNK_FAILURES, driver

_CURRENT = """
SELECT e.country, e.register_number, e.external_reference, e.exposure_currency,
       e.exposure_amount, coalesce(c.name, '') AS name,
       s.probability_of_default, s.risk_class
FROM watch_list_entries e
LEFT JOIN companies c ON c.country = e.country AND c.register_number = e.register_number
LEFT JOIN LATERAL (
    SELECT probability_of_default, risk_class FROM scores
    WHERE scores.country = e.country AND scores.register_number = e.register_number
    ORDER BY id DESC LIMIT 1
) s ON true
WHERE e.tenant_id = $1 AND e.watch_list_id = $2
"""

_SNAPSHOT = """
SELECT p.snapshot_date, p.country, p.register_number, '' AS external_reference,
       p.exposure_currency, p.exposure_amount, '' AS name, p.probability_of_default,
       p.risk_class
FROM portfolio_snapshots p
WHERE p.tenant_id = $1 AND p.watch_list_id = $2 AND p.snapshot_date BETWEEN $3 AND $4
"""

# One chunk's watch lists ($2 the tenant, $3 its lists): each entry with its
# company's latest score as the chunk is taken (the day's snapshots start at
# 00:00 UTC), but never one made after the day ($1, UTC) ended, so a chunk
# taken after midnight (a day planned late, a chunk retried) does not record
# the next day's scores under it; and the lists' day markers. Both data-modifying
# parts run to completion whatever the outer query reads. One tenant per
# chunk, so that under Citus a chunk runs on the tenant's shard.
_TAKE = """
WITH taken AS (
    INSERT INTO portfolio_snapshots (tenant_id, watch_list_id, snapshot_date, country,
        register_number, exposure_currency, exposure_amount, probability_of_default, risk_class)
    SELECT e.tenant_id, e.watch_list_id, $1, e.country, e.register_number,
           e.exposure_currency, e.exposure_amount, s.probability_of_default, s.risk_class
    FROM watch_list_entries e
    LEFT JOIN LATERAL (
        SELECT probability_of_default, risk_class FROM scores
        WHERE scores.country = e.country AND scores.register_number = e.register_number
          AND scores.score_time < ($1::date + 1)::timestamp AT TIME ZONE 'UTC'
        ORDER BY id DESC LIMIT 1
    ) s ON true
    WHERE e.tenant_id = $2 AND e.watch_list_id = ANY($3::uuid[])
    ON CONFLICT DO NOTHING
    RETURNING 1
),
marked AS (
    INSERT INTO portfolio_snapshot_days (tenant_id, watch_list_id, snapshot_date, entry_count)
    SELECT w.tenant_id, w.id, $1, w.entry_count FROM watch_lists w
    WHERE w.tenant_id = $2 AND w.id = ANY($3::uuid[])
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM taken) AS written, (SELECT count(*) FROM marked) AS lists
"""

# A chunk holds one tenant's watch lists until their entries reach this many
# (a larger list is a chunk of its own), or this many lists.
CHUNK_ENTRIES = 20_000
CHUNK_LISTS = 1_000


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    """A claimed chunk: the day, and watch lists of one tenant."""

    id: int
    day: date
    tenant_id: uuid.UUID
    watch_list_ids: list[uuid.UUID]


@dataclass(frozen=True, slots=True)
class DayTotals:
    """What a day's chunks did, every replica's part."""

    chunks: int
    lists: int
    written: int
    replicas: int
    given_up: int


def group(
    lists: Sequence[tuple[uuid.UUID, uuid.UUID, int]],
    max_entries: int = CHUNK_ENTRIES,
    max_lists: int = CHUNK_LISTS,
) -> list[list[tuple[uuid.UUID, uuid.UUID, int]]]:
    """(tenant, watch list, entries) in tenant order, cut into chunks of one
    tenant's lists, up to `max_entries` entries (a larger list alone) and
    `max_lists` lists."""
    chunks: list[list[tuple[uuid.UUID, uuid.UUID, int]]] = []
    current: list[tuple[uuid.UUID, uuid.UUID, int]] = []
    entries = 0
    for item in lists:
        if current and (
            item[0] != current[0][0] or entries + item[2] > max_entries or len(current) == max_lists
        ):
            chunks.append(current)
            current, entries = [], 0
        current.append(item)
        entries += item[2]
    if current:
        chunks.append(current)
    return chunks


async def plan(
    session: AsyncSession,
    day: date,
    max_entries: int = CHUNK_ENTRIES,
    max_lists: int = CHUNK_LISTS,
) -> int:
    """Queue the day's snapshots of every watch list that has none, in chunks
    (visible at commit); returns how many chunks. Nothing is queued while the
    day has chunks not done: a plan stands until its chunks are, even if the
    leader that made it is gone (a plan is one transaction: all or none)."""
    connection = await driver(session)
    if await connection.fetchval(
        "SELECT 1 FROM snapshot_chunks WHERE snapshot_date = $1 AND done_time IS NULL LIMIT 1",
        day,
    ):
        return 0
    rows = await connection.fetch(
        """
        SELECT w.tenant_id, w.id, w.entry_count FROM watch_lists w
        WHERE NOT EXISTS (
            SELECT 1 FROM portfolio_snapshot_days d
            WHERE d.tenant_id = w.tenant_id AND d.watch_list_id = w.id
              AND d.snapshot_date = $1
        )
        ORDER BY w.tenant_id, w.id
        """,
        day,
    )
    chunks = group([(r[0], r[1], int(r[2])) for r in rows], max_entries, max_lists)
    if chunks:
        await connection.executemany(
            """
            INSERT INTO snapshot_chunks (snapshot_date, tenant_id, watch_list_ids, entries)
            VALUES ($1, $2, $3, $4)
            """,
            [(day, c[0][0], [w for _, w, _ in c], sum(n for _, _, n in c)) for c in chunks],
        )
    return len(chunks)


async def drop_earlier_days(session: AsyncSession, day: date) -> int:
    """Delete the chunks not done of days before `day` (their leader gave up
    or died, or a chunk keeps failing): taken now, they would store today's
    scores under an earlier date, and a chunk that fails every time would
    hold up every day after it. Chunks a worker holds are left to it.
    Returns how many."""
    connection = await driver(session)
    dropped: int = await connection.fetchval(
        """
        WITH dropped AS (
            DELETE FROM snapshot_chunks WHERE id IN (
                SELECT id FROM snapshot_chunks
                WHERE done_time IS NULL AND snapshot_date < $1
                FOR UPDATE SKIP LOCKED
            )
            RETURNING 1
        )
        SELECT count(*) FROM dropped
        """,
        day,
    )
    return dropped


async def claim(session: AsyncSession) -> SnapshotChunk | None:
    """Lock the oldest chunk (of any day) no one has done or holds, until this
    transaction ends; None if there is none. The worker takes it with
    `take_chunk` in the same transaction; should that roll back (or its
    replica die), the chunk is free again."""
    connection = await driver(session)
    # A replica that hangs (or is cut off) holding a chunk frees it within a
    # minute of its last statement, so no leader waits on it for long.
    await connection.execute("SET LOCAL idle_in_transaction_session_timeout = '60s'")
    row = await connection.fetchrow(
        """
        SELECT id, snapshot_date, tenant_id, watch_list_ids FROM snapshot_chunks
        WHERE done_time IS NULL AND failures < $1 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED
        """,
        CHUNK_FAILURES,
    )
    if row is None:
        return None
    return SnapshotChunk(
        row["id"], row["snapshot_date"], row["tenant_id"], list(row["watch_list_ids"])
    )


async def take_chunk(session: AsyncSession, chunk: SnapshotChunk, done_by: str) -> int:
    """Snapshot a claimed chunk's watch lists (idempotent) and mark it done;
    returns the snapshot rows written."""
    connection = await driver(session)
    row = await connection.fetchrow(_TAKE, chunk.day, chunk.tenant_id, chunk.watch_list_ids)
    assert row is not None
    written = int(row["written"])
    await connection.execute(
        "UPDATE snapshot_chunks SET done_time = now(), done_by = $2, written = $3 WHERE id = $1",
        chunk.id,
        done_by,
        written,
    )
    return written


async def fail(session: AsyncSession, chunk_id: int) -> int:
    """Count a failed attempt at a chunk; returns its failures so far."""
    connection = await driver(session)
    failures: int = await connection.fetchval(
        "UPDATE snapshot_chunks SET failures = failures + 1 WHERE id = $1 RETURNING failures",
        chunk_id,
    )
    return failures


async def unfinished(session: AsyncSession, day: date) -> int:
    """How many of the day's chunks are not done yet (waiting or being
    taken), but for those given up."""
    connection = await driver(session)
    count: int = await connection.fetchval(
        "SELECT count(*) FROM snapshot_chunks "
        "WHERE snapshot_date = $1 AND done_time IS NULL AND failures < $2",
        day,
        CHUNK_FAILURES,
    )
    return count


async def close_day(session: AsyncSession, day: date) -> DayTotals:
    """Sum the day's done chunks, then delete them (with the day's chunks
    given up, and any done chunks of earlier days, whose leader did not live
    to close them)."""
    connection = await driver(session)
    row = await connection.fetchrow(
        """
        WITH gone AS (
            DELETE FROM snapshot_chunks
            WHERE (done_time IS NOT NULL AND snapshot_date <= $1)
               OR (snapshot_date = $1 AND failures >= $2)
            RETURNING *
        ),
        done AS (SELECT * FROM gone WHERE done_time IS NOT NULL AND snapshot_date = $1)
        SELECT count(*) AS chunks,
               coalesce(sum(cardinality(watch_list_ids)), 0) AS lists,
               coalesce(sum(written), 0) AS written,
               count(DISTINCT done_by) AS replicas,
               (SELECT count(*) FROM gone WHERE done_time IS NULL) AS given_up
        FROM done
        """,
        day,
        CHUNK_FAILURES,
    )
    assert row is not None
    return DayTotals(*(int(row[k]) for k in DayTotals.__slots__))


# A watch list's entries ($1 tenant, $2 list) with their companies' current
# scores, whether they count in the reporting currency $3, and the PD as its
# shortest decimal text (float8 -> text is the shortest round trip, as
# Python's repr) for exact numeric arithmetic.
_POSITIONS = """
p AS MATERIALIZED (
    SELECT e.country, e.register_number, e.external_reference, e.exposure_currency,
           e.exposure_amount, coalesce(e.exposure_amount, 0) AS amount,
           s.probability_of_default AS pd, s.risk_class,
           s.probability_of_default::text::numeric AS pd_n,
           (e.exposure_currency IS NULL OR e.exposure_currency = $3) AS counted
    FROM watch_list_entries e
    LEFT JOIN LATERAL (
        SELECT probability_of_default, risk_class FROM scores
        WHERE scores.country = e.country AND scores.register_number = e.register_number
        ORDER BY id DESC LIMIT 1
    ) s ON true
    WHERE e.tenant_id = $1 AND e.watch_list_id = $2
)"""

# The exposure split: $5 when given, else the upper median of the counted
# scored entries' exposures (domain.portfolio.upper_median), 0 when none.
_SPLIT = """
split AS (
    SELECT coalesce($5::numeric, (
        SELECT amount FROM p WHERE counted AND pd IS NOT NULL ORDER BY amount
        OFFSET (SELECT count(*) / 2 FROM p WHERE counted AND pd IS NOT NULL) LIMIT 1
    ), 0) AS x
)"""

# Segment sums: by counted, scored and the side of each split (PD split $4,
# LGD $6), beside the exposure split used.
_SEGMENTS = f"""
WITH {_POSITIONS}, {_SPLIT}
SELECT split.x AS exposure_split, g.*
FROM split LEFT JOIN LATERAL (
    SELECT p.counted, p.pd IS NOT NULL AS scored,
           coalesce(p.pd >= $4::float8, false) AS high_risk,
           p.amount >= split.x AS high_exposure,
           count(*) AS entries, sum(p.amount) AS exposure,
           coalesce(sum(p.pd_n * $6::numeric * p.amount), 0) AS loss,
           coalesce(sum(p.pd_n * p.amount), 0) AS pd_exposure
    FROM p GROUP BY 1, 2, 3, 4
) g ON true
"""

# One segment's entries (sides $7, $8), largest expected loss first, from
# offset $9, at most $10; with the split used, the expected loss of every
# counted entry and how many the segment holds.
_SEGMENT_ENTRIES = f"""
WITH {_POSITIONS}, {_SPLIT},
chosen AS (
    SELECT p.*, p.pd_n * $6::numeric * p.amount AS loss FROM p CROSS JOIN split
    WHERE p.counted AND p.pd IS NOT NULL
      AND (p.pd >= $4::float8) = $7 AND (p.amount >= split.x) = $8
)
SELECT split.x AS exposure_split,
       (SELECT coalesce(sum(pd_n * $6::numeric * amount), 0) FROM p WHERE counted) AS total_loss,
       (SELECT count(*) FROM chosen) AS chosen_count,
       t.country, t.register_number, t.external_reference, t.exposure_currency,
       t.exposure_amount, t.pd AS probability_of_default, t.risk_class, t.loss,
       coalesce(c.name, '') AS name
FROM split
LEFT JOIN LATERAL (
    SELECT * FROM chosen
    WHERE $11::numeric IS NULL OR loss < $11::numeric
       OR (loss = $11::numeric AND (register_number COLLATE "C", country::text)
           > ($12::text COLLATE "C", $13::text))
    ORDER BY loss DESC, register_number COLLATE "C", country
    OFFSET $9 LIMIT $10
) t ON true
LEFT JOIN companies c ON c.country = t.country AND c.register_number = t.register_number
ORDER BY t.loss DESC, t.register_number COLLATE "C", t.country
"""


async def segment_totals(
    session: AsyncSession,
    tenant: uuid.UUID,
    watch_list: uuid.UUID,
    currency: str,
    lgd: float,
    pd_split: float,
    exposure_split: Decimal | None,
) -> tuple[Decimal, list[SegmentTotals]]:
    """The exposure split (`exposure_split`, or the upper median of the
    counted scored exposures) and the watch list's sums on either side of
    both splits (`domain.portfolio.segments_of` makes the segments of them);
    added up by PostgreSQL."""
    connection = await driver(session)
    rows = await connection.fetch(
        _SEGMENTS, tenant, watch_list, currency, pd_split, exposure_split, Decimal(repr(lgd))
    )
    totals = [
        SegmentTotals(
            counted=r["counted"],
            scored=r["scored"],
            high_risk=r["high_risk"],
            high_exposure=r["high_exposure"],
            entries=r["entries"],
            exposure=r["exposure"],
            expected_loss=r["loss"],
            pd_exposure=r["pd_exposure"],
        )
        for r in rows
        if r["entries"] is not None
    ]
    return rows[0]["exposure_split"], totals


@dataclass(frozen=True, slots=True)
class SegmentPage:
    """A page of one segment's entries and what paging and shares need."""

    exposure_split: Decimal
    total_loss: Decimal
    """Expected loss of every counted entry, for each entry's share."""
    count: int
    """Entries in the segment."""
    entries: list[tuple[Position, Decimal]]
    """(entry, expected loss), largest first."""
    more: bool
    """Whether entries follow the page's last."""


@dataclass(frozen=True, slots=True)
class SegmentMark:
    """Where a page of a segment's entries ended: its last entry's expected
    loss and company, in the entries' order."""

    loss: Decimal
    register_number: str
    country: str


async def segment_entries(
    session: AsyncSession,
    tenant: uuid.UUID,
    watch_list: uuid.UUID,
    currency: str,
    lgd: float,
    pd_split: float,
    exposure_split: Decimal | None,
    segment: Segment,
    after: SegmentMark | None,
    limit: int,
    offset: int = 0,
) -> SegmentPage:
    """A segment's entries after `after` (then `offset` more skipped), at
    most `limit`, largest expected loss first (ties by register number, then
    country); added up and sorted by PostgreSQL. Keyed on the last entry
    shown, a page neither skips nor repeats entries because entries before it
    came or went, or changed their loss, since the page before."""
    high_risk, high_exposure = sides(segment)
    connection = await driver(session)
    rows = await connection.fetch(
        _SEGMENT_ENTRIES,
        tenant,
        watch_list,
        currency,
        pd_split,
        exposure_split,
        Decimal(repr(lgd)),
        high_risk,
        high_exposure,
        offset,
        limit + 1,
        None if after is None else after.loss,
        None if after is None else after.register_number,
        None if after is None else after.country,
    )
    first = rows[0]
    entries = [(_position(r), r["loss"]) for r in rows if r["register_number"] is not None]
    return SegmentPage(
        exposure_split=first["exposure_split"],
        total_loss=first["total_loss"],
        count=first["chosen_count"],
        entries=entries[:limit],
        more=len(entries) > limit,
    )


# A watch list's sums by risk class and by whether the entry counts in the
# reporting currency ($3), then its $5 largest expected losses (LGD $4), in
# one pass over the entries. The PD is taken as its shortest decimal text
# (float8 -> text is the shortest round trip, as Python's repr), and numeric
# arithmetic is exact: the figures of domain.portfolio.summarize.
_SUMMARY = f"""
WITH {_POSITIONS}
SELECT false AS top, CASE WHEN pd IS NULL THEN 0 ELSE coalesce(risk_class, 0) END AS klass,
       counted, count(*) AS entries, count(pd) AS scored, sum(amount) AS exposure,
       coalesce(sum(pd_n * $4::numeric * amount), 0) AS loss,
       coalesce(sum(pd_n * amount), 0) AS pd_exposure,
       coalesce(sum(amount) FILTER (WHERE pd IS NOT NULL), 0) AS scored_exposure,
       NULL AS country, NULL AS register_number, NULL AS external_reference,
       NULL AS exposure_currency, NULL::numeric AS exposure_amount, NULL AS name,
       NULL::float8 AS probability_of_default, NULL::smallint AS risk_class
FROM p GROUP BY 2, 3
UNION ALL
SELECT true, coalesce(t.risk_class, 0), true, 1, 1, t.amount, t.loss,
       NULL::numeric, NULL::numeric, t.country, t.register_number, t.external_reference,
       t.exposure_currency, t.exposure_amount, coalesce(c.name, ''), t.pd, t.risk_class
FROM (
    SELECT p.*, p.pd_n * $4::numeric * p.amount AS loss FROM p
    WHERE p.counted AND p.pd IS NOT NULL
    ORDER BY loss DESC, p.register_number COLLATE "C", p.country
    LIMIT $5
) t
LEFT JOIN companies c ON c.country = t.country AND c.register_number = t.register_number
"""


async def summary_totals(
    session: AsyncSession,
    tenant: uuid.UUID,
    watch_list: uuid.UUID,
    currency: str,
    lgd: float,
    top_n: int,
) -> tuple[list[ClassTotals], list[tuple[Position, Decimal]]]:
    """The watch list's sums by risk class (domain.portfolio.ClassTotals) and
    its `top_n` largest expected losses, largest first, added up by
    PostgreSQL (`domain.portfolio.summary_of` makes the summary of them)."""
    connection = await driver(session)
    rows = await connection.fetch(_SUMMARY, tenant, watch_list, currency, Decimal(repr(lgd)), top_n)
    totals = [_totals(r) for r in rows if not r["top"]]
    top = [(_position(r), r["loss"]) for r in rows if r["top"]]
    top.sort(key=lambda pair: (-pair[1], pair[0].company.register_number, pair[0].company.country))
    return totals, top


# The snapshots' sums by day, risk class and whether the entry counts in the
# reporting currency ($5), with LGD $6: the totals of _SUMMARY, of each day.
_DAY_TOTALS = """
SELECT snapshot_date,
       CASE WHEN probability_of_default IS NULL THEN 0 ELSE coalesce(risk_class, 0) END AS klass,
       (exposure_currency IS NULL OR exposure_currency = $5) AS counted,
       count(*) AS entries, count(probability_of_default) AS scored,
       sum(coalesce(exposure_amount, 0)) AS exposure,
       coalesce(sum(probability_of_default::text::numeric * $6::numeric
                    * coalesce(exposure_amount, 0)), 0) AS loss,
       coalesce(sum(probability_of_default::text::numeric * coalesce(exposure_amount, 0)), 0)
           AS pd_exposure,
       coalesce(sum(coalesce(exposure_amount, 0))
                FILTER (WHERE probability_of_default IS NOT NULL), 0) AS scored_exposure
FROM portfolio_snapshots
WHERE tenant_id = $1 AND watch_list_id = $2 AND snapshot_date BETWEEN $3 AND $4
GROUP BY 1, 2, 3
"""


def _totals(row: Any) -> ClassTotals:
    return ClassTotals(
        risk_class=row["klass"],
        counted=row["counted"],
        entries=row["entries"],
        scored=row["scored"],
        exposure=row["exposure"],
        expected_loss=row["loss"],
        pd_exposure=row["pd_exposure"],
        scored_exposure=row["scored_exposure"],
    )


async def day_totals(
    session: AsyncSession,
    tenant: uuid.UUID,
    watch_list: uuid.UUID,
    first: date,
    last: date,
    currency: str,
    lgd: float,
) -> dict[date, list[ClassTotals]]:
    """The sums of every day in [first, last] that has a snapshot (an empty
    list for a snapshot of an empty watch list), added up by PostgreSQL:
    `domain.portfolio.summary_of` makes a day's summary of them."""
    days = await snapshot_days(session, tenant, watch_list, first, last)
    out: dict[date, list[ClassTotals]] = {day: [] for day in days}
    connection = await driver(session)
    rows = await connection.fetch(
        _DAY_TOTALS, tenant, watch_list, first, last, currency, Decimal(repr(lgd))
    )
    for row in rows:
        out.setdefault(row["snapshot_date"], []).append(_totals(row))
    return out


# Class migration of a watch list between the snapshots of days $3 and $4,
# by whether an entry is left out (another currency than $5 on either day):
# domain.portfolio.migration's figures.
_MIGRATION = """
WITH a AS (
    SELECT country, register_number, exposure_currency, exposure_amount,
           probability_of_default, risk_class
    FROM portfolio_snapshots
    WHERE tenant_id = $1 AND watch_list_id = $2 AND snapshot_date = $3
), b AS (
    SELECT country, register_number, exposure_currency, exposure_amount,
           probability_of_default, risk_class
    FROM portfolio_snapshots
    WHERE tenant_id = $1 AND watch_list_id = $2 AND snapshot_date = $4
)
SELECT coalesce(a.exposure_currency <> $5, false)
           OR coalesce(b.exposure_currency <> $5, false) AS excluded,
       CASE WHEN a.probability_of_default IS NULL THEN 0 ELSE coalesce(a.risk_class, 0) END
           AS from_class,
       CASE WHEN b.probability_of_default IS NULL THEN 0 ELSE coalesce(b.risk_class, 0) END
           AS to_class,
       count(*) AS entries,
       sum(CASE WHEN b.register_number IS NOT NULL THEN coalesce(b.exposure_amount, 0)
                ELSE coalesce(a.exposure_amount, 0) END) AS exposure
FROM a FULL JOIN b ON a.country = b.country AND a.register_number = b.register_number
GROUP BY 1, 2, 3
"""


async def migration_cells(
    session: AsyncSession,
    tenant: uuid.UUID,
    watch_list: uuid.UUID,
    first: date,
    last: date,
    currency: str,
) -> tuple[list[MigrationCell], int]:
    """The class migration between the snapshots of `first` and `last` (both
    must exist), in (from, to) order, and how many entries were left out for
    another currency; added up by PostgreSQL."""
    connection = await driver(session)
    rows = await connection.fetch(_MIGRATION, tenant, watch_list, first, last, currency)
    cells = sorted(
        (
            MigrationCell(r["from_class"], r["to_class"], r["entries"], r["exposure"])
            for r in rows
            if not r["excluded"]
        ),
        key=lambda cell: (cell.from_class, cell.to_class),
    )
    return cells, sum(r["entries"] for r in rows if r["excluded"])


def _position(row: Any) -> Position:
    return Position(
        company=CompanyId(row["country"], row["register_number"]),
        legal_name=row["name"],
        external_reference=row["external_reference"],
        exposure_currency=row["exposure_currency"],
        exposure=row["exposure_amount"],
        pd=row["probability_of_default"],
        risk_class=row["risk_class"],
    )


async def positions(
    session: AsyncSession, tenant: uuid.UUID, watch_list: uuid.UUID
) -> list[Position]:
    """Every entry of the watch list with its company's current score."""
    connection = await driver(session)
    return [_position(r) for r in await connection.fetch(_CURRENT, tenant, watch_list)]


async def snapshot_days(
    session: AsyncSession, tenant: uuid.UUID, watch_list: uuid.UUID, first: date, last: date
) -> set[date]:
    """Days in [first, last] that have a snapshot of the watch list."""
    connection = await driver(session)
    rows = await connection.fetch(
        """
        SELECT snapshot_date FROM portfolio_snapshot_days
        WHERE tenant_id = $1 AND watch_list_id = $2 AND snapshot_date BETWEEN $3 AND $4
        """,
        tenant,
        watch_list,
        first,
        last,
    )
    return {r["snapshot_date"] for r in rows}


async def snapshots(
    session: AsyncSession, tenant: uuid.UUID, watch_list: uuid.UUID, first: date, last: date
) -> dict[date, list[Position]]:
    """The snapshot positions of every day in [first, last] that has one."""
    days = await snapshot_days(session, tenant, watch_list, first, last)
    out: dict[date, list[Position]] = {day: [] for day in days}
    connection = await driver(session)
    for row in await connection.fetch(_SNAPSHOT, tenant, watch_list, first, last):
        out.setdefault(row["snapshot_date"], []).append(_position(row))
    return out
