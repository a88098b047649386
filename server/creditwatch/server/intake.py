"""Company-data intake: store a fact, re-score, write the alerts, in ONE transaction.

Each intake locks the company row, stores the fact, re-scores the company from
everything stored, compares with the previous score and writes the alerts it
causes for every watch list (of every tenant) that holds the company. A crash
at any point leaves either all of it or none of it: nothing is "scored later
and maybe lost", and no alert exists for a fact that was not stored.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, TypeAlias

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server import metrics
from creditwatch.server.domain.alerts import (
    Change,
    EventFact,
    Fact,
    MasterDataFact,
    RescoreFact,
    RescoreReason,
    StatementFact,
)
from creditwatch.server.domain.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
)
from creditwatch.server.domain.events import (
    EVENT_OF_STATUS,
    STATUS_AFTER,
    CompanyEvent,
    CompanyStatus,
    EventType,
    risk_state,
)
from creditwatch.server.domain.financials import FinancialStatement
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.scores import StoredScore
from creditwatch.server.scoring.engine import Scorer, ScoreRequest
from creditwatch.server.scoring.registry import ModelRegistry
from creditwatch.server.store import alerts, facts, rescoring
from creditwatch.server.store import limits as credit_limits
from creditwatch.server.store.activations import ActivationStore
from creditwatch.server.store.score_cache import ScoreCache


@dataclass(frozen=True)
class Effect:
    """What an intake did to one company: its score before and after, and how
    many alerts it wrote (for all tenants; `Intake.report_payment` answers with
    the reporting tenant's own)."""

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


KEPT_SECONDS = 5.0
"""How long a replica keeps serving another model version's scores before it
looks again whether it should replace them (an activation may have happened)."""

STATUS_SOURCE = "UpsertCompany"
"""The source of the event alerts that statuses set by UpsertCompany raise."""


def _now() -> datetime:
    return datetime.now(UTC)


async def score_companies(
    session: AsyncSession,
    scorer: Scorer,
    companies: Sequence[CompanyId],
    origin: str = "intake",
) -> dict[CompanyId, Effect]:
    """Re-score locked companies from their stored facts in bulk: one model run
    and a handful of statements for the lot; stores the new scores. A company
    that had a score and now has nothing to be scored on (an override lifted,
    no statement) loses it: its effect's score is None, which its alerts tell."""
    known = await rescoring.read(session, companies, scorer.policy.overdue_days)
    requests = [
        ScoreRequest(
            known.statements.get(c),
            risk_state(
                known.events.get(c, []),
                known.status.get(c, 0),
                known.overdue.get(c, 0),
                known.status_time.get(c),
                known.overdue_creditors.get(c, 0),
            ),
        )
        for c in companies
    ]
    scores = await scorer.score_many(requests)
    scored = [(c, s) for c, s in zip(companies, scores, strict=True) if s is not None]
    await rescoring.add_scores(session, scored, scorer.policy.tag)
    # Left as it was, the old score would go on being served as current: a
    # class D whose bankruptcy status was set back to ACTIVE, say.
    await facts.end_scores(
        session,
        [c for c, s in zip(companies, scores, strict=True) if s is None and c in known.scores],
    )
    metrics.SCORES.labels(origin).inc(len(scored))
    return {c: Effect(c, s, known.scores.get(c)) for c, s in zip(companies, scores, strict=True)}


# Events that set the register status (or the address).
_MASTER_EVENTS = (*STATUS_AFTER, EventType.ADDRESS_CHANGED)


def _day(at: datetime | None) -> date:
    return (at or _now()).astimezone(UTC).date()


Recorded: TypeAlias = Mapping[tuple[CompanyId, EventType], Sequence[tuple[datetime, datetime]]]
"""Stored events per company and type: (when each happened, when recorded)."""


def _sets_status(
    company: CompanyId,
    kind: EventType,
    occurred_at: datetime | None,
    recorded: Recorded,
    status: tuple[int, datetime | None],
) -> bool:
    """Whether a status event of `kind` sets the company's register status
    (`status`: the status it has and when that took effect), given the
    stored events (`recorded`). A late report of an old event (a liquidation
    of 2019 sent today) must not undo a newer status: stored status events
    and the status's own time are compared by day, as registers date events.
    Between statuses the graver one (CompanyStatus grows graver with its
    value) stands on the same day, and an older event's still applies when
    graver (a bankruptcy reported late outranks the ACTIVE of a master-data
    update), unless it is a copy of news the status was set back from: a
    stored event of its kind dated that day or later, recorded before the
    status took effect (an annulment)."""
    day = _day(occurred_at)
    current, since = status
    before = [_day(since)] if since is not None else []
    before += [_day(at) for t in STATUS_AFTER for at, _ in recorded.get((company, t), ())]
    if all(day > earlier for earlier in before):
        return True
    grade = STATUS_AFTER[kind]
    if (
        grade != current
        and since is not None
        and any(
            _day(at) >= day and at_recorded <= since
            for at, at_recorded in recorded.get((company, kind), ())
        )
    ):
        return False
    return grade > current or (grade == current and all(day >= b for b in before))


def _told(
    company: CompanyId,
    items: Sequence[IncomingEvent],
    stored: Recorded,
    status: tuple[int, datetime | None],
    now: datetime,
) -> list[tuple[IncomingEvent, datetime | None]]:
    """A company's new events (in time order), each with when the watchers
    were told its news already (`Change.fact_told_at`), or None.

    An event that sets a register status repeats news told by a fact of its
    kind dated the same day or later (by day, as registers date events): the
    status the company already has, set at `status`'s time
    (UpsertCompany(BANKRUPT) alerted as a bankruptcy opened then, so the
    feed's own bankruptcy event that follows tells nothing new); a stored
    event of its kind (`stored`: when each happened and was recorded, so
    alerted: a second source's copy); or an event of its kind earlier in
    this call, which tells every watcher now. The news was told at the
    latest of those times. An undated event repeats any such news, and so
    does one of any date while the company still holds the status such news
    set: one proceeding, dated otherwise (a second source's date, a
    dissolution's remaining ground once the earliest is cured). One after the
    status was set back (ACTIVE: an annulment), or while the company holds
    another status, is news unless a stored event of its kind is dated that
    day or later. The status moves on through the call's events as
    `_sets_status` says each sets it."""
    current, since = status
    known = {(company, k): list(stored.get((company, k), ())) for k in STATUS_AFTER}
    told: dict[EventType, list[tuple[date, datetime]]] = {}
    for kind, grade in STATUS_AFTER.items():
        heard = [(_day(at), recorded) for at, recorded in known[company, kind]]
        if grade == current and since is not None:
            heard.append((_day(since), since))
        told[kind] = heard
    flagged: list[tuple[IncomingEvent, datetime | None]] = []
    for item in items:
        kind = item.event.type
        if kind not in STATUS_AFTER:
            flagged.append((item, None))
            continue
        day = _day(item.event.occurred_at or now)
        if item.event.occurred_at is None and told[kind]:
            # Undated: no telling it from what was told, so taken for it.
            flagged.append((item, max(at for _, at in told[kind])))
            continue
        if STATUS_AFTER[kind] == current and told[kind]:
            times = [at for _, at in told[kind]]
        else:
            times = [at for told_day, at in told[kind] if told_day >= day]
        flagged.append((item, max(times) if times else None))
        told[kind].append((day, now))
        occurred = item.event.occurred_at or now
        if _sets_status(company, kind, occurred, known, (current, since)):
            current, since = STATUS_AFTER[kind], occurred
        known[company, kind].append((occurred, now))
    return flagged


def _master_after(
    company: CompanyId,
    events: Sequence[IncomingEvent],
    recorded: Recorded,
    status: tuple[int, datetime | None],
) -> tuple[dict[str, Any], datetime | None]:
    """Master-data fields the new (time-ordered) events set, and when the
    status they set took effect: the register status where the events leave
    it, walked through them one by one as `_told` walks them (each sets it
    as `_sets_status` says, given the stored events and the call's earlier
    ones), so the status and the alerts agree however the events are split
    over calls; and the address from the latest move, unless a stored move
    is dated later (a late report of an old move must not undo a newer
    address)."""
    master: dict[str, Any] = {}
    at = None
    now = _now()
    current, since = status
    known = {(company, k): list(recorded.get((company, k), ())) for k in STATUS_AFTER}
    moved_status = False
    for item in events:
        kind = item.event.type
        if kind not in STATUS_AFTER:
            continue
        occurred = item.event.occurred_at or now
        if _sets_status(company, kind, occurred, known, (current, since)):
            current, since, moved_status = STATUS_AFTER[kind], occurred, True
        known[company, kind].append((occurred, now))
    if moved_status:
        master["status"] = int(current)
        at = since
    moved = next((e for e in reversed(events) if e.event.type == EventType.ADDRESS_CHANGED), None)
    if moved is not None and moved.detail.get("newAddress"):
        day = _day(moved.event.occurred_at)
        stored = recorded.get((company, EventType.ADDRESS_CHANGED), ())
        if all(day >= _day(earlier) for earlier, _ in stored):
            master["registered_address"] = moved.detail["newAddress"]
    return master, at


async def write_alerts(
    session: AsyncSession, changes: Sequence[tuple[CompanyId, Change]]
) -> dict[CompanyId, int]:
    """Re-decide the standing credit limits of companies whose risk got worse,
    then write every alert the changes and those limit changes raise; all in
    the caller's transaction. Returns the number written per company."""
    written = await write_alerts_per_tenant(session, changes)
    return {company: tenants.total() for company, tenants in written.items()}


async def write_alerts_per_tenant(
    session: AsyncSession, changes: Sequence[tuple[CompanyId, Change]]
) -> dict[CompanyId, Counter[uuid.UUID]]:
    """`write_alerts`, counted per company and tenant."""
    limits = await credit_limits.redecide_on_risk(
        session, [(c, change) for c, change in changes if change.score_alerts], _now()
    )
    return await alerts.write_per_tenant(session, changes, limits)


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
        # Model versions whose stored scores this replica serves as they are
        # (see score_company), until when.
        # (version, this replica's model and activation time when decided) →
        # until when: a change of this replica's own model voids the decision.
        self._kept: dict[tuple[str, str, datetime | None], float] = {}

    def _written(self, effects: Sequence[Effect]) -> None:
        """Committed: this replica's score cache forgets the companies at once,
        and alerts wake its hub, neither waiting for NOTIFY."""
        if self._cache is not None:
            self._cache.forget([e.company for e in effects])
        if self._on_alerts is not None and any(e.alerts_raised for e in effects):
            self._on_alerts()

    async def _rescore(self, session: AsyncSession, company: CompanyId) -> Effect:
        """Re-score one locked company: its facts in one statement (the bulk
        path's, for a single company), then its score appended."""
        return (await score_companies(session, self._registry.active, [company]))[company]

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
        counts = await write_alerts(session, changes)
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
            if await facts.statement_stored(session, company, statement):
                # A retry, or the same accounts sent again: nothing changes,
                # so nothing is re-scored or alerted.
                latest = await facts.latest_score(session, company)
                return True, Effect(company, latest, latest)
            replaced = await facts.put_statement(session, company, statement, source, by)
            effect = await self._rescore(session, company)
            fact = StatementFact(statement.period_start, statement.period_end)
            effect = await self._alert(session, effect, [(fact, _now())])
        self._written([effect])
        metrics.INTAKE.labels("financial_statement").inc()
        return replaced, effect

    async def record_events(
        self, incoming: Sequence[IncomingEvent], by: uuid.UUID | None
    ) -> tuple[int, list[str], list[Effect]]:
        """Store new events (duplicates by event id are skipped), re-score each
        company that got one and raise its alerts, all in one transaction and in
        bulk; returns (recorded, duplicate ids, effects in order of first
        appearance)."""
        companies = list(dict.fromkeys(i.company for i in incoming))
        async with self._sessions.begin() as session:
            await rescoring.ensure_and_lock(session, companies)
            recorded = await facts.event_times(session, companies, _MASTER_EVENTS)
            known = await facts.statuses(session, companies)
            stored, conflicts = await rescoring.add_events(
                session,
                [
                    rescoring.NewEvent(i.company, i.event_id, i.event, i.detail, i.source)
                    for i in incoming
                ],
                by,
            )
            for item in incoming:
                if (item.company, item.event_id) in conflicts:
                    # Raising rolls the whole call back: nothing of it is written.
                    raise InvalidArgument.single(
                        f"events[{item.index}].event_id",
                        f"{item.event_id!r} was recorded earlier with different content",
                    )
            new: dict[CompanyId, list[IncomingEvent]] = {}
            duplicates: list[str] = []
            for item in incoming:
                if (item.company, item.event_id) in stored:
                    new.setdefault(item.company, []).append(item)
                else:
                    duplicates.append(item.event_id)
            for company, items in new.items():
                items.sort(key=lambda e: (e.event.occurred_at or _now(), e.index))
                master, status_at = _master_after(
                    company, items, recorded, known.get(company, (0, None))
                )
                if master:
                    await facts.update_master(session, company, master, status_at)
            changed = [c for c in companies if c in new]
            effects = await score_companies(session, self._registry.active, changed)
            changes = [
                (
                    company,
                    Change(
                        EventFact(e.event_id, e.event, e.detail_case, e.detail, e.source),
                        effects[company].previous,
                        effects[company].score,
                        e.event.occurred_at or _now(),
                        score_alerts=i == len(new[company]) - 1,
                        fact_told_at=told,
                    ),
                )
                for company in changed
                for i, (e, told) in enumerate(
                    _told(company, new[company], recorded, known.get(company, (0, None)), _now())
                )
            ]
            counts = await write_alerts(session, changes)
        ordered = [dataclasses.replace(effects[c], alerts_raised=counts.get(c, 0)) for c in changed]
        self._written(ordered)
        metrics.INTAKE.labels("event").inc(len(stored))
        return len(stored), duplicates, ordered

    async def upsert_company(
        self,
        company: CompanyId,
        values: dict[str, Any],
        *,
        keep_risk_status: bool = False,
        source: str = "",
    ) -> tuple[bool, facts.MasterData, Effect]:
        """Write master data (Company field names → stored values); a status
        change re-scores (a status can force a class). Alerts: changed fields of
        known master data, and any score change. Returns (created, master data
        after, effect). With `keep_risk_status`, an ACTIVE status is written
        only over no status or ACTIVE: a register's routine update of a unit
        without flags must not undo a bankruptcy another source reported
        before the register flagged it. It is written over a risk status that
        `source` (the register) set by its own events and no other source
        ever told: the register's flag was lifted (while nobody watched the
        company, say), and it was the only one to say the flag was there."""
        async with self._sessions.begin() as session:
            # Created: the company was never mentioned before (a statement, an
            # event or a watch list creates it with empty master data too).
            created = await facts.lock_company(session, company)
            before: tuple[int, datetime | None] = (0, None)
            if "status" in values:
                before = (await facts.statuses(session, [company])).get(company, (0, None))
            if (
                keep_risk_status
                and values.get("status") == int(CompanyStatus.ACTIVE)
                and before[0] not in (0, int(CompanyStatus.ACTIVE))
            ):
                kind = EVENT_OF_STATUS.get(CompanyStatus(before[0]))
                lifted = (
                    bool(source)
                    and kind is not None
                    and await facts.status_told_only_by(session, company, kind, source)
                )
                if not lifted:
                    values = {name: v for name, v in values.items() if name != "status"}
            _, changed, updated = await facts.update_master(session, company, values)
            if "status" in updated:
                now = _now()
                told_at: datetime | None = None
                raised: list[tuple[Fact, bool]] = []  # (fact, whether it alerts itself)
                kind = EVENT_OF_STATUS.get(CompanyStatus(values["status"]))
                if kind is not None:
                    # Handled like the matching event dated now (the contract):
                    # alerted as that event. Not stored as one: the status
                    # alone forces the class, so setting it back (a feed's
                    # mistake, an annulled bankruptcy) lifts the override.
                    event_id = f"status:{kind.name.lower()}:{now.isoformat()}"
                    event = CompanyEvent(kind, now)
                    changed = [name for name in changed if name != "status"]
                    raised.append(
                        (EventFact(event_id, event, kind.name.lower(), {}, STATUS_SOURCE), True)
                    )
                    # Like that event, it tells no news a stored event of its
                    # kind told already (a status set back and set again the
                    # same day: one bankruptcy, alerted once).
                    recorded = await facts.event_times(session, [company], _MASTER_EVENTS)
                    incoming = IncomingEvent(company, event_id, event, {}, STATUS_SOURCE, 0)
                    told_at = _told(company, [incoming], recorded, before, now)[0][1]
                if changed or not raised:
                    raised.insert(0, (MasterDataFact(tuple(changed or updated)), bool(changed)))
                effect = await self._rescore(session, company)
                changes = [
                    (
                        company,
                        Change(
                            fact,
                            effect.previous,
                            effect.score,
                            now,
                            score_alerts=i == len(raised) - 1,
                            fact_alert=alerting,
                            fact_told_at=told_at if isinstance(fact, EventFact) else None,
                        ),
                    )
                    for i, (fact, alerting) in enumerate(raised)
                ]
                counts = await write_alerts(session, changes)
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
        metrics.INTAKE.labels("master_data").inc()
        return created, master, effect

    async def report_payment(self, tenant: uuid.UUID, report: PaymentReport) -> tuple[bool, Effect]:
        """Store a tenant's overdue invoice and re-score the company on the pooled
        payment data; alerts say only that payment data changed. The effect
        counts only the alerts written for the reporting tenant's own watch
        lists: any tenant may report (no grant), so a count of every tenant's
        would tell it whether others watch the company."""
        company = report.company
        async with self._sessions.begin() as session:
            # An invoice reported again on another company moves to it: the
            # company it leaves is re-scored too (its overdue count drops).
            before = await facts.invoice_company(session, tenant, report.invoice_id)
            companies = sorted({company} if before in (None, company) else {company, before})
            await rescoring.ensure_and_lock(session, companies)
            created = await facts.payment_experience_put(
                session, tenant, report.invoice_id, company, report.values
            )
            scored = await score_companies(session, self._registry.active, companies)
            fact = RescoreFact(RescoreReason.PAYMENT_DATA, self._registry.active.version)
            now = _now()
            written = await write_alerts_per_tenant(
                session,
                [(c, Change(fact, scored[c].previous, scored[c].score, now)) for c in companies],
            )
        none: Counter[uuid.UUID] = Counter()
        # Every tenant's alerts wake this replica's hub at once; the caller
        # hears only of its own.
        self._written(
            [
                dataclasses.replace(e, alerts_raised=written.get(c, none).total())
                for c, e in scored.items()
            ]
        )
        metrics.INTAKE.labels("payment_experience").inc()
        own = written.get(company, none)[tenant]
        return created, dataclasses.replace(scored[company], alerts_raised=own)

    async def score_company(self, company: CompanyId) -> tuple[StoredScore, bool]:
        """The current score, computing and storing one from stored facts if there
        is none, or if it was made by another model version than the activated
        one (an activation re-scores watched companies in the scheduled job;
        this keeps every other company's score, a prospect's an insurer limits
        on, say, from being served from the old model for good). A replaced
        score raises the alerts a re-score would. Returns (score, computed)."""
        scorer = self._registry.active

        def current(score: StoredScore) -> bool:
            # A replica without the activated model serves what is stored
            # rather than replace it with its own model's score; and so does
            # one that found it should not replace that version (memoised:
            # it takes a query to know).
            version = score.model_version
            return (
                version == scorer.version
                or not self._registry.in_step
                or self._kept.get(self._kept_key(version), 0.0) > time.monotonic()
            )

        if self._cache is not None:
            cached = self._cache.get(company)
            if cached is not None and current(cached):
                return cached, False
            generation = self._cache.generation
        async with self._sessions() as session:
            stored = await facts.latest_score(session, company)
        if stored is not None and (current(stored) or not await self._replaces(stored)):
            if self._cache is not None:
                self._cache.put(company, stored, generation)
            return stored, False
        async with self._sessions.begin() as session:
            if not await facts.company_known(session, company):
                raise NotFound(f"companies/{company.key}")
            await facts.lock_company(session, company)
            raced = await facts.latest_score(session, company)
            if raced is not None and (current(raced) or raced != stored):
                return raced, False  # scored while we waited for the lock
            effect = await self._rescore(session, company)
            if effect.previous is not None:
                fact = RescoreFact(RescoreReason.MODEL_CHANGED, scorer.version)
                change = Change(fact, effect.previous, effect.score, _now(), fact_alert=False)
                counts = await write_alerts(session, [(company, change)])
                effect = dataclasses.replace(effect, alerts_raised=counts.get(company, 0))
        self._written([effect])
        if effect.score is None:
            raise FailedPrecondition(
                f"{company.key} has no financial statement and no event that decides its class",
                [
                    PreconditionViolation(
                        "NO_FINANCIAL_STATEMENT",
                        f"companies/{company.key}",
                        "submit a financial statement to have the company scored",
                    )
                ],
            )
        return effect.score, True

    def _kept_key(self, version: str) -> tuple[str, str, datetime | None]:
        return version, self._registry.active.version, self._registry.activated_at

    async def _replaces(self, stored: StoredScore) -> bool:
        """Whether this replica's active model is the one to replace a score
        `stored` by another version: the activated one (read afresh: a replica
        learns of an activation only at its next look); or, when none was ever
        activated, a newer model than the score's (so that replicas of a
        rolling deploy with different default models do not undo each other)."""
        scorer = self._registry.active
        activated = await ActivationStore(self._sessions).current()
        if activated is not None:
            replaces = activated[0] == scorer.version
        elif not self._registry.has(stored.model_version):
            replaces = False
        else:
            made_by = self._registry.get(stored.model_version).model.info.created
            replaces = made_by < scorer.model.info.created
        if not replaces:
            if len(self._kept) > 100:  # versions come and go; keep it small
                self._kept.clear()
            self._kept[self._kept_key(stored.model_version)] = time.monotonic() + KEPT_SECONDS
        return replaces

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
