"""Watch lists as portfolios: current positions, and daily snapshots."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.portfolio import Position
from creditwatch.server.store.database import driver

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
        ORDER BY id DESC LIMIT 1
    ) s ON true
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM taken
"""


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


async def take(session: AsyncSession, day: date) -> int:
    """Snapshot every watch list for `day` (idempotent); returns rows written."""
    connection = await driver(session)
    written = int(await connection.fetchval(_TAKE, day))
    await connection.execute(
        """
        INSERT INTO portfolio_snapshot_days (tenant_id, watch_list_id, snapshot_date, entry_count)
        SELECT tenant_id, id, $1, entry_count FROM watch_lists
        ON CONFLICT DO NOTHING
        """,
        day,
    )
    return written
