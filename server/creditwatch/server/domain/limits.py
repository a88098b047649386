"""Credit-limit decisions, insurer style: a tenant's credit policy is data.

`decide` applies the rules documented on `CreditLimitService.DecideCreditLimit`
in order; it is pure, so a decision can be recomputed and tested by hand.
"""

from __future__ import annotations

import calendar
import enum
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from creditwatch.server.domain.alerts import DEFAULT_CLASS_ACTIONS, SuggestedAction
from creditwatch.server.domain.errors import FieldViolation, InvalidArgument
from creditwatch.server.domain.financials import FinancialStatement
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.scores import RiskClass, StoredScore


class Outcome(enum.IntEnum):
    """Wire enum CreditLimitOutcome."""

    APPROVED = 1
    PARTIALLY_APPROVED = 2
    DECLINED = 3
    REFERRED = 4


class Origin(enum.IntEnum):
    """Wire enum DecisionOrigin."""

    REQUEST = 1
    RISK_CHANGE = 2


class LimitState(enum.IntEnum):
    """Wire enum CreditLimitState."""

    ACTIVE = 1
    WITHDRAWN = 2
    EXPIRED = 3


Cover = tuple[tuple[date, date], ...]
"""The days a standing limit was in force: (first day, last day) periods,
inclusive, oldest first, not overlapping (UTC days)."""


def covers(cover: Cover, day: date) -> bool:
    """Whether the limit was in force on `day` (an invoice dated then is insured)."""
    return any(first <= day <= last for first, last in cover)


def cover_granted(cover: Cover, today: date, last_day: date) -> Cover:
    """The cover after a grant on `today` in force to `last_day`: the last
    period goes on (and ends at `last_day`) if the limit was in force until at
    least yesterday; after a gap (a withdrawal, a lapse) a new period starts."""
    if cover and cover[-1][1] >= today - timedelta(days=1):
        first = cover[-1][0]
        return (*cover[:-1], (first, max(last_day, today - timedelta(days=1))))
    return (*cover, (today, last_day))


def cover_withdrawn(cover: Cover, today: date) -> Cover:
    """The cover after a withdrawal on `today`: the last period ends the day
    before (an invoice dated on the day of the withdrawal is not insured)."""
    if not cover:
        return cover
    first, last = cover[-1]
    last = min(last, today - timedelta(days=1))
    return (*cover[:-1], (first, last)) if last >= first else cover[:-1]


@dataclass(frozen=True)
class ClassPolicy:
    """Policy values for one risk class."""

    max_share_of_equity: float
    max_share_of_sales: float
    max_payment_terms_days: int
    suggested_action: SuggestedAction


@dataclass(frozen=True)
class CreditPolicy:
    """A tenant's credit policy (one version)."""

    classes: dict[RiskClass, ClassPolicy]
    decline_class: RiskClass = RiskClass.D
    refer_statement_older_than_months: int = 18
    decision_validity_days: int = 365
    protracted_default_waiting_days: int = 180
    insolvency_waiting_days: int = 30
    version: int = 1
    update_time: datetime | None = None

    def class_actions(self) -> dict[RiskClass, SuggestedAction]:
        """What alerts suggest for a company that moves into each class."""
        return {c: p.suggested_action for c, p in self.classes.items()}

    def to_json(self) -> dict[str, Any]:
        """The stored form (without version and time, which are columns)."""
        return {
            "classes": {
                c.name: {
                    "max_share_of_equity": p.max_share_of_equity,
                    "max_share_of_sales": p.max_share_of_sales,
                    "max_payment_terms_days": p.max_payment_terms_days,
                    "suggested_action": int(p.suggested_action),
                }
                for c, p in sorted(self.classes.items())
            },
            "decline_class": int(self.decline_class),
            "refer_statement_older_than_months": self.refer_statement_older_than_months,
            "decision_validity_days": self.decision_validity_days,
            "protracted_default_waiting_days": self.protracted_default_waiting_days,
            "insolvency_waiting_days": self.insolvency_waiting_days,
        }

    @classmethod
    def from_json(
        cls, value: dict[str, Any], version: int, update_time: datetime | None
    ) -> CreditPolicy:
        """The inverse of `to_json`."""
        return cls(
            classes={
                RiskClass[name]: ClassPolicy(
                    p["max_share_of_equity"],
                    p["max_share_of_sales"],
                    p["max_payment_terms_days"],
                    SuggestedAction(p["suggested_action"]),
                )
                for name, p in value["classes"].items()
            },
            decline_class=RiskClass(value["decline_class"]),
            refer_statement_older_than_months=value["refer_statement_older_than_months"],
            decision_validity_days=value["decision_validity_days"],
            protracted_default_waiting_days=value["protracted_default_waiting_days"],
            insolvency_waiting_days=value["insolvency_waiting_days"],
            version=version,
            update_time=update_time,
        )

    def validate(self, prefix: str = "credit_policy") -> None:
        """INVALID_ARGUMENT naming every field out of range.

        `class_policies[i]` is the i-th entry of `classes` in its own order, so
        a policy built from a request's entries, in their order, names the
        entry the client sent.
        """
        problems: list[FieldViolation] = []
        if set(self.classes) != set(RiskClass):
            problems.append(
                FieldViolation(f"{prefix}.class_policies", "exactly one entry per class A-D")
            )
        for i, p in enumerate(self.classes.values()):
            where = f"{prefix}.class_policies[{i}]"
            if not 0 <= p.max_share_of_equity <= 10:
                problems.append(FieldViolation(f"{where}.max_share_of_equity", "0..10"))
            if not 0 <= p.max_share_of_sales <= 10:
                problems.append(FieldViolation(f"{where}.max_share_of_sales", "0..10"))
            if not 0 <= p.max_payment_terms_days <= 365:
                problems.append(FieldViolation(f"{where}.max_payment_terms_days", "0..365"))
        ranges = (
            ("refer_statement_older_than_months", self.refer_statement_older_than_months, 1, 60),
            ("decision_validity_days", self.decision_validity_days, 1, 1_095),
            ("protracted_default_waiting_days", self.protracted_default_waiting_days, 1, 720),
            ("insolvency_waiting_days", self.insolvency_waiting_days, 0, 720),
        )
        for name, value, low, high in ranges:
            if not low <= value <= high:
                problems.append(FieldViolation(f"{prefix}.{name}", f"{low}..{high:,}"))
        if problems:
            raise InvalidArgument(problems)


DEFAULT_POLICY = CreditPolicy(
    classes={
        RiskClass.A: ClassPolicy(0.20, 0.10, 90, DEFAULT_CLASS_ACTIONS[RiskClass.A]),
        RiskClass.B: ClassPolicy(0.10, 0.05, 60, DEFAULT_CLASS_ACTIONS[RiskClass.B]),
        RiskClass.C: ClassPolicy(0.05, 0.02, 30, DEFAULT_CLASS_ACTIONS[RiskClass.C]),
        RiskClass.D: ClassPolicy(0.0, 0.0, 0, DEFAULT_CLASS_ACTIONS[RiskClass.D]),
    }
)


@dataclass(frozen=True)
class Request:
    """What is asked for."""

    currency: str
    amount: Decimal
    payment_terms_days: int
    exposure: Decimal | None = None


def request_fingerprint(company: CompanyId, asked: Request, external_reference: str) -> str:
    """sha256 of what a DecideCreditLimit call asks (all of it but `request_id`):
    a repeated `request_id` with the same fingerprint is a retry, with another
    one a different request that reuses the id."""
    exposure = None if asked.exposure is None else str(asked.exposure)
    asks = [
        company.key,
        asked.currency,
        str(asked.amount),
        asked.payment_terms_days,
        exposure,
        external_reference,
    ]
    return hashlib.sha256(json.dumps(asks, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Decision:
    """The outcome of the rules."""

    outcome: Outcome
    approved: Decimal
    max_payment_terms_days: int
    valid_until: datetime | None
    reasons: list[tuple[str, str]] = field(default_factory=list)

    @property
    def grants(self) -> bool:
        """Whether the decision sets a standing limit."""
        return self.outcome in (Outcome.APPROVED, Outcome.PARTIALLY_APPROVED)


def _months_before(day: date, months: int) -> date:
    """The same day `months` earlier, or that month's last day if it is shorter
    (31 May less 3 months is 28 or 29 February)."""
    year, month = divmod(day.year * 12 + day.month - 1 - months, 12)
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def _amount(value: Decimal) -> str:
    return f"{value:,.0f}"


def _whole(value: Decimal) -> str:
    """A cap as it can be granted: whole units, rounded down."""
    return _amount(value.to_integral_value(rounding=ROUND_FLOOR))


def decide(
    request: Request,
    score: StoredScore | None,
    statement: FinancialStatement | None,
    policy: CreditPolicy,
    now: datetime,
) -> Decision:
    """Apply the policy's rules, in order (see the service documentation)."""
    declined = Decision(Outcome.DECLINED, Decimal(0), 0, None)
    referred = Decision(Outcome.REFERRED, Decimal(0), 0, None)
    if score is None:
        return replace(
            referred,
            reasons=[("NO_SCORE", "the company has no score: no statement or decisive event")],
        )
    if score.risk_class >= policy.decline_class:
        return replace(
            declined,
            reasons=[
                (
                    "DECLINE_CLASS",
                    f"risk class {score.risk_class.name} is at or worse than the policy's "
                    f"decline class {policy.decline_class.name}",
                )
            ],
        )
    if statement is None:
        return replace(referred, reasons=[("STATEMENT_MISSING", "no financial statement")])
    oldest = _months_before(now.date(), policy.refer_statement_older_than_months)
    if statement.period_end < oldest:
        return replace(
            referred,
            reasons=[
                (
                    "STATEMENT_TOO_OLD",
                    f"the latest statement ended {statement.period_end}, more than "
                    f"{policy.refer_statement_older_than_months} months ago",
                )
            ],
        )
    if statement.currency != request.currency:
        return replace(
            referred,
            reasons=[
                (
                    "CURRENCY_MISMATCH",
                    f"requested in {request.currency}, statement in {statement.currency}; "
                    "creditwatch converts no currencies",
                )
            ],
        )
    rules = policy.classes[score.risk_class]
    caps: list[tuple[Decimal, str, str]] = []
    if statement.equity is not None:
        cap = max(
            Decimal(0), Decimal(str(rules.max_share_of_equity)) * Decimal(str(statement.equity))
        )
        caps.append(
            (
                cap,
                "CAPPED_BY_EQUITY",
                f"{rules.max_share_of_equity:g} x equity {_amount(Decimal(str(statement.equity)))} "
                f"= {_whole(cap)} {request.currency} (class {score.risk_class.name})",
            )
        )
    if statement.sales is not None:
        cap = max(
            Decimal(0), Decimal(str(rules.max_share_of_sales)) * Decimal(str(statement.sales))
        )
        caps.append(
            (
                cap,
                "CAPPED_BY_SALES",
                f"{rules.max_share_of_sales:g} x sales {_amount(Decimal(str(statement.sales)))} "
                f"= {_whole(cap)} {request.currency} (class {score.risk_class.name})",
            )
        )
    if not caps:
        return replace(
            referred,
            reasons=[("STATEMENT_MISSING", "the statement reports neither equity nor sales")],
        )
    cap, cap_code, cap_text = min(caps, key=lambda c: c[0])
    approved = min(request.amount, cap).to_integral_value(rounding=ROUND_FLOOR)
    terms = min(request.payment_terms_days, rules.max_payment_terms_days)
    reasons: list[tuple[str, str]] = []
    if cap < request.amount:
        reasons.append((cap_code, cap_text))
    if terms < request.payment_terms_days:
        reasons.append(
            (
                "TERMS_CAPPED",
                f"class {score.risk_class.name} allows at most {terms} days of payment terms",
            )
        )
    if approved <= 0:
        # Rounded down to whole units, the amount is 0: because the cap is
        # (it replaces the cap's own reason), or because less than one unit
        # was asked for under a larger cap.
        if cap < request.amount:
            reasons[0] = ("CAP_ZERO", f"the policy's cap is 0: {cap_text}")
        else:
            reasons.insert(
                0,
                (
                    "AMOUNT_BELOW_ONE_UNIT",
                    f"{request.amount} {request.currency} requested; approved amounts are "
                    "whole currency units, rounded down",
                ),
            )
        return replace(declined, reasons=reasons)
    if cap >= request.amount and approved < request.amount:
        # Nothing capped it but whole units: say so, as every partial approval
        # gives its reason.
        reasons.append(
            (
                "ROUNDED_TO_WHOLE_UNITS",
                f"{request.amount} {request.currency} requested; approved amounts are "
                "whole currency units, rounded down",
            )
        )
    if request.exposure is not None and request.exposure > approved:
        reasons.append(
            (
                "EXPOSURE_ABOVE_LIMIT",
                f"current exposure {_amount(request.exposure)} exceeds the approved "
                f"{_amount(approved)} {request.currency}",
            )
        )
    partial = approved < request.amount or terms < request.payment_terms_days
    return Decision(
        Outcome.PARTIALLY_APPROVED if partial else Outcome.APPROVED,
        approved,
        terms,
        now + timedelta(days=policy.decision_validity_days),
        reasons,
    )


class ClaimBasis(enum.IntEnum):
    """Wire enum ClaimBasis."""

    PROTRACTED_DEFAULT = 1
    INSOLVENCY = 2


class PaymentState(enum.IntEnum):
    """Wire enum OverduePaymentState."""

    WAITING = 1
    CLAIM_ELIGIBLE = 2
    SETTLED = 3


@dataclass(frozen=True)
class ClaimClock:
    """When a claim on an overdue insured invoice can be filed."""

    basis: ClaimBasis
    eligible: date | None
    state: PaymentState


def claim_clock(
    invoiced: date,
    due: date,
    settled: date | None,
    bankruptcies: Sequence[date],
    policy: CreditPolicy,
    today: date,
) -> ClaimClock:
    """Protracted default: due date + its waiting days; insolvency: the day
    of the buyer's first bankruptcy opened on or after the invoice date +
    its waiting days, when earlier (a buyer already bankrupt when invoiced,
    or one bankrupt long ago, gives that invoice no insolvency claim).
    Settled stops the clock."""
    protracted = due + timedelta(days=policy.protracted_default_waiting_days)
    basis, eligible = ClaimBasis.PROTRACTED_DEFAULT, protracted
    bankruptcy = min((day for day in bankruptcies if day >= invoiced), default=None)
    if bankruptcy is not None:
        insolvency = bankruptcy + timedelta(days=policy.insolvency_waiting_days)
        if insolvency < protracted:
            basis, eligible = ClaimBasis.INSOLVENCY, insolvency
    if settled is not None:
        return ClaimClock(basis, None, PaymentState.SETTLED)
    state = PaymentState.CLAIM_ELIGIBLE if eligible <= today else PaymentState.WAITING
    return ClaimClock(basis, eligible, state)
