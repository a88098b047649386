"""Company scores in PostgreSQL: a history, newest is current; a company that
can no longer be scored loses it (`facts.end_scores`)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.scores import StoredScore
from creditwatch.server.store import facts


class ScoreStore:
    """Scores outside an intake transaction (look-ups, seeding)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def record(self, company: CompanyId, score: StoredScore, policy: str) -> None:
        """Append a new current score for `company` (creating the company row if
        new), made with the override policy tagged `policy`."""
        async with self._sessions.begin() as session:
            await facts.add_score(session, company, score, policy)

    async def latest(self, company: CompanyId) -> StoredScore | None:
        """The company's current score, or None if it was never scored."""
        async with self._sessions() as session:
            return await facts.latest_score(session, company)
