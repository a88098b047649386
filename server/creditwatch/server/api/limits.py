"""CreditLimitService: credit-limit decisions under the tenant's credit policy."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import grpc
from google.type import date_pb2

from creditwatch.server.api import converters as cv
from creditwatch.server.api.auth import Authenticator
from creditwatch.server.api.errors import unary
from creditwatch.server.domain.alerts import SuggestedAction
from creditwatch.server.domain.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.limits import (
    ClassPolicy,
    CreditPolicy,
    LimitState,
    Origin,
    Request,
    request_fingerprint,
)
from creditwatch.server.domain.limits import decide as decide_limit
from creditwatch.server.domain.money import Money
from creditwatch.server.domain.paging import encode_token, page_request, tenant_fingerprints
from creditwatch.server.domain.scores import RiskClass
from creditwatch.server.domain.tenants import Caller
from creditwatch.server.domain.watchlists import NUL_REFUSED
from creditwatch.server.intake import Intake
from creditwatch.server.store import alerts, facts
from creditwatch.server.store import limits as store
from creditwatch.server.store.facts import score_from_json
from creditwatch.v1 import alerts_pb2, common_pb2, limits_pb2, limits_pb2_grpc

_LIMIT_NAME = re.compile(r"creditLimits/([0-9a-fA-F-]{36})")
_POLICY_FIELDS = (
    "class_policies",
    "decline_class",
    "refer_statement_older_than_months",
    "decision_validity_days",
    "protracted_default_waiting_days",
    "insolvency_waiting_days",
)
MAX_EXTERNAL_REFERENCE = 200


def _money(amount: Decimal | str, currency: str) -> Any:
    return cv.money_message(Money(currency, Decimal(amount)))


def decision_message(value: dict[str, Any]) -> limits_pb2.CreditLimitDecision:
    """The wire form of a stored decision."""
    country, number = value["company"].split("-", 1)
    company = CompanyId(country, number)
    message = limits_pb2.CreditLimitDecision(
        credit_limit=value["credit_limit"],
        company=cv.company_ref(company),
        origin=limits_pb2.DecisionOrigin.ValueType(value["origin"]),
        outcome=limits_pb2.CreditLimitOutcome.ValueType(value["outcome"]),
        requested_amount=_money(value["requested_amount"], value["currency"]),
        requested_payment_terms_days=value["requested_payment_terms_days"],
        approved_amount=_money(value["approved_amount"], value["currency"]),
        max_payment_terms_days=value["max_payment_terms_days"],
        reasons=[limits_pb2.DecisionReason(code=c, description=d) for c, d in value["reasons"]],
        policy_version=value["policy_version"],
        decide_time=cv.timestamp(datetime.fromisoformat(value["decide_time"])),
    )
    if value["valid_until"]:
        message.valid_until.FromDatetime(datetime.fromisoformat(value["valid_until"]))
    if value["score"]:
        message.score.CopyFrom(cv.score_message(score_from_json(value["score"]), company))
    return message


def limit_message(limit: store.StandingLimit) -> limits_pb2.CreditLimit:
    """The wire form of a standing limit."""
    message = limits_pb2.CreditLimit(
        name=limit.name,
        company=cv.company_ref(limit.company),
        external_reference=limit.external_reference,
        state=limits_pb2.CreditLimitState.ValueType(limit.state),
        amount=_money(limit.amount, limit.currency),
        max_payment_terms_days=limit.max_payment_terms_days,
        valid_until=cv.timestamp(limit.valid_until),
        latest_decision=decision_message(limit.latest_decision),
        create_time=cv.timestamp(limit.create_time),
        update_time=cv.timestamp(limit.update_time),
    )
    if limit.exposure_currency is not None and limit.exposure_amount is not None:
        message.current_exposure.CopyFrom(_money(limit.exposure_amount, limit.exposure_currency))
    return message


def policy_message(policy: CreditPolicy) -> limits_pb2.CreditPolicy:
    """The wire form of a policy version."""
    message = limits_pb2.CreditPolicy(
        name="creditPolicy",
        version=policy.version,
        class_policies=[
            limits_pb2.ClassPolicy(
                risk_class=common_pb2.RiskClass.ValueType(risk_class),
                max_share_of_equity=p.max_share_of_equity,
                max_share_of_sales=p.max_share_of_sales,
                max_payment_terms_days=p.max_payment_terms_days,
                suggested_action=alerts_pb2.SuggestedAction.ValueType(p.suggested_action),
            )
            for risk_class, p in sorted(policy.classes.items())
        ],
        decline_class=common_pb2.RiskClass.ValueType(policy.decline_class),
        refer_statement_older_than_months=policy.refer_statement_older_than_months,
        decision_validity_days=policy.decision_validity_days,
        protracted_default_waiting_days=policy.protracted_default_waiting_days,
        insolvency_waiting_days=policy.insolvency_waiting_days,
    )
    if policy.update_time is not None:
        message.update_time.FromDatetime(policy.update_time)
    return message


def _class_policies(
    messages: Any, field: str, problems: list[FieldViolation]
) -> dict[RiskClass, ClassPolicy]:
    out: dict[RiskClass, ClassPolicy] = {}
    for i, p in enumerate(messages):
        if p.risk_class not in (1, 2, 3, 4):
            problems.append(FieldViolation(f"{field}[{i}].risk_class", "A, B, C or D"))
            continue
        if p.suggested_action not in set(alerts_pb2.SuggestedAction.values()):
            problems.append(
                FieldViolation(f"{field}[{i}].suggested_action", "unknown suggested action")
            )
            continue
        risk_class = RiskClass(p.risk_class)
        if risk_class in out:
            problems.append(FieldViolation(f"{field}[{i}].risk_class", "repeated"))
        out[risk_class] = ClassPolicy(
            p.max_share_of_equity,
            p.max_share_of_sales,
            p.max_payment_terms_days,
            SuggestedAction(p.suggested_action) if p.suggested_action else SuggestedAction.NONE,
        )
    return out


def _overdue_values(message: limits_pb2.OverduePayment, field: str) -> dict[str, Any]:
    problems: list[FieldViolation] = []
    if not 1 <= len(message.invoice_id) <= 128:
        problems.append(FieldViolation(f"{field}.invoice_id", "1 to 128 characters"))
    elif "\x00" in message.invoice_id:
        problems.append(FieldViolation(f"{field}.invoice_id", NUL_REFUSED))

    def day(name: str, required: bool) -> dt.date | None:
        if not message.HasField(name):  # type: ignore[arg-type]
            if required:
                problems.append(FieldViolation(f"{field}.{name}", "required"))
            return None
        return cv.past_date(getattr(message, name), f"{field}.{name}", problems)

    invoiced = day("invoice_date", True)
    due = day("invoice_due_date", True)
    settled = day("settled_date", False)
    if invoiced is not None and due is not None and due < invoiced:
        problems.append(
            FieldViolation(f"{field}.invoice_due_date", "must not be before invoice_date")
        )
    if invoiced is not None and settled is not None and settled < invoiced:
        problems.append(FieldViolation(f"{field}.settled_date", "must not be before invoice_date"))
    amount = None
    if not message.HasField("overdue_amount"):
        problems.append(FieldViolation(f"{field}.overdue_amount", "required"))
    else:
        amount = cv.money(message.overdue_amount, field, None, "overdue_amount", problems)
        # A settled_date given but refused says "paid" all the same.
        if amount is not None and amount.amount == 0 and not message.HasField("settled_date"):
            problems.append(
                FieldViolation(f"{field}.overdue_amount", "must be greater than 0 while unpaid")
            )
    if problems or amount is None:
        raise InvalidArgument(problems)
    return {
        "invoice_id": message.invoice_id,
        "invoice_date": invoiced,
        "due_date": due,
        "currency": amount.currency,
        "amount": amount.amount,
        "settled_date": settled,
    }


def overdue_message(payment: store.Overdue) -> limits_pb2.OverduePayment:
    """The wire form of an overdue payment."""

    def day(value: dt.date) -> date_pb2.Date:
        return date_pb2.Date(year=value.year, month=value.month, day=value.day)

    message = limits_pb2.OverduePayment(
        name=payment.name,
        invoice_id=payment.invoice_id,
        invoice_date=day(payment.invoice_date),
        invoice_due_date=day(payment.due_date),
        overdue_amount=_money(payment.amount, payment.currency),
        claim_basis=limits_pb2.ClaimBasis.ValueType(payment.claim_basis),
        state=limits_pb2.OverduePaymentState.ValueType(payment.state),
        create_time=cv.timestamp(payment.create_time),
        update_time=cv.timestamp(payment.update_time),
    )
    if payment.settled_date is not None:
        message.settled_date.CopyFrom(day(payment.settled_date))
    if payment.claim_eligible_date is not None:
        message.claim_eligible_date.CopyFrom(day(payment.claim_eligible_date))
    return message


class CreditLimitServicer(limits_pb2_grpc.CreditLimitServiceServicer):
    """gRPC face of credit-limit decisions and policies."""

    def __init__(self, auth: Authenticator, sessions: Any, intake: Intake) -> None:
        self._auth = auth
        self._sessions = sessions
        self._intake = intake

    async def caller(self, context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
        """The calling tenant and its key's grants."""
        return await self._auth.caller(context)

    @unary
    async def DecideCreditLimit(
        self, request: limits_pb2.DecideCreditLimitRequest, tenant: uuid.UUID
    ) -> limits_pb2.DecideCreditLimitResponse:
        problems: list[FieldViolation] = []
        company = cv.company(request.company, "company", problems)
        amount = exposure = None
        if not request.HasField("requested_amount"):
            problems.append(FieldViolation("requested_amount", "required"))
        else:
            amount = cv.money(request.requested_amount, "", None, "requested_amount", problems)
            if amount is not None and amount.amount <= 0:
                problems.append(FieldViolation("requested_amount", "must be greater than 0"))
        if not 1 <= request.requested_payment_terms_days <= 365:
            problems.append(FieldViolation("requested_payment_terms_days", "1..365"))
        if request.HasField("current_exposure"):
            exposure = cv.money(request.current_exposure, "", None, "current_exposure", problems)
            if exposure is not None and amount is not None and exposure.currency != amount.currency:
                problems.append(
                    FieldViolation(
                        "current_exposure.currency_code", "must be the requested currency"
                    )
                )
        if len(request.external_reference) > MAX_EXTERNAL_REFERENCE:
            problems.append(FieldViolation("external_reference", "up to 200 characters"))
        elif "\x00" in request.external_reference:
            # Refused whatever the decision (only a grant stores it).
            problems.append(FieldViolation("external_reference", NUL_REFUSED))
        if len(request.request_id) > 128:
            problems.append(FieldViolation("request_id", "up to 128 characters"))
        elif "\x00" in request.request_id:
            problems.append(FieldViolation("request_id", NUL_REFUSED))
        problems = [FieldViolation(v.field.lstrip("."), v.description) for v in problems]
        if problems or company is None or amount is None:
            raise InvalidArgument(problems)
        asked = Request(
            amount.currency,
            amount.amount,
            request.requested_payment_terms_days,
            exposure.amount if exposure is not None else None,
        )
        asks = request_fingerprint(company, asked, request.external_reference)
        if request.request_id:
            # A replay, or a reused request_id (refused), before anything is
            # scored: the score below commits on its own, with its alerts.
            async with self._sessions() as session:
                earlier = await store.earlier_decision(session, tenant, request.request_id, asks)
            if earlier is not None:
                return limits_pb2.DecideCreditLimitResponse(decision=decision_message(earlier))
        with contextlib.suppress(NotFound, FailedPrecondition):
            # Stores the score the company lacks (or replaces one of another
            # model than the activated one), as ScoreCompany does; the
            # decision reads it below, with the company locked.
            await self._intake.score_company(company)
        async with self._sessions.begin() as session:
            if request.request_id:
                earlier = await store.replayed_decision(session, tenant, request.request_id, asks)
                if earlier is not None:
                    return limits_pb2.DecideCreditLimitResponse(decision=decision_message(earlier))
            # Decided on the score as it stands with the company locked, as
            # intakes lock it: one that committed a worse score since the read
            # above re-decided the standing limits then (a grant now on the
            # old score would undo that), and one that comes next waits for
            # this grant and re-decides it (store.limits.redecide_on_risk). A
            # company creditwatch does not know is not created by a decision.
            known = await facts.lock_if_known(session, company)
            # The policy and the time, too, as they are once the lock is
            # held: a policy committed while the lock was waited for governs
            # this decision, which comes after it.
            policy = await store.policy(session, tenant)
            now = datetime.now(UTC)
            score = await facts.latest_score(session, company) if known else None
            statement = await facts.latest_statement(session, company)
            decision = decide_limit(asked, score, statement, policy, now)
            decided = store.decision_json(
                decision,
                asked,
                origin=Origin.REQUEST,
                company=company,
                score=score,
                policy_version=policy.version,
                now=now,
                credit_limit="",
            )
            if decision.grants:
                limit = await store.grant(
                    session,
                    tenant,
                    company,
                    decision,
                    asked,
                    request.external_reference,
                    decided,
                    now,
                )
                decided = limit.latest_decision
            if request.request_id:
                await store.remember_decision(session, tenant, request.request_id, decided)
        return limits_pb2.DecideCreditLimitResponse(decision=decision_message(decided))

    @unary
    async def GetCreditLimit(
        self, request: limits_pb2.GetCreditLimitRequest, tenant: uuid.UUID
    ) -> limits_pb2.GetCreditLimitResponse:
        match = _LIMIT_NAME.fullmatch(request.name)
        if match is None:
            raise InvalidArgument.single("name", "must be a resource name 'creditLimits/{id}'")
        try:
            limit_id = uuid.UUID(match[1])
        except ValueError:
            raise InvalidArgument.single("name", "credit limit id is not a UUID") from None
        async with self._sessions() as session:
            limit = await store.get(session, tenant, limit_id)
        if limit is None:
            raise NotFound(request.name)
        return limits_pb2.GetCreditLimitResponse(credit_limit=limit_message(limit))

    @unary
    async def ListCreditLimits(
        self, request: limits_pb2.ListCreditLimitsRequest, tenant: uuid.UUID
    ) -> limits_pb2.ListCreditLimitsResponse:
        problems: list[FieldViolation] = []
        known = {int(s) for s in LimitState}
        for i, state in enumerate(request.states):
            if state and state not in known:
                problems.append(FieldViolation(f"states[{i}]", f"unknown state {state}"))
        # UNSPECIFIED as a filter means any state, so it widens the filter to all.
        states = [] if 0 in request.states else sorted(set(request.states))
        company = None
        if request.HasField("company"):
            company = cv.company(request.company, "company", problems)
        if problems:
            raise InvalidArgument(problems)
        digest, legacy = tenant_fingerprints(tenant, states, company.key if company else "")
        page = page_request(
            request.page_size,
            request.page_token,
            digest,
            default_size=100,
            max_size=1_000,
            legacy=legacy,
        )
        after = page.time_and_id()
        async with self._sessions() as session:
            found = await store.list_page(session, tenant, states, company, after, page.size + 1)
        token = ""
        if len(found) > page.size:
            found = found[: page.size]
            token = encode_token((found[-1].create_time.isoformat(), str(found[-1].id)), digest)
        return limits_pb2.ListCreditLimitsResponse(
            credit_limits=[limit_message(x) for x in found], next_page_token=token
        )

    @unary
    async def ReportOverduePayment(
        self, request: limits_pb2.ReportOverduePaymentRequest, tenant: uuid.UUID
    ) -> limits_pb2.ReportOverduePaymentResponse:
        match = _LIMIT_NAME.fullmatch(request.parent)
        if match is None:
            raise InvalidArgument.single("parent", "must be a resource name 'creditLimits/{id}'")
        try:
            limit_id = uuid.UUID(match[1])
        except ValueError:
            raise InvalidArgument.single("parent", "credit limit id is not a UUID") from None
        values = _overdue_values(request.overdue_payment, "overdue_payment")
        now = datetime.now(UTC)
        async with self._sessions.begin() as session:
            await store.lock(session, tenant, limit_id)  # reports on a limit take turns
            limit = await store.get(session, tenant, limit_id)
            if limit is None:
                raise NotFound(request.parent)
            # An invoice reported before was insured then; later reports (aging,
            # settlement) update it whatever happened to the limit since, but
            # not its date, which is what made it insured.
            known = await store.reported_invoice(session, tenant, limit.id, values["invoice_id"])
            if known is not None and known[0] != values["invoice_date"]:
                raise InvalidArgument.single(
                    "overdue_payment.invoice_date",
                    f"invoice {values['invoice_id']!r} was reported dated {known[0]}; "
                    "an invoice's date does not change",
                )
            # A new invoice is in the limit's currency; a known one stays in
            # its own (the limit's may have changed with a later decision).
            currency = limit.currency if known is None else known[1]
            if values["currency"] != currency:
                raise InvalidArgument.single(
                    "overdue_payment.overdue_amount.currency_code",
                    f"must be {currency}, the "
                    + ("credit limit's currency" if known is None else "invoice's currency"),
                )
            if known is None and not limit.insured_on(values["invoice_date"]):
                raise FailedPrecondition(
                    f"{request.parent} was not ACTIVE on {values['invoice_date']}: "
                    "the invoice is not insured"
                )
            policy = await store.policy(session, tenant)
            payment, created, claim = await store.report_overdue(
                session, tenant, limit, values, policy, now
            )
            if claim is not None:
                await alerts.write(session, [], claims=[claim])
        return limits_pb2.ReportOverduePaymentResponse(
            overdue_payment=overdue_message(payment), created=created
        )

    @unary
    async def GetCreditPolicy(
        self, request: limits_pb2.GetCreditPolicyRequest, tenant: uuid.UUID
    ) -> limits_pb2.GetCreditPolicyResponse:
        if request.name not in ("", "creditPolicy"):
            raise InvalidArgument.single("name", "must be 'creditPolicy'")
        if request.version < 0:
            raise InvalidArgument.single("version", "must not be negative")
        async with self._sessions() as session:
            policy = await store.policy(session, tenant, request.version)
        return limits_pb2.GetCreditPolicyResponse(credit_policy=policy_message(policy))

    @unary
    async def UpdateCreditPolicy(
        self, request: limits_pb2.UpdateCreditPolicyRequest, tenant: uuid.UUID
    ) -> limits_pb2.UpdateCreditPolicyResponse:
        given = request.credit_policy
        problems: list[FieldViolation] = []
        if given.name not in ("", "creditPolicy"):
            problems.append(FieldViolation("credit_policy.name", "must be 'creditPolicy'"))
        paths = list(request.update_mask.paths)
        if not paths:
            problems.append(FieldViolation("update_mask", "required: name the fields to change"))
        for i, path in enumerate(paths):
            if path not in _POLICY_FIELDS:
                problems.append(
                    FieldViolation(
                        f"update_mask.paths[{i}]",
                        f"{path!r} cannot be changed; use {', '.join(_POLICY_FIELDS)}",
                    )
                )
        if given.version < 0:
            problems.append(FieldViolation("credit_policy.version", "must not be negative"))
        if problems:
            raise InvalidArgument(problems)
        async with self._sessions.begin() as session:
            current = await store.policy(session, tenant)
            values: dict[str, Any] = {}
            if "class_policies" in paths:
                values["classes"] = _class_policies(
                    given.class_policies, "credit_policy.class_policies", problems
                )
            if "decline_class" in paths:
                if given.decline_class not in (1, 2, 3, 4):
                    problems.append(FieldViolation("credit_policy.decline_class", "A, B, C or D"))
                else:
                    values["decline_class"] = RiskClass(given.decline_class)
            for name in _POLICY_FIELDS[2:]:
                if name in paths:
                    values[name] = getattr(given, name)
            if problems:
                raise InvalidArgument(problems)
            new = CreditPolicy(
                classes=values.get("classes", current.classes),
                decline_class=values.get("decline_class", current.decline_class),
                refer_statement_older_than_months=values.get(
                    "refer_statement_older_than_months", current.refer_statement_older_than_months
                ),
                decision_validity_days=values.get(
                    "decision_validity_days", current.decision_validity_days
                ),
                protracted_default_waiting_days=values.get(
                    "protracted_default_waiting_days", current.protracted_default_waiting_days
                ),
                insolvency_waiting_days=values.get(
                    "insolvency_waiting_days", current.insolvency_waiting_days
                ),
            )
            new.validate()
            saved = await store.save_policy(session, tenant, new, current, given.version)
        return limits_pb2.UpdateCreditPolicyResponse(credit_policy=policy_message(saved))
