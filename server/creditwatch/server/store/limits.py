"""Credit policies and standing credit limits in PostgreSQL, and the
re-decision of standing limits when a company's risk worsens.

Everything here is per tenant, except `redecide_on_risk`, which an intake
calls in its own transaction for the companies whose class got worse: each
tenant's ACTIVE limit on such a company is decided again under that tenant's
current policy; a decline withdraws it, a lower amount or shorter terms
reduce it, and nothing is ever raised automatically.

EXPIRED is never stored: a limit stored ACTIVE reads as EXPIRED once its
`valid_until` has passed, so it holds from that moment without a job, and a
new decision makes the limit ACTIVE again by moving `valid_until`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, Table, and_, case, func, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from creditwatch.server.domain.alerts import Change, ClaimDue, LimitChange
from creditwatch.server.domain.errors import Aborted, NotFound
from creditwatch.server.domain.events import CompanyStatus, EventType
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.limits import (
    DEFAULT_POLICY,
    ClaimBasis,
    ClaimClock,
    Cover,
    CreditPolicy,
    Decision,
    LimitState,
    Origin,
    Outcome,
    PaymentState,
    Request,
    claim_clock,
    cover_granted,
    cover_withdrawn,
    covers,
    decide,
)
from creditwatch.server.domain.scores import StoredScore
from creditwatch.server.store import facts, idempotency, models

_P = cast(Table, models.CreditPolicyVersion.__table__)
_DECIDE = "DecideCreditLimit"
_L = cast(Table, models.CreditLimit.__table__)
# The state a client sees: the stored one, but EXPIRED for an ACTIVE limit
# past its `valid_until` (now(): the reading transaction's start).
_STATE: ColumnElement[int] = case(
    (
        and_(_L.c.state == int(LimitState.ACTIVE), _L.c.valid_until < func.now()),
        int(LimitState.EXPIRED),
    ),
    else_=_L.c.state,
)


async def policy(session: AsyncSession, tenant: uuid.UUID, version: int = 0) -> CreditPolicy:
    """The tenant's current policy (or `version`); the default is version 1."""
    query = select(_P).where(_P.c.tenant_id == tenant)
    if version:
        query = query.where(_P.c.version == version)
    row = (await session.execute(query.order_by(_P.c.version.desc()).limit(1))).first()
    if row is None:
        if version in (0, 1):
            return DEFAULT_POLICY
        raise NotFound(f"creditPolicy (version {version})")
    return CreditPolicy.from_json(row.policy, row.version, row.update_time)


async def save_policy(
    session: AsyncSession,
    tenant: uuid.UUID,
    new: CreditPolicy,
    base: CreditPolicy,
    expected_version: int,
) -> CreditPolicy:
    """Store `new`, a change made to `base` (the policy as read in this
    transaction), as the version after `base`'s; ABORTED if `expected_version`
    (non-zero) is not `base`'s, or if another update stored that version
    first (it committed after `base` was read: `new`, built on `base`,
    would undo that update's fields; under READ COMMITTED a second read here
    would see the other update, so the version comes from `base`, and the
    primary key turns the race into ABORTED)."""
    if expected_version and expected_version != base.version:
        raise Aborted(
            f"creditPolicy is at version {base.version}, not {expected_version}; "
            "read it again and reapply the change"
        )
    version = base.version + 1
    try:
        async with session.begin_nested():
            await session.execute(
                _P.insert().values(tenant_id=tenant, version=version, policy=new.to_json())
            )
    except IntegrityError:
        raise Aborted("creditPolicy was changed concurrently; read it again") from None
    return await policy(session, tenant)


@dataclass(frozen=True)
class StandingLimit:
    """A stored standing limit."""

    tenant_id: uuid.UUID
    id: uuid.UUID
    company: CompanyId
    external_reference: str
    state: LimitState
    currency: str
    amount: Decimal
    max_payment_terms_days: int
    valid_until: datetime
    exposure_currency: str | None
    exposure_amount: Decimal | None
    latest_decision: dict[str, Any]
    create_time: datetime
    update_time: datetime
    cover: Cover
    """The days the limit was in force (see migration 0019)."""

    @property
    def name(self) -> str:
        """The resource name."""
        return f"creditLimits/{self.id}"

    def insured_on(self, day: date) -> bool:
        """Whether the limit was in force on `day`, so that an invoice dated
        then is insured (a gap between a withdrawal or lapse and a new grant
        is not)."""
        return covers(self.cover, day)


def _day(at: datetime) -> date:
    return at.astimezone(UTC).date()


def _cover(row: Any) -> Cover:
    """The stored cover, reconciled with what the row itself says; for a row
    without one (written before migration 0019), the one period the row tells.

    During a rolling upgrade replicas of the earlier release update limits
    without touching `cover`: a withdrawal of theirs is read from the row
    (withdrawn since `update_time`), and a grant of theirs (ACTIVE from
    `update_time` to `valid_until`) extends the last period (or ends it
    earlier, if that grant shortened the limit), or starts a new one after a
    gap. On rows this release wrote, both are no-ops. A withdrawal and a new
    grant both by the earlier release leave no trace of the gap between them:
    only the grant is seen (the upgrade's one blind spot)."""
    if row.cover is None:
        cover: Cover = ((_day(row.create_time), _day(row.valid_until)),)
    else:
        cover = tuple((date.fromisoformat(a), date.fromisoformat(b)) for a, b in row.cover)
    if row.state == int(LimitState.WITHDRAWN):
        return cover_withdrawn(cover, _day(row.update_time)) if cover else cover
    return cover_granted(cover, _day(row.update_time), _day(row.valid_until))


def _cover_json(cover: Cover) -> list[list[str]]:
    return [[first.isoformat(), last.isoformat()] for first, last in cover]


def _select() -> Select[Any]:
    """Limits with their state as read (see `_STATE`)."""
    return select(*(c for c in _L.c if c.name != "state"), _STATE.label("state"))


def _limit(row: Any) -> StandingLimit:
    return StandingLimit(
        tenant_id=row.tenant_id,
        id=row.id,
        company=CompanyId(row.country, row.register_number),
        external_reference=row.external_reference,
        state=LimitState(row.state),
        currency=row.currency,
        amount=row.amount,
        max_payment_terms_days=row.max_payment_terms_days,
        valid_until=row.valid_until,
        exposure_currency=row.exposure_currency,
        exposure_amount=row.exposure_amount,
        latest_decision=row.latest_decision,
        create_time=row.create_time,
        update_time=row.update_time,
        cover=_cover(row),
    )


async def replayed_decision(
    session: AsyncSession, tenant: uuid.UUID, request_id: str, fingerprint: str
) -> dict[str, Any] | None:
    """The decision of an earlier DecideCreditLimit call with `request_id`, or
    None when this call is the first (its key is then claimed with
    `fingerprint`, what the call asks; `remember_decision` stores the result).

    A repeat that asks something other than the first call did is refused with
    nothing decided (see `idempotency.claim`).
    """
    return await idempotency.claim(session, tenant, _DECIDE, request_id, fingerprint)


async def earlier_decision(
    session: AsyncSession, tenant: uuid.UUID, request_id: str, fingerprint: str
) -> dict[str, Any] | None:
    """`replayed_decision` without claiming the key (see `idempotency.peek`)."""
    return await idempotency.peek(session, tenant, _DECIDE, request_id, fingerprint)


async def remember_decision(
    session: AsyncSession, tenant: uuid.UUID, request_id: str, decided: dict[str, Any]
) -> None:
    """Store the decision of the call that claimed `request_id`."""
    await idempotency.remember(session, tenant, _DECIDE, request_id, decided)


def decision_json(
    decision: Decision,
    request: Request,
    *,
    origin: Origin,
    company: CompanyId,
    score: StoredScore | None,
    policy_version: int,
    now: datetime,
    credit_limit: str,
    score_reasons_text: str | None = None,
) -> dict[str, Any]:
    """A decision as stored and returned (`score_reasons_text`: the score's
    stored reasons, when its `reasons` were not decoded; see `Change`)."""
    return {
        "credit_limit": credit_limit,
        "company": company.key,
        "origin": int(origin),
        "outcome": int(decision.outcome),
        "currency": request.currency,
        "requested_amount": str(request.amount),
        "requested_payment_terms_days": request.payment_terms_days,
        "approved_amount": str(decision.approved),
        "max_payment_terms_days": decision.max_payment_terms_days,
        "valid_until": decision.valid_until.isoformat() if decision.valid_until else None,
        "reasons": [list(r) for r in decision.reasons],
        "score": facts.score_json(score, score_reasons_text) if score is not None else None,
        "policy_version": policy_version,
        "decide_time": now.isoformat(),
    }


async def standing(
    session: AsyncSession, tenant: uuid.UUID, company: CompanyId, *, lock: bool = False
) -> StandingLimit | None:
    """The tenant's standing limit on a company, if any."""
    query = _select().where(
        _L.c.tenant_id == tenant,
        _L.c.country == company.country,
        _L.c.register_number == company.register_number,
    )
    if lock:
        query = query.with_for_update()
    row = (await session.execute(query)).first()
    return _limit(row) if row else None


async def grant(
    session: AsyncSession,
    tenant: uuid.UUID,
    company: CompanyId,
    decision: Decision,
    request: Request,
    external_reference: str,
    decided: dict[str, Any],
    now: datetime,
) -> StandingLimit:
    """Make an approving decision the tenant's standing limit on the company."""

    def values(earlier: StandingLimit | None, limit_id: uuid.UUID) -> dict[str, Any]:
        # A request without exposure (or reference) keeps the one last
        # reported: exposure only while it is in the limit's currency.
        exposure = request.exposure
        if exposure is None and earlier and earlier.exposure_currency == request.currency:
            exposure = earlier.exposure_amount
        return {
            "external_reference": external_reference
            or (earlier.external_reference if earlier else ""),
            "state": int(LimitState.ACTIVE),
            "currency": request.currency,
            "amount": decision.approved,
            "max_payment_terms_days": decision.max_payment_terms_days,
            "valid_until": decision.valid_until,
            "exposure_currency": request.currency if exposure is not None else None,
            "exposure_amount": exposure,
            "latest_decision": decided | {"credit_limit": f"creditLimits/{limit_id}"},
            "update_time": now,
            "cover": _cover_json(
                cover_granted(
                    earlier.cover if earlier else (),
                    _day(now),
                    _day(decision.valid_until) if decision.valid_until else date.max,
                )
            ),
        }

    earlier = await standing(session, tenant, company, lock=True)
    if earlier is None:
        limit_id = uuid.uuid4()
        inserted = await session.scalar(
            insert(_L)
            .values(
                tenant_id=tenant,
                id=limit_id,
                country=company.country,
                register_number=company.register_number,
                create_time=now,
                **values(None, limit_id),
            )
            .on_conflict_do_nothing(index_elements=["tenant_id", "country", "register_number"])
            .returning(_L.c.id)
        )
        if inserted is None:
            # A concurrent first decision on the buyer inserted the row first
            # (ON CONFLICT waited for its commit): this one replaces it, as a
            # later decision does.
            earlier = await standing(session, tenant, company, lock=True)
            assert earlier is not None
    if earlier is not None:
        limit_id = earlier.id
        await session.execute(
            _L.update()
            .where(_L.c.tenant_id == tenant, _L.c.id == limit_id)
            .values(**values(earlier, limit_id))
        )
    found = await get(session, tenant, limit_id)
    assert found is not None
    return found


async def get(
    session: AsyncSession, tenant: uuid.UUID, limit_id: uuid.UUID
) -> StandingLimit | None:
    """One standing limit of the tenant."""
    row = (
        await session.execute(_select().where(_L.c.tenant_id == tenant, _L.c.id == limit_id))
    ).first()
    return _limit(row) if row else None


async def list_page(
    session: AsyncSession,
    tenant: uuid.UUID,
    states: Sequence[int],
    company: CompanyId | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[StandingLimit]:
    """The tenant's limits in `states` (empty: any), newest first (keyset on
    create_time, id)."""
    query = _select().where(_L.c.tenant_id == tenant)
    if states:
        query = query.where(_STATE.in_(list(states)))
    if company is not None:
        query = query.where(
            _L.c.country == company.country, _L.c.register_number == company.register_number
        )
    if after is not None:
        query = query.where(tuple_(_L.c.create_time, _L.c.id) < tuple_(*after))
    rows = await session.execute(
        query.order_by(_L.c.create_time.desc(), _L.c.id.desc()).limit(limit)
    )
    return [_limit(r) for r in rows]


def _money(amount: Decimal, currency: str) -> str:
    return f"{amount:,.0f} {currency}"


def _terms_capped(
    referred: Decision, limit: StandingLimit, change: Change, rules: CreditPolicy
) -> Decision | None:
    """For a re-decision the rules referred: the limit with its amount as it
    is and its payment terms capped by the company's new class, or None if
    the class allows the terms the limit has."""
    assert change.score is not None
    risk_class = change.score.risk_class
    allowed = rules.classes[risk_class].max_payment_terms_days
    if limit.max_payment_terms_days <= allowed:
        return None
    return Decision(
        Outcome.PARTIALLY_APPROVED,  # as `decide` says of capped terms
        limit.amount,
        allowed,
        limit.valid_until,
        reasons=[
            (
                "TERMS_CAPPED",
                f"class {risk_class.name} allows at most {allowed} days of payment terms",
            ),
            *((code, f"amount kept as it was: {text}") for code, text in referred.reasons),
        ],
    )


async def redecide_on_risk(
    session: AsyncSession, changes: Sequence[tuple[CompanyId, Change]], now: datetime
) -> list[LimitChange]:
    """Re-decide every ACTIVE standing limit on companies whose class got worse;
    returns the limits reduced or withdrawn (their alerts are the caller's to write).

    A limit past its `valid_until` has expired: it covers nothing any more, so
    it is left as it is (no change, no alert) until a new decision."""
    worse = {
        company: change
        for company, change in changes
        if change.previous is not None
        and change.score is not None
        and change.score.risk_class > change.previous.risk_class
    }
    if not worse:
        return []
    rows = await session.execute(
        select(_L)
        .where(
            # Arrays, not an IN list: a re-score passes thousands of companies,
            # and SQLAlchemy renders an IN list parameter by parameter.
            text(
                "(country, register_number) IN "
                "(SELECT * FROM unnest(CAST(:countries AS char(2)[]), CAST(:numbers AS varchar[])))"
            ).bindparams(
                countries=[c.country for c in worse], numbers=[c.register_number for c in worse]
            ),
            _L.c.state == int(LimitState.ACTIVE),
            _L.c.valid_until >= now,
        )
        .order_by(_L.c.tenant_id, _L.c.id)
        .with_for_update()
    )
    limits = [_limit(r) for r in rows]
    statements = {c: await facts.latest_statement(session, c) for c in {x.company for x in limits}}
    policies: dict[uuid.UUID, CreditPolicy] = {}
    out: list[LimitChange] = []
    for limit in limits:
        change = worse[limit.company]
        if limit.tenant_id not in policies:
            policies[limit.tenant_id] = await policy(session, limit.tenant_id)
        rules = policies[limit.tenant_id]
        request = Request(
            limit.currency, limit.amount, limit.max_payment_terms_days, limit.exposure_amount
        )
        decision = decide(request, change.score, statements[limit.company], rules, now)
        if decision.outcome == Outcome.REFERRED:
            # The rules cannot size the limit (the statement is old, in
            # another currency or missing): its amount stays. The new class's
            # cap on payment terms needs no statement, and still applies.
            capped = _terms_capped(decision, limit, change, rules)
            if capped is None:
                continue
            decision = capped
        withdrawn = decision.outcome == Outcome.DECLINED
        reduced = decision.approved < limit.amount or (
            decision.max_payment_terms_days < limit.max_payment_terms_days
        )
        if not withdrawn and not reduced:
            continue
        amount = Decimal(0) if withdrawn else min(decision.approved, limit.amount)
        terms = (
            0 if withdrawn else min(decision.max_payment_terms_days, limit.max_payment_terms_days)
        )
        if not withdrawn:
            # What the limit holds from now on: a re-decision lowers it, and
            # neither raises it nor moves the date it holds until.
            decision = replace(
                decision,
                approved=amount,
                max_payment_terms_days=terms,
                valid_until=limit.valid_until,
            )
        decided = decision_json(
            decision,
            request,
            origin=Origin.RISK_CHANGE,
            company=limit.company,
            score=change.score,
            policy_version=rules.version,
            now=now,
            credit_limit=limit.name,
            score_reasons_text=change.score_reasons_text,
        )
        await session.execute(
            _L.update()
            .where(_L.c.tenant_id == limit.tenant_id, _L.c.id == limit.id)
            .values(
                state=int(LimitState.WITHDRAWN if withdrawn else LimitState.ACTIVE),
                cover=_cover_json(
                    cover_withdrawn(limit.cover, _day(now)) if withdrawn else limit.cover
                ),
                amount=amount,
                max_payment_terms_days=terms,
                latest_decision=decided,
                update_time=now,
            )
        )
        assert change.previous is not None and change.score is not None
        moved = f"risk class {change.previous.risk_class.name} → {change.score.risk_class.name}"
        if withdrawn:
            summary = f"Credit limit of {_money(limit.amount, limit.currency)} withdrawn ({moved})"
        elif amount == limit.amount:
            summary = (
                f"Payment terms of the credit limit of {_money(amount, limit.currency)} cut "
                f"from {limit.max_payment_terms_days} to {terms} days ({moved})"
            )
        else:
            summary = (
                f"Credit limit reduced from {_money(limit.amount, limit.currency)} "
                f"to {_money(amount, limit.currency)}, terms {terms} days ({moved})"
            )
        out.append(
            LimitChange(limit.tenant_id, limit.company, limit.name, withdrawn, summary, change)
        )
    return out


_O = cast(Table, models.OverduePayment.__table__)


@dataclass(frozen=True)
class Overdue:
    """A stored insured overdue payment."""

    tenant_id: uuid.UUID
    id: uuid.UUID
    credit_limit_id: uuid.UUID
    company: CompanyId
    invoice_id: str
    invoice_date: date
    due_date: date
    currency: str
    amount: Decimal
    settled_date: date | None
    claim_basis: ClaimBasis
    claim_eligible_date: date | None
    state: PaymentState
    create_time: datetime
    update_time: datetime
    policy_version: int | None = None
    """The credit policy version its claims clock runs on (None: the current)."""

    @property
    def name(self) -> str:
        """The resource name."""
        return f"creditLimits/{self.credit_limit_id}/overduePayments/{self.id}"


def _overdue(row: Any) -> Overdue:
    return Overdue(
        tenant_id=row.tenant_id,
        id=row.id,
        credit_limit_id=row.credit_limit_id,
        company=CompanyId(row.country, row.register_number),
        invoice_id=row.invoice_id,
        invoice_date=row.invoice_date,
        due_date=row.due_date,
        currency=row.currency,
        amount=row.amount,
        settled_date=row.settled_date,
        claim_basis=ClaimBasis(row.claim_basis),
        claim_eligible_date=row.claim_eligible_date,
        state=PaymentState(row.state),
        create_time=row.create_time,
        update_time=row.update_time,
        policy_version=row.policy_version,
    )


async def bankruptcy_dates(
    session: AsyncSession, companies: Sequence[CompanyId]
) -> dict[CompanyId, list[date]]:
    """The days bankruptcies were opened, oldest first, for the companies
    that have one recorded: as an event, or as the register status BANKRUPT
    (UpsertCompany, a register feed), dated when it took effect (it counts
    like the event dated then, as it does for scoring)."""
    if not companies:
        return {}
    rows = await session.execute(
        text(
            """
            WITH chunk AS (
                SELECT * FROM unnest(CAST(:countries AS char(2)[]), CAST(:numbers AS varchar[]))
                    AS k(country, register_number)
            )
            SELECT e.country, e.register_number, coalesce(e.occurred_at, e.record_time) AS opened
            FROM company_events e JOIN chunk k USING (country, register_number)
            WHERE e.type = :opened
            UNION ALL
            SELECT c.country, c.register_number, c.status_time
            FROM companies c JOIN chunk k USING (country, register_number)
            -- No time (a status of before migration 0017): only its event counts.
            WHERE c.status = :bankrupt AND c.status_time IS NOT NULL
            ORDER BY opened
            """
        ),
        {
            "opened": int(EventType.BANKRUPTCY_OPENED),
            "bankrupt": int(CompanyStatus.BANKRUPT),
            "countries": [c.country for c in companies],
            "numbers": [c.register_number for c in companies],
        },
    )
    found: dict[CompanyId, list[date]] = {}
    for row in rows:
        found.setdefault(CompanyId(row.country, row.register_number), []).append(
            row.opened.astimezone(UTC).date()
        )
    return found


def _claim_summary(payment: Overdue, clock: ClaimClock) -> str:
    basis = (
        "bankruptcy of the buyer" if clock.basis == ClaimBasis.INSOLVENCY else "protracted default"
    )
    return (
        f"Claim can be filed for invoice {payment.invoice_id} "
        f"({_money(payment.amount, payment.currency)}, {basis}) from {clock.eligible}"
    )


async def lock(session: AsyncSession, tenant: uuid.UUID, limit_id: uuid.UUID) -> None:
    """Lock a standing limit's row for this transaction (overdue reports on it
    take their turn: two first reports of one invoice must not both insert)."""
    await session.execute(
        select(_L.c.id).where(_L.c.tenant_id == tenant, _L.c.id == limit_id).with_for_update()
    )


async def reported_invoice(
    session: AsyncSession, tenant: uuid.UUID, limit_id: uuid.UUID, invoice_id: str
) -> tuple[date, str] | None:
    """(date, currency) of this invoice as reported on the limit before; None
    if it was not."""
    row = (
        await session.execute(
            select(_O.c.invoice_date, _O.c.currency).where(
                _O.c.tenant_id == tenant,
                _O.c.credit_limit_id == limit_id,
                _O.c.invoice_id == invoice_id,
            )
        )
    ).first()
    return (row.invoice_date, row.currency) if row is not None else None


async def report_overdue(
    session: AsyncSession,
    tenant: uuid.UUID,
    limit: StandingLimit,
    values: dict[str, Any],
    rules: CreditPolicy,
    now: datetime,
) -> tuple[Overdue, bool, ClaimDue | None]:
    """Record (or update, by invoice id) an overdue insured invoice and compute its
    claims clock; returns (payment, created, claim due now if it just became eligible).
    `rules`, the tenant's current policy, runs the clock of a new invoice; a
    known one's keeps running on the version it was first reported under."""
    today = now.date()
    earlier = (
        await session.execute(
            select(_O)
            .where(
                _O.c.tenant_id == tenant,
                _O.c.credit_limit_id == limit.id,
                _O.c.invoice_id == values["invoice_id"],
            )
            .with_for_update()
        )
    ).first()
    if earlier is not None and earlier.policy_version not in (None, rules.version):
        rules = await policy(session, tenant, earlier.policy_version)
    bankrupt = (await bankruptcy_dates(session, [limit.company])).get(limit.company, [])
    clock = claim_clock(
        values["invoice_date"], values["due_date"], values["settled_date"], bankrupt, rules, today
    )
    was_alerted = bool(earlier.alerted) if earlier else False
    alert_now = clock.state == PaymentState.CLAIM_ELIGIBLE and not was_alerted
    stored = {
        **values,
        "claim_basis": int(clock.basis),
        "claim_eligible_date": clock.eligible,
        "state": int(clock.state),
        "alerted": was_alerted or alert_now,
        "update_time": now,
        "policy_version": rules.version,
    }
    if earlier is None:
        payment_id = uuid.uuid4()
        await session.execute(
            _O.insert().values(
                tenant_id=tenant,
                id=payment_id,
                credit_limit_id=limit.id,
                country=limit.company.country,
                register_number=limit.company.register_number,
                create_time=now,
                **stored,
            )
        )
    else:
        payment_id = earlier.id
        await session.execute(
            _O.update().where(_O.c.tenant_id == tenant, _O.c.id == payment_id).values(**stored)
        )
    row = (
        await session.execute(select(_O).where(_O.c.tenant_id == tenant, _O.c.id == payment_id))
    ).one()
    payment = _overdue(row)
    claim = (
        ClaimDue(tenant, limit.company, payment.name, _claim_summary(payment, clock), now)
        if alert_now
        else None
    )
    return payment, earlier is None, claim


CLAIMS_PAGE = 2_000
"""Waiting payments the claims clock reads per transaction."""


async def claims_due(
    session: AsyncSession,
    rules_of: Any,
    now: datetime,
    after: tuple[uuid.UUID, uuid.UUID] | None = None,
    limit: int = CLAIMS_PAGE,
) -> tuple[list[ClaimDue], tuple[uuid.UUID, uuid.UUID] | None]:
    """Recompute the clocks of one page of waiting payments, keyset after
    `after` (a bankruptcy may have shortened them), and return those eligible
    by today that never alerted, marked alerted, with the page's last key (None after the last
    page); `rules_of(tenant, version)` gives a tenant's policy of that version
    (None: the current one), the one each payment's clock runs on.

    The page is read without locks; only payments whose clock changed are
    locked, and re-read under the lock, so the clock does not hold every
    waiting payment (and a report of one) for its whole run."""
    query = select(_O).where(_O.c.state == int(PaymentState.WAITING))
    if after is not None:
        query = query.where(tuple_(_O.c.tenant_id, _O.c.id) > tuple_(*after))
    rows = (await session.execute(query.order_by(_O.c.tenant_id, _O.c.id).limit(limit))).all()
    last = (rows[-1].tenant_id, rows[-1].id) if len(rows) == limit else None
    payments = [_overdue(r) for r in rows]
    bankrupt = await bankruptcy_dates(session, list({p.company for p in payments}))

    async def clock_of(payment: Overdue) -> ClaimClock:
        rules = await rules_of(payment.tenant_id, payment.policy_version)
        day = now.date()
        return claim_clock(
            payment.invoice_date,
            payment.due_date,
            payment.settled_date,
            bankrupt.get(payment.company, []),
            rules,
            day,
        )

    def unchanged(payment: Overdue, clock: ClaimClock) -> bool:
        return (clock.basis, clock.eligible, clock.state) == (
            payment.claim_basis,
            payment.claim_eligible_date,
            payment.state,
        )

    moved = [p for p in payments if not unchanged(p, await clock_of(p))]
    if not moved:
        return [], last
    locked = (
        await session.execute(
            select(_O)
            .where(
                tuple_(_O.c.tenant_id, _O.c.id).in_([(p.tenant_id, p.id) for p in moved]),
                _O.c.state == int(PaymentState.WAITING),
            )
            .order_by(_O.c.tenant_id, _O.c.id)
            .with_for_update()
        )
    ).all()
    due: list[ClaimDue] = []
    for row in locked:
        payment = _overdue(row)
        clock = await clock_of(payment)
        if unchanged(payment, clock):
            continue  # a report changed it meanwhile
        eligible = clock.state == PaymentState.CLAIM_ELIGIBLE
        # One CLAIM_ELIGIBLE alert per invoice, as `report_overdue` keeps it:
        # an invoice that was eligible once and is waiting again (reported
        # anew with a later due date) does not alert a second time.
        alert_now = eligible and not row.alerted
        await session.execute(
            _O.update()
            .where(_O.c.tenant_id == payment.tenant_id, _O.c.id == payment.id)
            .values(
                claim_basis=int(clock.basis),
                claim_eligible_date=clock.eligible,
                state=int(clock.state),
                alerted=bool(row.alerted) or eligible,
                update_time=now,
            )
        )
        if alert_now:
            due.append(
                ClaimDue(
                    payment.tenant_id,
                    payment.company,
                    payment.name,
                    _claim_summary(payment, clock),
                    now,
                )
            )
    return due, last
