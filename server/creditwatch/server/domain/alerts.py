"""Alert rules: which alerts a change to a company raises for each watch list.

Pure logic. An intake (a fact, or a re-score without one) becomes a `Change`:
the fact, the score before and after. `plan` turns it into alerts for every
watch list that holds the company, applying each list's rules (types,
minimum severity, minimum class change, PD threshold) and computing priority
and a suggested action. The default credit policy below is what suggests
actions until a tenant configures its own (credit-limit issue).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from creditwatch.server.domain.cursors import Position
from creditwatch.server.domain.events import CompanyEvent, EventType
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.scores import RiskClass, StoredScore
from creditwatch.server.domain.watchlists import AlertRules


class AlertType(enum.IntEnum):
    """Alert types; values match the wire enum AlertType."""

    RISK_CLASS_DOWNGRADE = 1
    RISK_CLASS_UPGRADE = 2
    PD_THRESHOLD_CROSSED = 3
    BANKRUPTCY_PETITION = 4
    BANKRUPTCY_HEARING = 5
    BANKRUPTCY_OPENED = 6
    COMPULSORY_DISSOLUTION = 7
    VOLUNTARY_LIQUIDATION = 8
    PAYMENT_REMARK_REGISTERED = 9
    PAYMENT_REMARK_REMOVED = 10
    COLLECTION_CASE_OPENED = 11
    COLLECTION_CASE_CLOSED = 12
    RESPONSIBLE_PERSON_CHANGED = 13
    FINANCIAL_STATEMENT_PUBLISHED = 14
    CREDIT_LIMIT_REDUCED = 15
    CREDIT_LIMIT_WITHDRAWN = 16
    DELETED_FROM_REGISTER = 17
    ADDRESS_CHANGED = 18
    MASTER_DATA_CHANGED = 19
    CLAIM_ELIGIBLE = 20


class Severity(enum.IntEnum):
    """Severities; values match the wire enum Severity."""

    INFO = 1
    LOW = 2
    MEDIUM = 3
    HIGH = 4
    CRITICAL = 5


class SuggestedAction(enum.IntEnum):
    """Suggested actions; values match the wire enum SuggestedAction."""

    NONE = 1
    MONITOR = 2
    REVIEW = 3
    REDUCE_LIMIT = 4
    REQUIRE_PREPAYMENT = 5
    STOP_CREDIT = 6
    ROOM_TO_GROW = 7


# What alerts suggest for a company that moves into each class, in the default
# credit policy (domain.limits.DEFAULT_POLICY); a tenant's own policy sets
# its own (ClassPolicy.suggested_action).
DEFAULT_CLASS_ACTIONS: Mapping[RiskClass, SuggestedAction] = MappingProxyType(
    {
        RiskClass.A: SuggestedAction.ROOM_TO_GROW,
        RiskClass.B: SuggestedAction.MONITOR,
        RiskClass.C: SuggestedAction.REDUCE_LIMIT,
        RiskClass.D: SuggestedAction.REQUIRE_PREPAYMENT,
    }
)


class RescoreReason(enum.IntEnum):
    """Why a company was re-scored without a new fact; wire enum RescoreReason."""

    MODEL_CHANGED = 1
    SCHEDULED = 2
    PAYMENT_DATA = 3
    POLICY_CHANGED = 4


# Priority = severity weight x exposure (documented on Alert.priority).
SEVERITY_WEIGHT = {
    Severity.INFO: 1,
    Severity.LOW: 2,
    Severity.MEDIUM: 4,
    Severity.HIGH: 8,
    Severity.CRITICAL: 16,
}

# The alert each event raises, and its severity.
EVENT_ALERTS: dict[EventType, tuple[AlertType, Severity]] = {
    EventType.BANKRUPTCY_PETITION_FILED: (AlertType.BANKRUPTCY_PETITION, Severity.HIGH),
    EventType.BANKRUPTCY_HEARING_SCHEDULED: (AlertType.BANKRUPTCY_HEARING, Severity.HIGH),
    EventType.BANKRUPTCY_OPENED: (AlertType.BANKRUPTCY_OPENED, Severity.CRITICAL),
    EventType.COMPULSORY_DISSOLUTION: (AlertType.COMPULSORY_DISSOLUTION, Severity.CRITICAL),
    EventType.VOLUNTARY_LIQUIDATION: (AlertType.VOLUNTARY_LIQUIDATION, Severity.MEDIUM),
    EventType.PAYMENT_REMARK_REGISTERED: (AlertType.PAYMENT_REMARK_REGISTERED, Severity.LOW),
    EventType.PAYMENT_REMARK_REMOVED: (AlertType.PAYMENT_REMARK_REMOVED, Severity.INFO),
    EventType.DEBT_COLLECTION_OPENED: (AlertType.COLLECTION_CASE_OPENED, Severity.MEDIUM),
    EventType.DEBT_COLLECTION_CLOSED: (AlertType.COLLECTION_CASE_CLOSED, Severity.INFO),
    EventType.RESPONSIBLE_PERSON_CHANGED: (AlertType.RESPONSIBLE_PERSON_CHANGED, Severity.INFO),
    EventType.ADDRESS_CHANGED: (AlertType.ADDRESS_CHANGED, Severity.INFO),
    EventType.DELETED_FROM_REGISTER: (AlertType.DELETED_FROM_REGISTER, Severity.CRITICAL),
}

_EVENT_TEXT = {
    EventType.BANKRUPTCY_PETITION_FILED: "Bankruptcy petition filed",
    EventType.BANKRUPTCY_HEARING_SCHEDULED: "Bankruptcy hearing scheduled",
    EventType.BANKRUPTCY_OPENED: "Bankruptcy opened",
    EventType.COMPULSORY_DISSOLUTION: "Compulsory dissolution ordered",
    EventType.VOLUNTARY_LIQUIDATION: "Voluntary liquidation resolved",
    EventType.PAYMENT_REMARK_REGISTERED: "Payment remark registered",
    EventType.PAYMENT_REMARK_REMOVED: "Payment remark removed",
    EventType.DEBT_COLLECTION_OPENED: "Debt collection case opened",
    EventType.DEBT_COLLECTION_CLOSED: "Debt collection case closed",
    EventType.RESPONSIBLE_PERSON_CHANGED: "Responsible person changed",
    EventType.ADDRESS_CHANGED: "Registered address changed",
    EventType.DELETED_FROM_REGISTER: "Deleted from the register",
}

# Alert types whose MEDIUM severity asks for a smaller limit rather than a review.
_LIMIT_PRESSURE = {
    AlertType.RISK_CLASS_DOWNGRADE,
    AlertType.PD_THRESHOLD_CROSSED,
    AlertType.COLLECTION_CASE_OPENED,
    AlertType.CREDIT_LIMIT_REDUCED,
}
# A set, not a tuple of enum attributes looked up on every call: a re-score
# plans alerts for tens of thousands of companies.
_CLASS_CHANGES = frozenset({AlertType.RISK_CLASS_DOWNGRADE, AlertType.RISK_CLASS_UPGRADE})
# The most classes a change can move (A to D): what rule `minimum_class_change`
# (1..3) can ask for at most.
_MOST_CLASS_STEPS = int(RiskClass.D) - int(RiskClass.A)


@dataclass(frozen=True)
class EventFact:
    """A recorded company event; `detail` is the event's wire detail as JSON."""

    event_id: str
    event: CompanyEvent
    detail_case: str
    detail: dict[str, Any]
    source: str


@dataclass(frozen=True)
class StatementFact:
    """A new or restated financial statement."""

    period_start: date
    period_end: date


@dataclass(frozen=True)
class RescoreFact:
    """A re-score without a new fact about the company."""

    reason: RescoreReason
    model_version: str


@dataclass(frozen=True)
class MasterDataFact:
    """Register master data changed; `changed_fields` are Company field names."""

    changed_fields: tuple[str, ...]


Fact = EventFact | StatementFact | RescoreFact | MasterDataFact


@dataclass(frozen=True)
class Change:
    """What one intake did to one company."""

    fact: Fact
    previous: StoredScore | None
    score: StoredScore | None
    occurred_at: datetime
    score_alerts: bool = True
    """Raise risk-class and PD-threshold alerts (False for all but the last of
    several facts applied together, so score alerts are raised once)."""
    fact_alert: bool = True
    """Raise the fact's own alert (False when only the score change matters)."""
    fact_told_at: datetime | None = None
    """When the watchers were told this fact's news already, if they were: a
    register status it repeats was set then (UpsertCompany(BANKRUPT) alerted
    as a bankruptcy opened), or an event it repeats (the same kind, dated the
    same day or later) happened then. A watch list that held the company by
    then gets no alert of the fact itself (its score alerts still come); one
    added since does, as it never heard. None: nobody was told."""
    previous_reasons_text: str | None = None
    score_reasons_text: str | None = None
    """The scores' reasons as stored JSON text, when the caller has it (a
    re-score does): the alerts' and limit decisions' copies of the scores use
    it as is, and the score's own `reasons` may then be left empty (a re-score
    does not decode the reasons of the scores it alerts on; nothing that plans
    alerts reads them). It must be `previous`'s and `score`'s own: a copy of a
    Change with another score must drop or replace the text too."""

    @property
    def moves_class(self) -> bool:
        """Whether the change moves the company to another risk class (a
        risk-class alert for any watch list whose rules want it)."""
        before, after = self.previous, self.score
        return (
            self.score_alerts
            and before is not None
            and after is not None
            and before.risk_class != after.risk_class
        )

    @property
    def ends_score(self) -> bool:
        """Whether the change ends the company's score: it had one and now has
        nothing to be scored on (an override that forced class D was lifted,
        and there is no financial statement). Raises a risk-class upgrade
        alert without a score after (see `_class_candidate`)."""
        return self.score_alerts and self.previous is not None and self.score is None


@dataclass(frozen=True)
class Watcher:
    """A watch list entry holding the changed company, with its list's rules."""

    tenant_id: Any
    watch_list_id: Any
    rules: AlertRules
    pd_threshold: float
    exposure_currency: str | None = None
    exposure_amount: Decimal | None = None
    external_reference: str = ""
    since: datetime | None = None
    """When the entry was added to the list (None: unknown, as if just now)."""
    class_actions: Mapping[RiskClass, SuggestedAction] = field(
        default_factory=lambda: DEFAULT_CLASS_ACTIONS, hash=False
    )
    """The action the list's tenant's credit policy suggests for a company that
    moves into each class (risk-class alerts take theirs from it)."""


@dataclass(frozen=True)
class Candidate:
    """An alert the change raises before any watch list's rules apply."""

    type: AlertType
    severity: Severity
    summary: str
    class_steps: int = 0
    """Classes moved, for risk-class alerts (rule `minimum_class_change`)."""


@dataclass(frozen=True)
class PlannedAlert:
    """An alert to write for one watch list."""

    watcher: Watcher
    type: AlertType
    severity: Severity
    priority: float
    suggested_action: SuggestedAction
    summary: str


def _pct(pd: float) -> str:
    return f"{pd * 100:.2f} %"


def _class_text(change: Change) -> str:
    before, after = change.previous, change.score
    if before is not None and after is None:
        return f"risk class {before.risk_class.name} → unscored"
    if before is None or after is None or before.risk_class == after.risk_class:
        return ""
    return f"risk class {before.risk_class.name} → {after.risk_class.name}"


def _fact_candidate(change: Change) -> Candidate | None:
    fact = change.fact
    moved = _class_text(change)
    suffix = f"; {moved}" if moved else ""
    if isinstance(fact, EventFact):
        alert_type, severity = EVENT_ALERTS[fact.event.type]
        if (
            fact.event.type == EventType.RESPONSIBLE_PERSON_CHANGED
            and change.score is not None
            and change.score.risk_class >= RiskClass.C
        ):
            severity = Severity.MEDIUM
        return Candidate(alert_type, severity, _EVENT_TEXT[fact.event.type] + suffix)
    if isinstance(fact, StatementFact):
        text = f"Financial statement for {fact.period_start} to {fact.period_end} received"
        return Candidate(AlertType.FINANCIAL_STATEMENT_PUBLISHED, Severity.INFO, text + suffix)
    if isinstance(fact, MasterDataFact):
        text = "Register data changed: " + ", ".join(fact.changed_fields)
        return Candidate(AlertType.MASTER_DATA_CHANGED, Severity.INFO, text + suffix)
    return None


def _class_candidate(change: Change) -> Candidate | None:
    before, after = change.previous, change.score
    if change.ends_score and before is not None:
        return _ended_candidate(before)
    if not change.moves_class or before is None or after is None:
        return None
    steps = int(after.risk_class) - int(before.risk_class)
    text = (
        f"Risk class {before.risk_class.name} → {after.risk_class.name} "
        f"(PD {_pct(before.probability_of_default)} → {_pct(after.probability_of_default)})"
    )
    if steps < 0:
        return Candidate(AlertType.RISK_CLASS_UPGRADE, Severity.LOW, text, -steps)
    if after.risk_class == RiskClass.D:
        severity = Severity.HIGH
    elif steps >= 2:
        severity = Severity.MEDIUM
    else:
        severity = Severity.LOW
    return Candidate(AlertType.RISK_CLASS_DOWNGRADE, severity, text, steps)


def _ended_candidate(before: StoredScore) -> Candidate:
    """The alert for a score that ended (`Change.ends_score`).

    RISK_CLASS_UPGRADE, not a new wire type: the company leaves the class it
    was in (always D: only an override scores a company without a statement),
    as a downgrade told the watchers it entered it, and a list that follows
    risk classes only must hear that the class no longer holds. The alert has
    no score after, which is how an integrator tells it from an upgrade to a
    class. It passes any `minimum_class_change` (the class it would move to is
    unknown, so it counts as the largest move) and suggests a review whatever
    the credit policy says for a class: there is no class to act on.
    """
    return Candidate(
        AlertType.RISK_CLASS_UPGRADE,
        Severity.LOW,
        f"Risk class {before.risk_class.name} → unscored "
        f"(PD {_pct(before.probability_of_default)} → none): what set class "
        f"{before.risk_class.name} no longer applies, and there is no financial statement "
        "to score",
        _MOST_CLASS_STEPS,
    )


def candidates(change: Change) -> list[Candidate]:
    """Alerts the change raises for any watch list, before rules and thresholds."""
    found = [
        _fact_candidate(change) if change.fact_alert else None,
        _class_candidate(change),
    ]
    return [c for c in found if c is not None]


def threshold_candidate(change: Change, threshold: float) -> Candidate | None:
    """A PD-threshold alert when the PD rose from at or below `threshold` to above it."""
    if threshold <= 0 or change.score is None:
        return None
    after = change.score.probability_of_default
    before = change.previous.probability_of_default if change.previous else None
    if after <= threshold or (before is not None and before > threshold):
        return None
    shown = _pct(before) + " → " if before is not None else ""
    return Candidate(
        AlertType.PD_THRESHOLD_CROSSED,
        Severity.MEDIUM,
        f"PD {shown}{_pct(after)} crossed the watch list threshold {_pct(threshold)}",
    )


def suggested_action(
    candidate: Candidate,
    score: StoredScore | None,
    class_actions: Mapping[RiskClass, SuggestedAction] = DEFAULT_CLASS_ACTIONS,
) -> SuggestedAction:
    """The advice for an alert: for a risk-class change, what the credit policy
    (`class_actions`) says for a company in the new class; for any other
    alert, by its severity and type. A risk-class alert without a score after
    (the score ended) suggests a review: there is no class to act on."""
    if candidate.type in _CLASS_CHANGES:
        if score is None:
            return SuggestedAction.REVIEW
        return class_actions.get(score.risk_class, SuggestedAction.REVIEW)
    if candidate.severity == Severity.CRITICAL:
        return SuggestedAction.STOP_CREDIT
    if candidate.severity == Severity.HIGH:
        return SuggestedAction.REQUIRE_PREPAYMENT
    if candidate.severity == Severity.MEDIUM:
        if candidate.type in _LIMIT_PRESSURE:
            return SuggestedAction.REDUCE_LIMIT
        return SuggestedAction.REVIEW
    if candidate.severity == Severity.LOW:
        return SuggestedAction.MONITOR
    return SuggestedAction.NONE


def wanted(rules: AlertRules, candidate: Candidate) -> bool:
    """Whether a watch list's rules let this alert through."""
    if rules.alert_types and int(candidate.type) not in rules.alert_types:
        return False
    if rules.minimum_severity and int(candidate.severity) < rules.minimum_severity:
        return False
    if candidate.type in _CLASS_CHANGES:
        return candidate.class_steps >= max(1, rules.minimum_class_change)
    return True


def priority(severity: Severity, exposure: Decimal | None) -> float:
    """Severity weight x exposure in major units; 0 without exposure."""
    if exposure is None:
        return 0.0
    return float(SEVERITY_WEIGHT[severity] * exposure)


def plan(change: Change, watchers: Iterable[Watcher]) -> list[PlannedAlert]:
    """Every alert the change raises, one per (watch list, alert type) wanted."""
    common = candidates(change)
    told = change.fact_told_at
    # For a list that heard the fact's news already: the score's alerts only.
    heard = [c for c in common if c.type in _CLASS_CHANGES] if told is not None else common
    planned: list[PlannedAlert] = []
    for watcher in watchers:
        found: Sequence[Candidate] = common
        if told is not None and watcher.since is not None and watcher.since <= told:
            found = heard
        crossing = (
            threshold_candidate(change, watcher.pd_threshold) if change.score_alerts else None
        )
        if crossing is not None:
            found = [*found, crossing]
        for candidate in found:
            if not wanted(watcher.rules, candidate):
                continue
            planned.append(
                PlannedAlert(
                    watcher=watcher,
                    type=candidate.type,
                    severity=candidate.severity,
                    priority=priority(candidate.severity, watcher.exposure_amount),
                    suggested_action=suggested_action(
                        candidate, change.score, watcher.class_actions
                    ),
                    summary=candidate.summary,
                )
            )
    return planned


@dataclass(frozen=True)
class AlertFilter:
    """Which alerts a subscriber or a listing wants; every condition must hold.
    Empty sets mean "any"."""

    watch_lists: frozenset[Any] = frozenset()
    types: frozenset[int] = frozenset()
    minimum_severity: int = 0
    companies: frozenset[tuple[str, str]] = frozenset()

    def matches(self, alert: StoredAlert) -> bool:
        """Whether an alert passes the filter."""
        return (
            (not self.watch_lists or alert.watch_list_id in self.watch_lists)
            and (not self.types or int(alert.type) in self.types)
            and int(alert.severity) >= self.minimum_severity
            and (
                not self.companies
                or (alert.company.country, alert.company.register_number) in self.companies
            )
        )


@dataclass(frozen=True)
class StoredAlert:
    """An alert as written to the outbox."""

    tenant_id: Any
    position: Position
    id: Any
    watch_list_id: Any
    company: CompanyId
    type: AlertType
    severity: Severity
    priority: float
    company_legal_name: str
    external_reference: str
    exposure_currency: str | None
    exposure_amount: Decimal | None
    previous_score: StoredScore | None
    score: StoredScore | None
    trigger: dict[str, Any]
    """The fact as JSON: one of "event", "financial_statement", "rescoring",
    "master_data_change" (see `trigger_json`)."""
    suggested_action: SuggestedAction
    summary: str
    occurred_time: datetime
    create_time: datetime
    settled: bool = True
    """Whether every transaction older than the alert's had ended when it was
    read. Only then is its position a safe resume point: an older transaction
    still open may yet commit an alert before it. The outbox's tail reads only
    settled alerts; a listing can read others (see `store.alerts.list_page`)."""


def trigger_json(fact: Fact, company: CompanyId) -> dict[str, Any]:
    """The fact as stored with its alerts."""
    if isinstance(fact, EventFact):
        occurred = fact.event.occurred_at
        return {
            "event": {
                "event_id": fact.event_id,
                "company": company.key,
                "type": int(fact.event.type),
                "occurred_at": occurred.isoformat() if occurred else None,
                "reference": fact.event.reference,
                "source": fact.source,
                "detail_case": fact.detail_case,
                "detail": fact.detail,
            }
        }
    if isinstance(fact, StatementFact):
        return {
            "financial_statement": {
                "period_start": fact.period_start.isoformat(),
                "period_end": fact.period_end.isoformat(),
            }
        }
    if isinstance(fact, RescoreFact):
        return {"rescoring": {"reason": int(fact.reason), "model_version": fact.model_version}}
    return {"master_data_change": {"changed_fields": list(fact.changed_fields)}}


@dataclass(frozen=True)
class LimitChange:
    """A standing credit limit a risk change reduced or withdrew."""

    tenant_id: Any
    company: CompanyId
    credit_limit: str
    """"creditLimits/{id}"."""
    withdrawn: bool
    summary: str
    change: Change


def plan_limit(limit: LimitChange, watchers: Iterable[Watcher]) -> list[PlannedAlert]:
    """Alerts for a reduced or withdrawn limit, on the owning tenant's watch lists."""
    if limit.withdrawn:
        candidate = Candidate(AlertType.CREDIT_LIMIT_WITHDRAWN, Severity.HIGH, limit.summary)
        action = SuggestedAction.STOP_CREDIT
    else:
        candidate = Candidate(AlertType.CREDIT_LIMIT_REDUCED, Severity.MEDIUM, limit.summary)
        action = SuggestedAction.REDUCE_LIMIT
    return [
        PlannedAlert(
            watcher=watcher,
            type=candidate.type,
            severity=candidate.severity,
            priority=priority(candidate.severity, watcher.exposure_amount),
            suggested_action=action,
            summary=candidate.summary,
        )
        for watcher in watchers
        if watcher.tenant_id == limit.tenant_id and wanted(watcher.rules, candidate)
    ]


def plan_claim(tenant_id: Any, summary: str, watchers: Iterable[Watcher]) -> list[PlannedAlert]:
    """A claim-eligible alert on the owning tenant's watch lists."""
    candidate = Candidate(AlertType.CLAIM_ELIGIBLE, Severity.HIGH, summary)
    return [
        PlannedAlert(
            watcher=watcher,
            type=candidate.type,
            severity=candidate.severity,
            priority=priority(candidate.severity, watcher.exposure_amount),
            suggested_action=SuggestedAction.REVIEW,
            summary=summary,
        )
        for watcher in watchers
        if watcher.tenant_id == tenant_id and wanted(watcher.rules, candidate)
    ]


@dataclass(frozen=True)
class ClaimDue:
    """An insured overdue payment that became eligible for a claim."""

    tenant_id: Any
    company: CompanyId
    overdue_payment: str
    """"creditLimits/{id}/overduePayments/{id}"."""
    summary: str
    occurred_at: datetime
