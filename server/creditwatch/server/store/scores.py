"""Company scores in PostgreSQL: append-only history, newest is current."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.scores import Reason, ReasonKind, RiskClass, StoredScore
from creditwatch.server.store import models

_S = cast(Table, models.Score.__table__)

# Company master data may arrive after the first score (e.g. a bulk re-score of
# watched companies); a bare row keeps the foreign key satisfied until then.
_ENSURE_COMPANY = text(
    """
    INSERT INTO companies (country, register_number, name, industry_code, legal_form, status)
    VALUES (:country, :number, '', '', '', 0)
    ON CONFLICT (country, register_number) DO NOTHING
    """
)


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
                _ENSURE_COMPANY, {"country": company.country, "number": company.register_number}
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

    async def latest(self, company: CompanyId) -> StoredScore | None:
        """The company's current score, or None if it was never scored."""
        query = (
            select(_S)
            .where(_S.c.country == company.country, _S.c.register_number == company.register_number)
            .order_by(_S.c.id.desc())
            .limit(1)
        )
        async with self._sessions() as session:
            row = (await session.execute(query)).first()
        if row is None:
            return None
        return StoredScore(
            probability_of_default=row.probability_of_default,
            risk_class=RiskClass(row.risk_class),
            model_risk_class=RiskClass(row.model_risk_class),
            reasons=tuple(
                Reason(r["code"], r["description"], ReasonKind(r["kind"]), r["pd_contribution"])
                for r in row.reasons
            ),
            model_version=row.model_version,
            data_as_of=row.data_as_of,
            score_time=row.score_time,
        )
