"""Company-data intake: store a fact, re-score, write the alerts, in ONE transaction.

Each intake locks the company row, stores the fact, re-scores the company from
everything stored, compares with the previous score and writes the alerts it
causes for every watch list (of every tenant) that holds the company. A crash
at any point leaves either all of it or none of it: nothing is "scored later
and maybe lost", and no alert exists for a fact that was not stored.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.domain.alerts import (
    Change,
    EventFact,
    Fact,
    MasterDataFact,
    RescoreFact,
    RescoreReason,
    StatementFact,
)
from creditwatch.server.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from creditwatch.server.domain.events import (
    STATUS_AFTER,
    CompanyEvent,
    CompanyStatus,
    RiskState,
    risk_state,
)
from creditwatch.server.domain.financials import FinancialStatement
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.scores import StoredScore
from creditwatch.server.scoring.engine import ScoreRequest
from creditwatch.server.scoring.registry import ModelRegistry
from creditwatch.server.store import alerts, facts
from creditwatch.server.store.score_cache import ScoreCache


@dataclass(frozen=True)
class Effect:
    """What an intake did to one company: its score before and after, and how
    many alerts it wrote (for all tenants)."""

    company: CompanyId
    score: StoredScore | None
    previous: StoredScore | None
    alerts_raised: int = 0


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
    detail_case: str = ""
    """The wire `detail` case name, e.g. "bankruptcy_opened"."""


@dataclass(frozen=True)
class PaymentReport:
    """A tenant's overdue invoice, validated."""

    invoice_id: str
    company: CompanyId
    values: dict[str, Any]
    """due_date, days_past_due, currency, amount, settled_date."""


def _now() -> datetime:
    return datetime.now(UTC)


class Intake:
    """Applies company facts, keeps each company's score current, raises alerts."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        registry: ModelRegistry,
        cache: ScoreCache | None = None,
        on_alerts: Callable[[], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._registry = registry
        self._cache = cache
        self._on_alerts = on_alerts

    def _written(self, effects: Sequence[Effect]) -> None:
        """Alerts committed: wake this replica's hub without waiting for NOTIFY."""
        if self._on_alerts is not None and any(e.alerts_raised for e in effects):
            self._on_alerts()

    async def _state(self, session: AsyncSession, company: CompanyId) -> RiskState:
        master = await facts.master_data(session, company)
        policy = self._registry.active.policy
        return risk_state(
            await facts.events(session, company),
            master.status if master else CompanyStatus.UNSPECIFIED,
            await facts.seriously_overdue(session, company, policy.overdue_days),
        )

    async def _rescore(self, session: AsyncSession, company: CompanyId) -> Effect:
        previous = await facts.latest_score(session, company)
        statement = await facts.latest_statement(session, company)
        state = await self._state(session, company)
        score = await self._registry.active.score(ScoreRequest(statement, state))
        if score is not None:
            await facts.add_score(session, company, score)
        return Effect(company, score, previous)

    async def _alert(
        self, session: AsyncSession, effect: Effect, facts_: Sequence[tuple[Fact, datetime]]
    ) -> Effect:
        """Write the alerts of the facts that led to `effect`; score-change alerts
        (class, threshold) go with the last fact only, so they are raised once."""
        changes = [
            (
                effect.company,
                Change(fact, effect.previous, effect.score, at, score_alerts=i == len(facts_) - 1),
            )
            for i, (fact, at) in enumerate(facts_)
        ]
        counts = await alerts.write(session, changes)
        return dataclasses.replace(effect, alerts_raised=counts.get(effect.company, 0))

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
            effect = await self._rescore(session, company)
            fact = StatementFact(statement.period_start, statement.period_end)
            effect = await self._alert(session, effect, [(fact, _now())])
        self._written([effect])
        return replaced, effect

    async def record_events(
        self, incoming: Sequence[IncomingEvent], by: uuid.UUID
    ) -> tuple[int, list[str], list[Effect]]:
        """Store new events (duplicates by event id are skipped), re-score each
        company that got one and raise its alerts; returns (recorded, duplicate
        ids, effects in order of first appearance)."""
        recorded = 0
        duplicates: list[str] = []
        effects: dict[CompanyId, Effect] = {}
        by_company: dict[CompanyId, list[IncomingEvent]] = {}
        for item in incoming:
            by_company.setdefault(item.company, []).append(item)
        async with self._sessions.begin() as session:
            # Sorted: concurrent calls lock companies in one order, never deadlock.
            for company in sorted(by_company):
                await facts.lock_company(session, company)
                new: list[IncomingEvent] = []
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
                        new.append(item)
                    else:
                        duplicates.append(item.event_id)
                recorded += len(new)
                if not new:
                    continue
                new.sort(key=lambda e: (e.event.occurred_at or _now(), e.index))
                status = next(
                    (
                        STATUS_AFTER[e.event.type]
                        for e in reversed(new)
                        if e.event.type in STATUS_AFTER
                    ),
                    None,
                )
                master: dict[str, Any] = {}
                if status is not None:
                    master["status"] = int(status)
                address = next(
                    (
                        e.detail.get("newAddress")
                        for e in reversed(new)
                        if e.detail_case == "address_changed"
                    ),
                    None,
                )
                if address:
                    master["registered_address"] = address
                if master:
                    await facts.update_master(session, company, master)
                effect = await self._rescore(session, company)
                happened = [
                    (
                        EventFact(e.event_id, e.event, e.detail_case, e.detail, e.source),
                        e.event.occurred_at or _now(),
                    )
                    for e in new
                ]
                effects[company] = await self._alert(session, effect, happened)
        ordered = [effects[c] for c in dict.fromkeys(i.company for i in incoming) if c in effects]
        self._written(ordered)
        return recorded, duplicates, ordered

    async def upsert_company(
        self, company: CompanyId, values: dict[str, Any]
    ) -> tuple[bool, facts.MasterData, Effect]:
        """Write master data (Company field names → stored values); a status
        change re-scores (a status can force a class). Alerts: changed fields of
        known master data, and any score change. Returns (created, master data
        after, effect)."""
        async with self._sessions.begin() as session:
            await facts.lock_company(session, company)
            created, changed, updated = await facts.update_master(session, company, values)
            if "status" in updated:
                effect = await self._rescore(session, company)
                fact = MasterDataFact(tuple(changed or updated))
                change = Change(
                    fact, effect.previous, effect.score, _now(), fact_alert=bool(changed)
                )
                counts = await alerts.write(session, [(company, change)])
                effect = dataclasses.replace(effect, alerts_raised=counts.get(company, 0))
            else:
                latest = await facts.latest_score(session, company)
                effect = Effect(company, latest, latest)
                if changed:
                    effect = await self._alert(
                        session, effect, [(MasterDataFact(tuple(changed)), _now())]
                    )
            master = await facts.master_data(session, company)
        assert master is not None
        self._written([effect])
        return created, master, effect

    async def report_payment(self, tenant: uuid.UUID, report: PaymentReport) -> tuple[bool, Effect]:
        """Store a tenant's overdue invoice and re-score the company on the pooled
        payment data; alerts say only that payment data changed."""
        async with self._sessions.begin() as session:
            await facts.lock_company(session, company := report.company)
            created = await facts.payment_experience_put(
                session, tenant, report.invoice_id, company, report.values
            )
            effect = await self._rescore(session, company)
            fact = RescoreFact(RescoreReason.PAYMENT_DATA, self._registry.active.version)
            effect = await self._alert(session, effect, [(fact, _now())])
        self._written([effect])
        return created, effect

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
