"""Register feed state in PostgreSQL: cursors, and which companies are watched.

A feed's row in `register_cursors` holds the last applied update id. Before a
feed's first update there is none; a row named `<feed>@origin` holds instead
the time its first run started reading from (microseconds since 1970 UTC), and
goes when the cursor is first stored. A row `<feed>@stuck:<number>` holds
since when the feed keeps stopping at that unit (see `stuck_since`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _origin_row(feed: str) -> str:
    return f"{feed}@origin"


def _stuck_row(feed: str, number: str) -> str:
    return f"{feed}@stuck:{number}"


async def stuck_since(
    session: AsyncSession, register: str, feed: str, number: str, now: datetime
) -> datetime:
    """Since when a feed (or `CURRENT`, the reading of newly watched
    companies) keeps stopping at the unit `number`: the time of the first
    stop, stored by it (a row `<feed>@stuck:<number>`), until the unit is
    read (`advance`, `unstuck`). A unit given up on keeps its row, so that
    its next stop is given up at once rather than after a new wait."""
    row = _stuck_row(feed, number)
    await session.execute(
        text(
            """
            INSERT INTO register_cursors (register, feed, position) VALUES (:r, :f, :p)
            ON CONFLICT (register, feed) DO NOTHING
            """
        ),
        {"r": register, "f": row, "p": (now - _EPOCH) // _MICROSECOND},
    )
    stored = await cursor(session, register, row)
    assert stored is not None
    return _EPOCH + stored * _MICROSECOND


async def unstuck(session: AsyncSession, register: str, feed: str, read: Collection[str]) -> None:
    """Forget that a feed stopped at the units `read` (read now)."""
    if read:
        await session.execute(
            text("DELETE FROM register_cursors WHERE register = :r AND feed = ANY(:rows)"),
            {"r": register, "rows": [_stuck_row(feed, number) for number in read]},
        )


async def cursor(session: AsyncSession, register: str, feed: str) -> int | None:
    """The last applied update id of a feed, or None before the first run."""
    found = await session.scalar(
        text("SELECT position FROM register_cursors WHERE register = :r AND feed = :f"),
        {"r": register, "f": feed},
    )
    return None if found is None else int(found)


async def origin(session: AsyncSession, register: str, feed: str, proposed: datetime) -> datetime:
    """Where a feed's first run reads from: the time stored by the first call,
    which stores `proposed`, until the feed's cursor is stored."""
    await session.execute(
        text(
            """
            INSERT INTO register_cursors (register, feed, position) VALUES (:r, :f, :p)
            ON CONFLICT (register, feed) DO NOTHING
            """
        ),
        {"r": register, "f": _origin_row(feed), "p": (proposed - _EPOCH) // _MICROSECOND},
    )
    stored = await cursor(session, register, _origin_row(feed))
    assert stored is not None
    return _EPOCH + stored * _MICROSECOND


async def advance(
    session: AsyncSession, register: str, feed: str, position: int, read: Collection[str]
) -> None:
    """Store a feed's cursor; it only moves forward. The first one replaces the
    feed's origin. `read`: the units the page was read for (not those given
    up on, whose stops are remembered: see `stuck_since`)."""
    await session.execute(
        text("DELETE FROM register_cursors WHERE register = :r AND feed = :f"),
        {"r": register, "f": _origin_row(feed)},
    )
    await unstuck(session, register, feed, read)
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


async def unread(session: AsyncSession, register: str, country: str, limit: int) -> list[str]:
    """Register numbers of watched companies of `country` whose current state
    was not read from `register` since a watch list last took them on (never
    read, or put on a list after the last read: a company watched again
    after a spell unwatched may have changed meanwhile); at most `limit`, in
    number order."""
    rows = await session.execute(
        text(
            """
            SELECT e.register_number FROM watch_list_entries e
            LEFT JOIN register_units u
              ON u.register = :r AND u.country = e.country
             AND u.register_number = e.register_number
            WHERE e.country = CAST(:country AS char(2))
            GROUP BY e.register_number, u.read_time
            HAVING u.read_time IS NULL OR max(e.create_time) > u.read_time
            ORDER BY e.register_number
            LIMIT :limit
            """
        ),
        {"r": register, "country": country, "limit": limit},
    )
    return [row.register_number for row in rows]


async def mark_read(
    session: AsyncSession, register: str, country: str, numbers: Sequence[str], at: datetime
) -> None:
    """Record that these companies' current state was read from `register` at `at`
    (when the reading started: a list that took one on later reads it again)."""
    await session.execute(
        text(
            """
            INSERT INTO register_units (register, country, register_number, read_time)
            SELECT :r, CAST(:country AS char(2)), n, :at
            FROM unnest(CAST(:numbers AS varchar[])) n
            ON CONFLICT (register, country, register_number)
            DO UPDATE SET read_time = excluded.read_time
            """
        ),
        {"r": register, "country": country, "numbers": list(numbers), "at": at},
    )
