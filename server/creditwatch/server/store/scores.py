"""Company scores in PostgreSQL: append-only history, newest is current."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.scores import StoredScore
from creditwatch.server.store import models
from creditwatch.server.store.watchlists import UPSERT_COMPANIES

_S = cast(Table, models.Score.__table__)


class ScoreStore:
    """Writes scores; reads happen through the stores that show them."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def record(self, company: CompanyId, score: StoredScore) -> None:
        """Append a new current score for `company` (creating the company row if new)."""
        reasons = [
            {
                "code": r.code,
                "description": r.description,
                "kind": int(r.kind),
                "pd_contribution": r.pd_contribution,
            }
            for r in score.reasons
        ]
        async with self._sessions.begin() as session:
            await session.execute(
                UPSERT_COMPANIES,
                {"countries": [company.country], "numbers": [company.register_number]},
            )
            await session.execute(
                insert(_S).values(
                    country=company.country,
                    register_number=company.register_number,
                    probability_of_default=score.probability_of_default,
                    risk_class=int(score.risk_class),
                    model_risk_class=int(score.model_risk_class),
                    reasons=reasons,
                    model_version=score.model_version,
                    data_as_of=score.data_as_of,
                    score_time=score.score_time,
                )
            )
