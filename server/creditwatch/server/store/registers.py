"""Register feed state in PostgreSQL: cursors, and which companies are watched."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


async def cursor(session: AsyncSession, register: str, feed: str) -> int | None:
    """The last applied update id of a feed, or None before the first run."""
    found = await session.scalar(
        text("SELECT position FROM register_cursors WHERE register = :r AND feed = :f"),
        {"r": register, "f": feed},
    )
    return None if found is None else int(found)


async def advance(session: AsyncSession, register: str, feed: str, position: int) -> None:
    """Store a feed's cursor; it only moves forward."""
    await session.execute(
        text(
            """
            INSERT INTO register_cursors (register, feed, position) VALUES (:r, :f, :p)
            ON CONFLICT (register, feed) DO UPDATE SET position = excluded.position,
                update_time = now()
            WHERE register_cursors.position < excluded.position
            """
        ),
        {"r": register, "f": feed, "p": position},
    )


async def watched(session: AsyncSession, country: str, numbers: Sequence[str]) -> set[str]:
    """Which of the register numbers are on any tenant's watch list."""
    rows = await session.execute(
        text(
            """
            SELECT DISTINCT register_number FROM watch_list_entries
            WHERE country = CAST(:country AS char(2))
              AND register_number = ANY(CAST(:numbers AS varchar[]))
            """
        ),
        {"country": country, "numbers": list(numbers)},
    )
    return {r.register_number for r in rows}
