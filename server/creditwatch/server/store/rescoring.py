"""Bulk reads and writes for scoring many companies in one transaction.

The per-company functions in `facts` cost a few round trips each; a
RecordEvents call of 1,000 events or a re-score of a million watched
companies needs a handful of statements per chunk instead. Everything here
runs on the session's asyncpg connection (arrays in, COPY out) inside the
caller's transaction, and takes a chunk as two parallel arrays.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from itertools import repeat
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from creditwatch.server.domain.events import (
    CompanyEvent,
    CompanyStatus,
    EventType,
    RiskState,
    risk_state,
)
from creditwatch.server.domain.financials import LINE_ITEMS, FinancialStatement
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.scores import StoredScore, reasons_as_json
from creditwatch.server.scoring.engine import ScoreRows
from creditwatch.server.store import facts, models, score_cache
from creditwatch.server.store.database import CHUNK_FAILURES, driver, dumps

# A chunk's keys travel as two comma-separated strings (countries, register
# numbers; neither can hold a comma, see domain.identifiers), not as text
# arrays: asyncpg checks every element of an array parameter against three
# abstract base classes, which cost more than the rest of a company's read.
_UNNEST = "unnest(string_to_array($1, ',')::char(2)[], string_to_array($2, ',')::varchar[])"
_CHUNK = f"(SELECT * FROM {_UNNEST})"
_IN_CHUNK = f"(country, register_number) IN {_CHUNK}"

_DUE = """
SELECT string_agg(country, ',') AS country, string_agg(register_number, ',') AS register_number
FROM (
SELECT c.country, c.register_number
FROM companies c
JOIN LATERAL (
    SELECT model_version, override_policy, score_time FROM scores s
    WHERE s.country = c.country AND s.register_number = c.register_number
    ORDER BY s.id DESC LIMIT 1
) latest ON true
WHERE (c.country, c.register_number) > ($1, $2)
  AND EXISTS (
    SELECT 1 FROM watch_list_entries e
    WHERE e.country = c.country AND e.register_number = c.register_number
  )
  AND (latest.model_version <> $3 OR latest.override_policy <> $6 OR latest.score_time < $4)
ORDER BY c.country, c.register_number
LIMIT $5
) due
"""

_KNOWN_ITEMS = frozenset(f.name for f in fields(FinancialStatement))


@dataclass(frozen=True, slots=True)
class Keys:
    """Many companies as two parallel lists, the way bulk statements take and
    return them (no CompanyId per company)."""

    countries: list[str]
    numbers: list[str]

    def __len__(self) -> int:
        return len(self.countries)

    def slice(self, start: int, end: int) -> Keys:
        """Companies [start, end)."""
        return Keys(self.countries[start:end], self.numbers[start:end])

    def last(self) -> CompanyId:
        """The last company."""
        return CompanyId(self.countries[-1], self.numbers[-1])


def _arrays(companies: Sequence[CompanyId] | Keys) -> tuple[str, str]:
    """The keys as `_UNNEST` takes them."""
    if isinstance(companies, Keys):
        return ",".join(companies.countries), ",".join(companies.numbers)
    return ",".join([c.country for c in companies]), ",".join(
        [c.register_number for c in companies]
    )


@dataclass(frozen=True, slots=True)
class Maker:
    """What makes a score: a model version and an override policy (its tag).
    A re-score redoes the scores of any other maker, and those made before
    `stale_before`."""

    model_version: str
    override_policy: str
    stale_before: datetime


async def due(
    session: AsyncSession,
    maker: Maker,
    after: CompanyId | None,
    limit: int,
) -> Keys:
    """Watched companies (in key order, after `after`) whose current score was
    made by another model version or override policy, or before the maker's
    `stale_before`."""
    connection = await driver(session)
    row = await connection.fetchrow(
        _DUE,
        after.country if after else "",
        after.register_number if after else "",
        maker.model_version,
        maker.stale_before,
        limit,
        maker.override_policy,
    )
    if row is None or row["country"] is None:
        return Keys([], [])
    return Keys(row["country"].split(","), row["register_number"].split(","))


@dataclass(frozen=True, slots=True)
class Chunk:
    """A re-scoring run's chunk, claimed by this transaction."""

    id: int
    run_id: uuid.UUID
    maker: Maker
    companies: Keys


@dataclass(frozen=True, slots=True)
class RunTotals:
    """What every replica did for a run, summed over its done chunks."""

    chunks: int
    companies: int
    scored: int
    alerts: int
    skipped_locked: int
    replicas: int
    given_up: int


async def add_chunks(
    session: AsyncSession,
    run_id: uuid.UUID,
    maker: Maker,
    chunks: Sequence[Keys],
) -> None:
    """Queue chunks of a run for any replica's workers (visible at commit)."""
    connection = await driver(session)
    await connection.execute(
        """
        INSERT INTO rescore_chunks
            (run_id, model_version, override_policy, stale_before, countries, numbers, size)
        SELECT $1, $2, $7, $3, c, n, s FROM unnest($4::text[], $5::text[], $6::int[]) AS t(c, n, s)
        """,
        run_id,
        maker.model_version,
        maker.stale_before,
        [",".join(k.countries) for k in chunks],
        [",".join(k.numbers) for k in chunks],
        [len(k) for k in chunks],
        maker.override_policy,
    )


async def claim(session: AsyncSession, model_version: str, override_policy: str) -> Chunk | None:
    """Lock the oldest chunk no one has done or holds, of a run for
    `model_version` and `override_policy` (a tag: a replica scores only runs
    of its own model and policy), until this transaction ends; None if there is none. A
    worker re-scores the chunk in the same transaction and marks it with
    `finish`; should the transaction roll back (or its replica die), the chunk
    is free again."""
    connection = await driver(session)
    # A replica that hangs (or is cut off) holding a chunk frees it within a
    # minute of its last statement, so no leader waits on it for long.
    await connection.execute("SET LOCAL idle_in_transaction_session_timeout = '60s'")
    row = await connection.fetchrow(
        """
        SELECT id, run_id, stale_before, countries, numbers FROM rescore_chunks
        WHERE done_time IS NULL AND model_version = $1 AND override_policy = $3
          AND failures < $2
        ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED
        """,
        model_version,
        CHUNK_FAILURES,
        override_policy,
    )
    if row is None:
        return None
    return Chunk(
        row["id"],
        row["run_id"],
        Maker(model_version, override_policy, row["stale_before"]),
        Keys(row["countries"].split(","), row["numbers"].split(",")),
    )


async def finish(
    session: AsyncSession, chunk: Chunk, done_by: str, scored: int, alerts: int, skipped: int
) -> None:
    """Mark a claimed chunk done, with what its re-score did."""
    connection = await driver(session)
    await connection.execute(
        """
        UPDATE rescore_chunks
        SET done_time = now(), done_by = $2, scored = $3, alerts = $4, skipped_locked = $5
        WHERE id = $1
        """,
        chunk.id,
        done_by,
        scored,
        alerts,
        skipped,
    )


async def fail(session: AsyncSession, chunk_id: int) -> int:
    """Count a failed attempt at a chunk; returns its failures so far."""
    connection = await driver(session)
    failures: int = await connection.fetchval(
        "UPDATE rescore_chunks SET failures = failures + 1 WHERE id = $1 RETURNING failures",
        chunk_id,
    )
    return failures


async def unfinished(session: AsyncSession, run_id: uuid.UUID) -> int:
    """How many of a run's chunks are not done yet (waiting or being
    re-scored), but for those given up."""
    connection = await driver(session)
    count: int = await connection.fetchval(
        "SELECT count(*) FROM rescore_chunks "
        "WHERE run_id = $1 AND done_time IS NULL AND failures < $2",
        run_id,
        CHUNK_FAILURES,
    )
    return count


async def close_run(session: AsyncSession, run_id: uuid.UUID) -> RunTotals:
    """Sum a run's done chunks, then delete every chunk of it: those given
    up and, of a run stopped early, those not done (a chunk a worker holds
    is deleted once its transaction ends)."""
    connection = await driver(session)
    row = await connection.fetchrow(
        """
        WITH gone AS (DELETE FROM rescore_chunks WHERE run_id = $1 RETURNING *),
        done AS (SELECT * FROM gone WHERE done_time IS NOT NULL)
        SELECT count(*) AS chunks, coalesce(sum(size), 0) AS companies,
               coalesce(sum(scored), 0) AS scored, coalesce(sum(alerts), 0) AS alerts,
               coalesce(sum(skipped_locked), 0) AS skipped_locked,
               count(DISTINCT done_by) AS replicas,
               (SELECT count(*) FROM gone WHERE done_time IS NULL AND failures >= $2)
                   AS given_up
        FROM done
        """,
        run_id,
        CHUNK_FAILURES,
    )
    assert row is not None
    return RunTotals(*(int(row[k]) for k in RunTotals.__slots__))


async def drop_other_runs(session: AsyncSession, run_id: uuid.UUID) -> int:
    """Delete chunks of earlier runs whose leader died before closing them
    (only one replica leads re-scoring at a time); chunks a worker still
    holds are left to it, and to the next run. Returns how many."""
    connection = await driver(session)
    dropped: int = await connection.fetchval(
        """
        WITH dropped AS (
            DELETE FROM rescore_chunks WHERE id IN (
                SELECT id FROM rescore_chunks WHERE run_id <> $1 FOR UPDATE SKIP LOCKED
            )
            RETURNING 1
        )
        SELECT count(*) FROM dropped
        """,
        run_id,
    )
    return dropped


async def ensure_and_lock(session: AsyncSession, companies: Sequence[CompanyId]) -> None:
    """Create missing company rows and lock all of them, in key order (so
    concurrent intakes never deadlock)."""
    connection = await driver(session)
    arrays = _arrays(sorted(set(companies)))
    await connection.execute(
        f"""
        INSERT INTO companies (country, register_number, name, industry_code, legal_form, status)
        SELECT c, n, '', '', '', 0 FROM {_UNNEST} AS t(c, n)
        ON CONFLICT (country, register_number) DO NOTHING
        """,
        *arrays,
    )
    await connection.execute(
        f"""
        SELECT 1 FROM companies WHERE {_IN_CHUNK}
        ORDER BY country, register_number FOR UPDATE
        """,
        *arrays,
    )


@dataclass(frozen=True)
class Facts:
    """What scoring needs about each company of a chunk."""

    statements: dict[CompanyId, FinancialStatement]
    events: dict[CompanyId, list[CompanyEvent]]
    status: dict[CompanyId, int]
    overdue: dict[CompanyId, int]
    scores: dict[CompanyId, StoredScore]
    status_time: dict[CompanyId, datetime] = field(default_factory=dict)
    """When each status took effect, where known (see `risk_state`)."""
    overdue_creditors: dict[CompanyId, int] = field(default_factory=dict)
    """How many creditors report the `overdue` invoices."""


def _statement(row: Any) -> FinancialStatement:
    items = row["items"]
    if isinstance(items, str):
        items = orjson.loads(items)
    values = {k: float(v) for k, v in items.items() if k in _KNOWN_ITEMS}
    return FinancialStatement(
        period_start=row["period_start"],
        period_end=row["period_end"],
        currency=row["currency"],
        **values,
    )


# A company's (k) seriously overdue open invoices ($3: the policy's
# overdue_days), pooled over the creditors (tenants) that report them, and how
# many creditors that is (the policy wants several). One text for the intake's
# read and the re-score's, whose scores must agree.
_OVERDUE = """
LEFT JOIN LATERAL (
    SELECT count(*) AS invoices, count(DISTINCT p.tenant_id) AS creditors
    FROM payment_experiences p
    WHERE p.country = k.country AND p.register_number = k.register_number
      AND p.settled_date IS NULL AND current_date - p.due_date > $3
) ov ON true
"""

# Everything `read` needs, one row per company, in one statement (an intake
# of one event paid a round trip per kind of fact). Every part is an index
# look-up per company (LATERAL ... LIMIT 1, as in _READ).
_FACTS = f"""
SELECT k.country, k.register_number, c.status, c.status_time,
       st.period_start, st.period_end, st.currency, st.items::text AS items,
       ev.types, ev.occurred, ev.refs, ev.recorded,
       ov.invoices AS overdue, ov.creditors AS overdue_creditors,
       sc.probability_of_default, sc.risk_class, sc.model_risk_class,
       sc.reasons::text AS reasons, sc.model_version, sc.data_as_of, sc.score_time
FROM {_UNNEST} AS k(country, register_number)
LEFT JOIN LATERAL (
    SELECT c.status, c.status_time FROM companies c
    WHERE c.country = k.country AND c.register_number = k.register_number LIMIT 1
) c ON true
LEFT JOIN LATERAL (
    SELECT f.period_start, f.period_end, f.currency, f.items FROM financial_statements f
    WHERE f.country = k.country AND f.register_number = k.register_number
    ORDER BY f.period_end DESC LIMIT 1
) st ON true
LEFT JOIN LATERAL (
    SELECT array_agg(e.type ORDER BY e.record_time, e.event_id) AS types,
           array_agg(e.occurred_at ORDER BY e.record_time, e.event_id) AS occurred,
           array_agg(e.reference ORDER BY e.record_time, e.event_id) AS refs,
           array_agg(e.record_time ORDER BY e.record_time, e.event_id) AS recorded
    FROM company_events e
    WHERE e.country = k.country AND e.register_number = k.register_number
) ev ON true
LEFT JOIN LATERAL (
    SELECT s.probability_of_default, s.risk_class, s.model_risk_class, s.reasons,
           s.model_version, s.data_as_of, s.score_time
    FROM scores s
    WHERE s.country = k.country AND s.register_number = k.register_number
    ORDER BY s.id DESC LIMIT 1
) sc ON true
{_OVERDUE}"""


async def read(session: AsyncSession, companies: Sequence[CompanyId], overdue_days: int) -> Facts:
    """Latest statement, events, status, pooled overdue invoices (and their
    creditors) and current score of every company given, in one statement."""
    connection = await driver(session)
    facts_ = Facts({}, {}, {}, {}, {})
    for r in await connection.fetch(_FACTS, *_arrays(companies), overdue_days):
        company = CompanyId(r["country"], r["register_number"])
        if r["status"] is not None:
            facts_.status[company] = int(r["status"])
        if r["status_time"] is not None:
            facts_.status_time[company] = r["status_time"]
        if r["period_end"] is not None:
            facts_.statements[company] = _statement(r)
        if r["types"] is not None:
            facts_.events[company] = [
                CompanyEvent(EventType(t), at, reference, recorded)
                for t, at, reference, recorded in zip(
                    r["types"], r["occurred"], r["refs"], r["recorded"], strict=True
                )
            ]
        if r["overdue"]:
            facts_.overdue[company] = int(r["overdue"])
            facts_.overdue_creditors[company] = int(r["overdue_creditors"])
        if r["probability_of_default"] is not None:
            facts_.scores[company] = facts.score_from_row(_Row(r))
    return facts_


# Locks the chunk's companies in key order, skipping any an intake holds
# (that intake re-scores them itself).
# Their status comes with the lock: FOR UPDATE returns the newest version of
# each row it locks, and no intake can change it while the lock is held.
_LOCK = f"""
SELECT string_agg(country, ',') AS country, string_agg(register_number, ',') AS register_number,
       array_agg(status) AS status
FROM (
    SELECT country, register_number, status FROM companies WHERE {_IN_CHUNK}
    ORDER BY country, register_number FOR UPDATE SKIP LOCKED
) locked
"""

# Per locked company, in the order given: the latest statement's line items
# as a float8 array in LINE_ITEMS order (the generated column `line_items`;
# NaN = not reported), what the risk state needs besides the status (which
# _LOCK returns), and of the current score
# only what decides whether an alert is due (`previous_scores` reads the rest
# of those an alert shows). Each column is one array: every aggregate of a
# query level sees the rows in the same order, so index i of every array is
# one company (no per-aggregate ORDER BY: each was a sort of its own), and
# `i` (the position in the arrays given) proves that order is the one given,
# so the keys need not come back. Every lookup is by index per company
# (LATERAL ... LIMIT 1): a plain join became a hash join over a whole table. A
# statement of its own, after _LOCK: under READ COMMITTED a statement reads
# the snapshot it started with, so a read in the locking statement could miss
# what an intake committed while the lock waited, and store a score from
# older facts over the intake's.
_READ = f"""
WITH chunk AS MATERIALIZED (
    SELECT k.i, k.country, k.register_number
    FROM {_UNNEST} WITH ORDINALITY AS k(country, register_number, i)
    ORDER BY k.i
)
SELECT array_agg(k.i) AS i,
       array_agg(st.currency) AS currency,
       array_agg(st.period_end) AS period_end,
       array_send(array_agg(coalesce(st.line_items, $4::float8[]))) AS items,
       array_agg(st.period_end IS NOT NULL) AS has_statement,
       array_agg(EXISTS (
           SELECT 1 FROM company_events e
           WHERE e.country = k.country AND e.register_number = k.register_number
       )) AS has_events,
       array_agg(ov.invoices) AS overdue,
       array_agg(ov.creditors) AS overdue_creditors,
       array_agg(sc.probability_of_default) AS pd,
       array_agg(sc.risk_class) AS risk_class,
       array_agg(sc.id) AS score_id,
       array_agg(coalesce(
           sc.model_version = $5 AND sc.override_policy = $7 AND sc.score_time >= $6, false
       )) AS fresh
FROM chunk k
LEFT JOIN LATERAL (
    SELECT f.currency, f.period_end, f.line_items
    FROM financial_statements f
    WHERE f.country = k.country AND f.register_number = k.register_number
    ORDER BY f.period_end DESC LIMIT 1
) st ON true
LEFT JOIN LATERAL (
    SELECT s.id, s.probability_of_default, s.risk_class, s.model_version,
           s.override_policy, s.score_time
    FROM scores s
    WHERE s.country = k.country AND s.register_number = k.register_number
    ORDER BY s.id DESC LIMIT 1
) sc ON true
{_OVERDUE}"""

_NO_ITEMS = [math.nan] * len(LINE_ITEMS)
# A float8 array in PostgreSQL's binary form (array_send): ndim, has-nulls
# flag, element type, then (size, lower bound) per dimension, then per element
# its length and value, big-endian. `line_items` has no NULLs (NaN instead),
# so every element is 12 bytes and numpy reads the lot without a Python float
# per item.
_ARRAY_ELEMENT = np.dtype([("length", ">i4"), ("value", ">f8")])


def _float_matrix(data: bytes, columns: int) -> npt.NDArray[np.float64]:
    """An (n, columns) float8 array sent by array_send, as float64 rows."""
    dimensions = int.from_bytes(data[:4], "big")
    if dimensions == 0:
        return np.empty((0, columns))
    elements = np.frombuffer(data, dtype=_ARRAY_ELEMENT, offset=12 + 8 * dimensions)
    if (elements["length"] != 8).any():
        raise ValueError("a NULL in a float8 array that should have none")
    return elements["value"].astype(np.float64).reshape(-1, columns)


_CLEAN = RiskState()
_STATUS_STATES = (int(CompanyStatus.BANKRUPT), int(CompanyStatus.COMPULSORY_DISSOLUTION))


@dataclass(frozen=True)
class ChunkFacts:
    """What scoring needs about each company of a chunk, in columns (index i is
    company i): no statement object per company, and of the current scores
    only what decides whether an alert is due."""

    countries: list[str]
    numbers: list[str]
    items: npt.NDArray[np.float64]
    """Shape (len(LINE_ITEMS), n): the latest statement's items, NaN = missing."""
    currencies: list[str | None]
    period_ends: list[date | None]
    with_statement: list[int]
    """Indexes of the companies that have a statement."""
    states: list[RiskState]
    fresh: list[bool]
    """Whether the company's current score is already from the run's model
    version and newer than its staleness cut-off (an intake re-scored it
    since the run listed it): nothing to do."""
    _pd: list[float | None]
    _risk_class: list[int | None]
    _score_id: list[int | None]

    def __len__(self) -> int:
        return len(self.countries)

    def company(self, i: int) -> CompanyId:
        """Company i."""
        return CompanyId(self.countries[i], self.numbers[i])

    def previous_pd(self, i: int) -> float | None:
        """The PD of company i's current score (None: no score)."""
        return self._pd[i]

    def previous_class(self, i: int) -> int | None:
        """The risk class of company i's current score (None: no score)."""
        return self._risk_class[i]


_NO_FACTS = ChunkFacts([], [], np.empty((len(LINE_ITEMS), 0)), *([[]] * 8))


async def lock_and_read(
    session: AsyncSession,
    companies: Sequence[CompanyId] | Keys,
    overdue_days: int,
    fresh_from: Maker | None = None,
) -> ChunkFacts:
    """Lock a re-score's chunk (skipping companies an intake holds), then read
    the locked companies' facts in columns: two statements, plus one for the
    events of the few companies that have any. `fresh_from`: which current
    scores count as `fresh` (its maker's, since its `stale_before`); none without."""
    connection = await driver(session)
    locked = await connection.fetchrow(_LOCK, *_arrays(companies))
    if locked is None or locked["country"] is None:
        return _NO_FACTS
    row = await connection.fetchrow(
        _READ,
        locked["country"],
        locked["register_number"],
        overdue_days,
        _NO_ITEMS,
        fresh_from.model_version if fresh_from else None,
        fresh_from.stale_before if fresh_from else None,
        fresh_from.override_policy if fresh_from else None,
    )
    statuses: list[int] = locked["status"]
    countries = locked["country"].split(",")
    numbers = locked["register_number"].split(",")
    count = len(countries)
    if row is None or row["i"] != list(range(1, count + 1)):
        raise RuntimeError("the chunk's facts came back in another order than asked")
    items = _float_matrix(row["items"], len(LINE_ITEMS)).T
    if items.shape[1] != count:
        raise ValueError(f"{items.shape[1]} statements for {count} companies")
    with_statement = [i for i, present in enumerate(row["has_statement"]) if present]
    states = [_CLEAN] * count
    special = [
        i
        for i, (events, status, overdue) in enumerate(
            zip(row["has_events"], statuses, row["overdue"], strict=True)
        )
        if events or overdue or status in _STATUS_STATES
    ]
    if special:
        keys = {i: CompanyId(countries[i], numbers[i]) for i in special}
        events, status_times = await _events(connection, list(keys.values()))
        for i, company in keys.items():
            states[i] = risk_state(
                events.get(company, []),
                statuses[i],
                row["overdue"][i],
                status_times.get(company),
                row["overdue_creditors"][i],
            )
    return ChunkFacts(
        countries,
        numbers,
        items,
        row["currency"],
        row["period_end"],
        with_statement,
        states,
        row["fresh"],
        row["pd"],
        row["risk_class"],
        row["score_id"],
    )


class PreviousScore(NamedTuple):
    """A company's score before a re-score."""

    score: StoredScore
    """Its `reasons` left empty, not decoded: the re-score's alerts and limit
    decisions copy `reasons_text` (see `Change`)."""
    reasons_text: str
    """Its reasons as stored (JSON)."""
    override_policy: str
    """The tag of the override policy it was made with."""


async def previous_scores(
    session: AsyncSession, known: ChunkFacts, indexes: Sequence[int]
) -> dict[int, PreviousScore]:
    """The current scores (as `lock_and_read` found them) of the chunk's
    companies at `indexes` that have one, by index."""
    ids = {i: score_id for i in indexes if (score_id := known._score_id[i]) is not None}
    if not ids:
        return {}
    connection = await driver(session)
    rows = {
        r["id"]: r
        for r in await connection.fetch(
            """
            SELECT id, probability_of_default, risk_class, model_risk_class,
                   reasons::text AS reasons, model_version, override_policy, data_as_of,
                   score_time
            FROM scores
            WHERE (country, register_number, id) IN
                  (SELECT * FROM unnest(string_to_array($1, ',')::char(2)[],
                                        string_to_array($2, ',')::varchar[], $3::bigint[]))
            """,
            ",".join([known.countries[i] for i in ids]),
            ",".join([known.numbers[i] for i in ids]),
            list(ids.values()),
        )
    }
    classes, new = facts.RISK_CLASSES, tuple.__new__
    found: dict[int, PreviousScore] = {}
    for i, score_id in ids.items():
        row = rows[score_id]
        # StoredScore(pd, risk_class, model_risk_class, reasons, model_version,
        # data_as_of, score_time), built in C (see engine._assemble_rows).
        score = new(
            StoredScore,
            (
                row["probability_of_default"],
                classes[row["risk_class"]],
                classes[row["model_risk_class"]],
                (),
                row["model_version"],
                row["data_as_of"],
                row["score_time"],
            ),
        )
        found[i] = PreviousScore(score, row["reasons"], row["override_policy"])
    return found


async def _events(
    connection: Any, companies: Sequence[CompanyId]
) -> tuple[dict[CompanyId, list[CompanyEvent]], dict[CompanyId, datetime]]:
    """Each company's events, in the order they were recorded, and when each
    company's status took effect (where known: `risk_state` needs it only
    beside events)."""
    events: dict[CompanyId, list[CompanyEvent]] = {}
    status_times: dict[CompanyId, datetime] = {}
    for r in await connection.fetch(
        f"""
        SELECT e.country, e.register_number, e.type, e.occurred_at, e.reference,
               e.record_time, c.status_time
        FROM company_events e
        JOIN companies c USING (country, register_number)
        WHERE (e.country, e.register_number) IN (SELECT * FROM {_UNNEST})
        ORDER BY e.country, e.register_number, e.record_time, e.event_id
        """,
        *_arrays(companies),
    ):
        company = CompanyId(r["country"], r["register_number"])
        events.setdefault(company, []).append(
            CompanyEvent(EventType(r["type"]), r["occurred_at"], r["reference"], r["record_time"])
        )
        if r["status_time"] is not None:
            status_times[company] = r["status_time"]
    return events, status_times


class _Row:
    """Attribute access over an asyncpg record, as `facts.score_from_row` reads rows."""

    __slots__ = ("_record",)

    def __init__(self, record: Any) -> None:
        self._record = record

    def __getattr__(self, name: str) -> Any:
        value = self._record[name]
        if name == "reasons" and isinstance(value, str):
            return orjson.loads(value)
        return value


_SCORE_COLUMNS = (
    "country",
    "register_number",
    "probability_of_default",
    "risk_class",
    "model_risk_class",
    "reasons",
    "model_version",
    "override_policy",
    "data_as_of",
    "score_time",
)


async def add_scores(
    session: AsyncSession, scored: Sequence[tuple[CompanyId, StoredScore]], policy: str
) -> None:
    """Append many scores (COPY), made with the override policy tagged
    `policy`; they become the companies' current ones."""
    if not scored:
        return
    connection = await driver(session)
    await connection.copy_records_to_table(
        "scores",
        columns=_SCORE_COLUMNS,
        records=[
            (
                company.country,
                company.register_number,
                score.probability_of_default,
                int(score.risk_class),
                int(score.model_risk_class),
                orjson.dumps(reasons_as_json(score.reasons)).decode(),
                score.model_version,
                policy,
                score.data_as_of,
                score.score_time,
            )
            for company, score in scored
        ],
    )
    await _notify_caches(connection, [company.key for company, _ in scored])


async def add_score_rows(
    session: AsyncSession, countries: Sequence[str], numbers: Sequence[str], rows: ScoreRows
) -> None:
    """`add_scores` of scores in their stored form: row i is the company
    (countries[i], numbers[i])."""
    if not len(countries) == len(numbers) == len(rows):
        raise ValueError(f"{len(countries)} companies for {len(rows)} scores")
    if not len(rows):
        return
    connection = await driver(session)
    await connection.copy_records_to_table(
        "scores",
        columns=_SCORE_COLUMNS,
        records=zip(
            countries,
            numbers,
            rows.pds,
            rows.risk_classes,
            rows.model_risk_classes,
            rows.reasons_json,
            repeat(rows.model_version),
            repeat(rows.override_policy),
            rows.data_as_of,
            rows.score_times,
            strict=False,  # `repeat` is endless; the lists' lengths are checked above
        ),
    )
    await _notify_caches(connection, [f"{c}-{n}" for c, n in zip(countries, numbers, strict=True)])


async def _notify_caches(connection: Any, keys: Sequence[str]) -> None:
    """Replicas' score caches drop these companies (CompanyId.key) at commit, told in a few
    notices of many keys each (a notice per company cost more than the
    score's row); past CACHE_FLUSH_FROM, one "*" notice empties the caches."""
    if len(keys) < score_cache.CACHE_FLUSH_FROM:
        await connection.execute(
            "SELECT pg_notify($1, k) FROM unnest($2::text[]) AS k",
            score_cache.CHANNEL,
            score_cache.notices(keys),
        )
    else:
        await connection.execute("SELECT pg_notify($1, '*')", score_cache.CHANNEL)


_ADD_EVENTS = """
INSERT INTO company_events (country, register_number, event_id, type, occurred_at, reference,
                            detail, source, recorded_by)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int2[], $5::timestamptz[],
                     $6::text[], $7::jsonb[], $8::text[], $9::uuid[])
ON CONFLICT DO NOTHING
RETURNING country, register_number, event_id
"""


@dataclass(frozen=True)
class NewEvent:
    """An event to store."""

    company: CompanyId
    event_id: str
    event: CompanyEvent
    detail: dict[str, Any]
    source: str


async def add_events(
    session: AsyncSession, items: Sequence[NewEvent], recorded_by: uuid.UUID | None
) -> tuple[set[tuple[CompanyId, str]], set[tuple[CompanyId, str]]]:
    """Store events idempotently (by the sender's event id: `recorded_by`'s,
    or creditwatch's own when None). Returns (stored now, repeats with
    different content); the rest were stored earlier with the same content."""
    sender = recorded_by or models.NO_SENDER
    connection = await driver(session)
    rows = await connection.fetch(
        _ADD_EVENTS,
        [i.company.country for i in items],
        [i.company.register_number for i in items],
        [i.event_id for i in items],
        [int(i.event.type) for i in items],
        [i.event.occurred_at for i in items],
        [i.event.reference for i in items],
        [dumps(i.detail) for i in items],
        [i.source for i in items],
        [sender] * len(items),
    )
    stored = {(CompanyId(r["country"], r["register_number"]), r["event_id"]) for r in rows}
    repeats = [i for i in items if (i.company, i.event_id) not in stored]
    conflicts: set[tuple[CompanyId, str]] = set()
    if repeats:
        earlier = {
            (CompanyId(r["country"], r["register_number"]), r["event_id"]): r
            for r in await connection.fetch(
                """
                SELECT country, register_number, event_id, type, occurred_at, reference, detail
                FROM company_events
                WHERE recorded_by = $4 AND (country, register_number, event_id) IN
                      (SELECT * FROM unnest($1::char(2)[], $2::varchar[], $3::text[]))
                """,
                [i.company.country for i in repeats],
                [i.company.register_number for i in repeats],
                [i.event_id for i in repeats],
                sender,
            )
        }
        for item in repeats:
            row = earlier[(item.company, item.event_id)]
            detail = row["detail"]
            if isinstance(detail, str):
                detail = orjson.loads(detail)
            same = (row["type"], row["occurred_at"], row["reference"], detail) == (
                int(item.event.type),
                item.event.occurred_at,
                item.event.reference,
                item.detail,
            )
            if not same:
                conflicts.add((item.company, item.event_id))
    return stored, conflicts
