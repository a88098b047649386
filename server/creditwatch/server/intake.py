"""Company-data intake: store a fact and re-score the company in ONE transaction.

A crash at any point leaves either the fact and its score, or neither
("scored later and maybe lost" cannot happen). Alerts caused by the change
will be written in this same transaction once the alert outbox exists.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from creditwatch.server.domain.events import CompanyEvent, RiskState
from creditwatch.server.domain.financials import FinancialStatement
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.scores import StoredScore
from creditwatch.server.scoring.engine import ScoreRequest
from creditwatch.server.scoring.registry import ModelRegistry
from creditwatch.server.store import facts
from creditwatch.server.store.score_cache import ScoreCache


@dataclass(frozen=True)
class Effect:
    """What an intake did to one company's score."""

    company: CompanyId
    score: StoredScore | None
    previous: StoredScore | None


@dataclass(frozen=True)
class IncomingEvent:
    """An event as the sender gave it."""

    company: CompanyId
    event_id: str
    event: CompanyEvent
    detail: dict[str, Any]
    source: str
    index: int
    """Position in the request, for error messages."""


class Intake:
    """Applies company facts and keeps each company's score current."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        registry: ModelRegistry,
        cache: ScoreCache | None = None,
    ) -> None:
        self._sessions = sessions
        self._registry = registry
        self._cache = cache

    async def _rescore(self, session: AsyncSession, company: CompanyId) -> Effect:
        previous = await facts.latest_score(session, company)
        statement = await facts.latest_statement(session, company)
        state = RiskState.of(await facts.events(session, company))
        score = await self._registry.active.score(ScoreRequest(statement, state))
        if score is not None:
            await facts.add_score(session, company, score)
        return Effect(company, score, previous)

    async def submit_statement(
        self,
        company: CompanyId,
        statement: FinancialStatement,
        source: str,
        by: uuid.UUID,
    ) -> tuple[bool, Effect]:
        """Store (or replace) a statement and re-score; returns (replaced, effect)."""
        async with self._sessions.begin() as session:
            await facts.lock_company(session, company)
            replaced = await facts.put_statement(session, company, statement, source, by)
            return replaced, await self._rescore(session, company)

    async def record_events(
        self, incoming: Sequence[IncomingEvent], by: uuid.UUID
    ) -> tuple[int, list[str], list[Effect]]:
        """Store new events (duplicates by event id are skipped) and re-score each
        company that got one; returns (recorded, duplicate ids, effects)."""
        recorded = 0
        duplicates: list[str] = []
        effects: list[Effect] = []
        by_company: dict[CompanyId, list[IncomingEvent]] = {}
        for item in incoming:
            by_company.setdefault(item.company, []).append(item)
        async with self._sessions.begin() as session:
            # Sorted: concurrent calls lock companies in one order, never deadlock.
            for company in sorted(by_company):
                await facts.lock_company(session, company)
                new = 0
                for item in by_company[company]:
                    stored = await facts.add_event(
                        session, company, item.event_id, item.event, item.detail, item.source, by
                    )
                    if stored is None:
                        # Raising rolls the whole call back: nothing of it is written.
                        raise InvalidArgument.single(
                            f"events[{item.index}].event_id",
                            f"{item.event_id!r} was recorded earlier with different content",
                        )
                    if stored:
                        new += 1
                    else:
                        duplicates.append(item.event_id)
                recorded += new
                if new:
                    effects.append(await self._rescore(session, company))
        return recorded, duplicates, effects

    async def score_company(self, company: CompanyId) -> tuple[StoredScore, bool]:
        """The current score, computing and storing one from stored facts if there
        is none; returns (score, computed)."""
        if self._cache is not None:
            cached = self._cache.get(company)
            if cached is not None:
                return cached, False
            generation = self._cache.generation
        async with self._sessions() as session:
            stored = await facts.latest_score(session, company)
        if stored is not None:
            if self._cache is not None:
                self._cache.put(company, stored, generation)
            return stored, False
        async with self._sessions.begin() as session:
            if not await facts.company_known(session, company):
                raise NotFound(f"companies/{company.key}")
            await facts.lock_company(session, company)
            raced = await facts.latest_score(session, company)
            if raced is not None:  # another call scored it while we waited for the lock
                return raced, False
            effect = await self._rescore(session, company)
        if effect.score is None:
            raise FailedPrecondition(
                f"{company.key} has no financial statement and no event that decides its class"
            )
        return effect.score, True

    async def company(
        self, company: CompanyId
    ) -> tuple[facts.MasterData, StoredScore | None, FinancialStatement | None]:
        """Master data, current score and latest statement; NotFound if never seen."""
        async with self._sessions() as session:
            master = await facts.master_data(session, company)
            if master is None:
                raise NotFound(f"companies/{company.key}")
            score = await facts.latest_score(session, company)
            statement = await facts.latest_statement(session, company)
        return master, score, statement
