"""Bulk reads and writes for re-scoring many companies in one transaction.

The per-company functions in `facts` cost a few round trips each; a re-score
of a million watched companies needs a handful of queries per chunk instead.
Every query here takes the chunk as two parallel arrays (countries, numbers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from creditwatch.server.domain.events import CompanyEvent, EventType
from creditwatch.server.domain.financials import FinancialStatement
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.scores import StoredScore
from creditwatch.server.store import facts

_IN_CHUNK = (
    "(country, register_number) IN "
    "(SELECT * FROM unnest(CAST(:countries AS text[]), CAST(:numbers AS text[])))"
)

_DUE = text(
    """
    SELECT c.country, c.register_number
    FROM companies c
    JOIN LATERAL (
        SELECT model_version, score_time FROM scores s
        WHERE s.country = c.country AND s.register_number = c.register_number
        ORDER BY s.id DESC LIMIT 1
    ) latest ON true
    WHERE (c.country, c.register_number) > (:after_country, :after_number)
      AND EXISTS (
        SELECT 1 FROM watch_list_entries e
        WHERE e.country = c.country AND e.register_number = c.register_number
      )
      AND (latest.model_version <> :version OR latest.score_time < :stale_before)
    ORDER BY c.country, c.register_number
    LIMIT :limit
    """
)


def _arrays(companies: Sequence[CompanyId]) -> dict[str, list[str]]:
    return {
        "countries": [c.country for c in companies],
        "numbers": [c.register_number for c in companies],
    }


async def due(
    session: AsyncSession,
    version: str,
    stale_before: datetime,
    after: CompanyId | None,
    limit: int,
) -> list[CompanyId]:
    """Watched companies (in key order, after `after`) whose current score was
    made by another model version or before `stale_before`."""
    rows = await session.execute(
        _DUE,
        {
            "version": version,
            "stale_before": stale_before,
            "after_country": after.country if after else "",
            "after_number": after.register_number if after else "",
            "limit": limit,
        },
    )
    return [CompanyId(r.country, r.register_number) for r in rows]


async def lock(session: AsyncSession, companies: Sequence[CompanyId]) -> list[CompanyId]:
    """Lock the companies' rows for this transaction, skipping any an intake holds
    (that intake re-scores them itself); returns the ones locked."""
    rows = await session.execute(
        text(
            f"""
            SELECT country, register_number FROM companies WHERE {_IN_CHUNK}
            ORDER BY country, register_number FOR UPDATE SKIP LOCKED
            """
        ),
        _arrays(companies),
    )
    return [CompanyId(r.country, r.register_number) for r in rows]


@dataclass(frozen=True)
class Facts:
    """What scoring needs about each company of a chunk."""

    statements: dict[CompanyId, FinancialStatement]
    events: dict[CompanyId, list[CompanyEvent]]
    status: dict[CompanyId, int]
    overdue: dict[CompanyId, int]
    scores: dict[CompanyId, StoredScore]


async def read(session: AsyncSession, companies: Sequence[CompanyId], overdue_days: int) -> Facts:
    """Latest statement, events, status, pooled overdue invoices and current
    score of every company in the chunk, in five queries."""
    params = _arrays(companies)
    known = {f.name for f in fields(FinancialStatement)}
    statements: dict[CompanyId, FinancialStatement] = {}
    for r in await session.execute(
        text(
            f"""
            SELECT DISTINCT ON (country, register_number)
                   country, register_number, period_start, period_end, currency, items
            FROM financial_statements WHERE {_IN_CHUNK}
            ORDER BY country, register_number, period_end DESC
            """
        ),
        params,
    ):
        items = {k: float(v) for k, v in r.items.items() if k in known}
        statements[CompanyId(r.country, r.register_number)] = FinancialStatement(
            period_start=r.period_start, period_end=r.period_end, currency=r.currency, **items
        )
    events: dict[CompanyId, list[CompanyEvent]] = {}
    for r in await session.execute(
        text(
            f"""
            SELECT country, register_number, type, occurred_at, reference
            FROM company_events WHERE {_IN_CHUNK}
            ORDER BY country, register_number, record_time, event_id
            """
        ),
        params,
    ):
        events.setdefault(CompanyId(r.country, r.register_number), []).append(
            CompanyEvent(EventType(r.type), r.occurred_at, r.reference)
        )
    status = {
        CompanyId(r.country, r.register_number): int(r.status)
        for r in await session.execute(
            text(f"SELECT country, register_number, status FROM companies WHERE {_IN_CHUNK}"),
            params,
        )
    }
    overdue = {
        CompanyId(r.country, r.register_number): int(r.n)
        for r in await session.execute(
            text(
                f"""
                SELECT country, register_number, count(*) AS n FROM payment_experiences
                WHERE {_IN_CHUNK} AND settled_date IS NULL AND current_date - due_date > :days
                GROUP BY country, register_number
                """
            ),
            params | {"days": overdue_days},
        )
    }
    scores: dict[CompanyId, StoredScore] = {}
    for r in await session.execute(
        text(
            f"""
            SELECT DISTINCT ON (country, register_number) *
            FROM scores WHERE {_IN_CHUNK}
            ORDER BY country, register_number, id DESC
            """
        ),
        params,
    ):
        scores[CompanyId(r.country, r.register_number)] = facts.score_from_row(r)
    return Facts(statements, events, status, overdue, scores)


async def add_scores(
    session: AsyncSession, scored: Sequence[tuple[CompanyId, StoredScore]]
) -> None:
    """Append many scores; replicas' score caches are told to forget everything."""
    if not scored:
        return
    rows: list[dict[str, Any]] = [
        {
            "country": company.country,
            "register_number": company.register_number,
            "probability_of_default": score.probability_of_default,
            "risk_class": int(score.risk_class),
            "model_risk_class": int(score.model_risk_class),
            "reasons": facts.score_json(score)["reasons"],
            "model_version": score.model_version,
            "data_as_of": score.data_as_of,
            "score_time": score.score_time,
        }
        for company, score in scored
    ]
    await session.execute(facts.INSERT_SCORE, rows)
    # One notice for the whole chunk: "*" empties every replica's score cache.
    await session.execute(text("SELECT pg_notify('creditwatch_scores', '*')"))
