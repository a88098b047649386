"""CompanyDataService: statements and events in, re-scored companies out."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

import grpc
from google.protobuf import json_format
from google.type import date_pb2

from creditwatch.server.api import converters as cv
from creditwatch.server.api import scoring_converters as sc
from creditwatch.server.api.auth import Authenticator
from creditwatch.server.api.errors import unary, unary_as_caller
from creditwatch.server.domain.currency import UnsupportedCurrency, pln_per_unit
from creditwatch.server.domain.errors import FieldViolation, InvalidArgument
from creditwatch.server.domain.financials import FinancialStatement
from creditwatch.server.domain.identifiers import CompanyId, IdentifierError
from creditwatch.server.domain.scores import StoredScore
from creditwatch.server.domain.tenants import SCOPE_COMPANIES_WRITE, Caller
from creditwatch.server.domain.watchlists import NUL, NUL_REFUSED
from creditwatch.server.intake import Effect, IncomingEvent, Intake, PaymentReport
from creditwatch.server.store import facts
from creditwatch.v1 import companies_pb2, companies_pb2_grpc

MAX_EVENTS_PER_CALL = 1_000
MAX_EVENT_ID = 128
# A feed's `source` of an event or a statement, kept for audit.
MAX_SOURCE = 100


def _effect(effect: Effect) -> companies_pb2.IntakeEffect:
    message = companies_pb2.IntakeEffect(
        company=cv.company_ref(effect.company), alerts_raised_count=effect.alerts_raised
    )
    if effect.score is not None:
        message.score.CopyFrom(cv.score_message(effect.score, effect.company))
    if effect.previous is not None:
        message.previous_score.CopyFrom(cv.score_message(effect.previous, effect.company))
    return message


_MASTER_FIELDS = (
    "legal_name",
    "industry_code",
    "legal_form",
    "status",
    "registered_address",
    "registration_date",
)
_INDUSTRY_CODE = re.compile(r"[0-9]{2}(\.?[0-9]{1,4})?")
_LEGAL_FORM = re.compile(r"[A-Z0-9]{1,10}")
MAX_INVOICE_ID = 128
# A statement's period may end at most this far ahead of today (UTC): the
# sender's today, a time zone east of UTC.
_PERIOD_END_AHEAD = dt.timedelta(days=1)


def _company_message(
    company: CompanyId,
    master: facts.MasterData,
    score: StoredScore | None,
    statement: FinancialStatement | None,
) -> companies_pb2.Company:
    message = companies_pb2.Company(
        name=f"companies/{company.key}",
        company=cv.company_ref(company),
        legal_name=master.name,
        industry_code=master.industry_code,
        legal_form=master.legal_form,
        status=companies_pb2.CompanyStatus.ValueType(master.status),
        create_time=cv.timestamp(master.create_time),
        update_time=cv.timestamp(master.update_time),
    )
    if master.address:
        json_format.ParseDict(master.address, message.registered_address)
    if master.registration_date is not None:
        day = master.registration_date
        message.registration_date.CopyFrom(
            date_pb2.Date(year=day.year, month=day.month, day=day.day)
        )
    if score is not None:
        message.latest_score.CopyFrom(cv.score_message(score, company))
    if statement is not None:
        message.latest_financial_statement.CopyFrom(sc.statement_message(statement))
    return message


def _master_values(
    request: companies_pb2.UpsertCompanyRequest,
) -> tuple[CompanyId, dict[str, Any]]:
    """The company and the master-data values to write (Company field names)."""
    problems: list[FieldViolation] = []
    message = request.company
    company = cv.company(message.company, "company.company", problems)
    paths = list(request.update_mask.paths)
    for i, path in enumerate(paths):
        if path not in _MASTER_FIELDS:
            problems.append(
                FieldViolation(
                    f"update_mask.paths[{i}]",
                    f"{path!r} is not writable; use {', '.join(_MASTER_FIELDS)}",
                )
            )
    if not paths:
        paths = [
            f
            for f in _MASTER_FIELDS
            if (
                message.HasField(f)  # type: ignore[arg-type]
                if f in ("registered_address", "registration_date")
                else getattr(message, f)
            )
        ]
    values: dict[str, Any] = {}
    for path in paths:
        field = f"company.{path}"
        if path == "legal_name":
            if not 1 <= len(message.legal_name) <= 500:
                problems.append(FieldViolation(field, "1 to 500 characters"))
            elif NUL in message.legal_name:
                problems.append(FieldViolation(field, NUL_REFUSED))
            values[path] = message.legal_name
        elif path == "industry_code":
            if message.industry_code and not _INDUSTRY_CODE.fullmatch(message.industry_code):
                problems.append(
                    FieldViolation(field, "a NACE code such as '62.01' or a national code '62010'")
                )
            values[path] = message.industry_code
        elif path == "legal_form":
            if message.legal_form and not _LEGAL_FORM.fullmatch(message.legal_form):
                problems.append(FieldViolation(field, "the register's code, upper case, up to 10"))
            values[path] = message.legal_form
        elif path == "status":
            if message.status not in set(companies_pb2.CompanyStatus.values()):
                problems.append(FieldViolation(field, f"unknown status {message.status}"))
            elif message.status == companies_pb2.COMPANY_STATUS_UNSPECIFIED:
                # "No master data received yet" is not news a sender can bring:
                # stored, it would wipe a bankruptcy or dissolution (and the
                # class D it forces) for every tenant.
                problems.append(
                    FieldViolation(
                        field, "required when named in update_mask; UNSPECIFIED is not a status"
                    )
                )
            values[path] = int(message.status)
        elif path == "registered_address":
            values[path] = json_format.MessageToDict(message.registered_address)
        elif path == "registration_date":
            values[path] = (
                cv.past_date(message.registration_date, field, problems)
                if message.HasField("registration_date")
                else None
            )
    if problems or company is None:
        raise InvalidArgument(problems)
    return company, values


def _payment_report(message: companies_pb2.PaymentExperience, field: str) -> PaymentReport:
    problems: list[FieldViolation] = []
    if not 1 <= len(message.invoice_id) <= MAX_INVOICE_ID:
        problems.append(FieldViolation(f"{field}.invoice_id", f"1 to {MAX_INVOICE_ID} characters"))
    elif NUL in message.invoice_id:
        problems.append(FieldViolation(f"{field}.invoice_id", NUL_REFUSED))
    company = cv.company(message.company, f"{field}.company", problems)
    due = None
    if not message.HasField("invoice_due_date"):
        problems.append(FieldViolation(f"{field}.invoice_due_date", "required"))
    else:
        due = cv.past_date(message.invoice_due_date, f"{field}.invoice_due_date", problems)
    if not 0 <= message.days_past_due <= 3_650:
        problems.append(FieldViolation(f"{field}.days_past_due", "0 to 3,650"))
    settled = None
    if message.HasField("settled_date"):
        settled = cv.past_date(message.settled_date, f"{field}.settled_date", problems)
    amount = None
    if not message.HasField("overdue_amount"):
        problems.append(FieldViolation(f"{field}.overdue_amount", "required"))
    else:
        amount = cv.money(message.overdue_amount, field, None, "overdue_amount", problems)
        # A settled_date given but refused says "settled" all the same.
        if amount is not None and amount.amount == 0 and not message.HasField("settled_date"):
            problems.append(
                FieldViolation(f"{field}.overdue_amount", "must be greater than 0 while unsettled")
            )
    if problems or company is None or due is None or amount is None:
        raise InvalidArgument(problems)
    return PaymentReport(
        message.invoice_id,
        company,
        {
            "due_date": due,
            "days_past_due": message.days_past_due,
            "currency": amount.currency,
            "amount": amount.amount,
            "settled_date": settled,
        },
    )


def _statement_intake(
    request: companies_pb2.SubmitFinancialStatementRequest,
) -> tuple[CompanyId, FinancialStatement]:
    """The company and its validated statement; one InvalidArgument lists every problem."""
    problems: list[FieldViolation] = []
    company = cv.company(request.company, "company", problems)
    if len(request.source) > MAX_SOURCE:
        problems.append(FieldViolation("source", f"at most {MAX_SOURCE} characters"))
    elif NUL in request.source:
        problems.append(FieldViolation("source", NUL_REFUSED))
    statement = None
    if not request.HasField("financial_statement"):
        problems.append(FieldViolation("financial_statement", "required"))
    else:
        try:
            statement = sc.statement(request.financial_statement, "financial_statement")
            pln_per_unit(statement.currency)
            if statement.period_end > dt.datetime.now(dt.UTC).date() + _PERIOD_END_AHEAD:
                # Stored, a typo's year 2204 would be the company's latest
                # statement for good: scores read the latest period end.
                problems.append(
                    FieldViolation(
                        "financial_statement.period_end",
                        "must not be in the future: a statement is of a period that has ended",
                    )
                )
        except InvalidArgument as error:
            problems.extend(error.violations)
        except UnsupportedCurrency as error:
            problems.append(FieldViolation("financial_statement.currency_code", str(error)))
    if problems or company is None or statement is None:
        raise InvalidArgument(problems)
    return company, statement


def _incoming_events(request: companies_pb2.RecordEventsRequest) -> list[IncomingEvent]:
    """The request's events, each checked as CompanyEvent's contract says; one
    InvalidArgument lists every problem of every event (`events[i]....`)."""
    count = len(request.events)
    if count == 0 or count > MAX_EVENTS_PER_CALL:
        raise InvalidArgument.single(
            "events", f"{count} given; 1 to {MAX_EVENTS_PER_CALL:,} per call"
        )
    problems: list[FieldViolation] = []
    incoming: list[IncomingEvent] = []
    # An event id is unique per company (and sender): the same id for two
    # companies is two events.
    seen: dict[tuple[CompanyId, str], int] = {}
    for i, message in enumerate(request.events):
        where = f"events[{i}]"
        company = cv.company(message.company, f"{where}.company", problems)
        if not 1 <= len(message.event_id) <= MAX_EVENT_ID:
            problems.append(FieldViolation(f"{where}.event_id", f"1 to {MAX_EVENT_ID} characters"))
        elif NUL in message.event_id:
            problems.append(FieldViolation(f"{where}.event_id", NUL_REFUSED))
        elif (
            company is not None and (first := seen.setdefault((company, message.event_id), i)) != i
        ):
            problems.append(FieldViolation(f"{where}.event_id", f"repeats events[{first}]"))
        event = sc.event(message, where, problems)
        if len(message.source) > MAX_SOURCE:
            problems.append(FieldViolation(f"{where}.source", f"at most {MAX_SOURCE} characters"))
        elif NUL in message.source:
            problems.append(FieldViolation(f"{where}.source", NUL_REFUSED))
        kind = message.WhichOneof("detail")
        if problems or company is None or event is None or kind is None:
            continue  # refused below; nothing more to build
        detail = json_format.MessageToDict(getattr(message, kind))
        incoming.append(
            IncomingEvent(company, message.event_id, event, detail, message.source, i, kind)
        )
    if problems:
        raise InvalidArgument(problems)
    return incoming


class CompanyDataServicer(companies_pb2_grpc.CompanyDataServiceServicer):
    """gRPC face of company-data intake."""

    def __init__(self, auth: Authenticator, intake: Intake) -> None:
        self._auth = auth
        self._intake = intake

    async def caller(self, context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
        """The calling tenant and its key's grants."""
        return await self._auth.caller(context)

    @unary_as_caller
    async def SubmitFinancialStatement(
        self, request: companies_pb2.SubmitFinancialStatementRequest, caller: Caller
    ) -> companies_pb2.SubmitFinancialStatementResponse:
        caller.require(SCOPE_COMPANIES_WRITE)
        company, statement = _statement_intake(request)
        replaced, effect = await self._intake.submit_statement(
            company, statement, request.source, caller.tenant_id
        )
        return companies_pb2.SubmitFinancialStatementResponse(
            replaced=replaced, effect=_effect(effect)
        )

    @unary_as_caller
    async def RecordEvents(
        self, request: companies_pb2.RecordEventsRequest, caller: Caller
    ) -> companies_pb2.RecordEventsResponse:
        caller.require(SCOPE_COMPANIES_WRITE)
        incoming = _incoming_events(request)
        recorded, duplicates, effects = await self._intake.record_events(incoming, caller.tenant_id)
        return companies_pb2.RecordEventsResponse(
            recorded_count=recorded,
            duplicate_event_ids=duplicates,
            effects=[_effect(e) for e in effects],
        )

    @unary_as_caller
    async def UpsertCompany(
        self, request: companies_pb2.UpsertCompanyRequest, caller: Caller
    ) -> companies_pb2.UpsertCompanyResponse:
        caller.require(SCOPE_COMPANIES_WRITE)
        company, values = _master_values(request)
        created, master, effect = await self._intake.upsert_company(company, values)
        return companies_pb2.UpsertCompanyResponse(
            company=_company_message(company, master, effect.score, None),
            created=created,
            effect=_effect(effect),
        )

    @unary
    async def GetCompany(
        self, request: companies_pb2.GetCompanyRequest, tenant: uuid.UUID
    ) -> companies_pb2.GetCompanyResponse:
        prefix = "companies/"
        if not request.name.startswith(prefix):
            raise InvalidArgument.single("name", "must be 'companies/{country}-{register_number}'")
        try:
            company = CompanyId.parse_key(request.name[len(prefix) :])
        except IdentifierError as error:
            raise InvalidArgument.single("name", error.description) from None
        master, score, statement = await self._intake.company(company)
        message = _company_message(company, master, score, statement)
        return companies_pb2.GetCompanyResponse(company=message)

    @unary_as_caller
    async def ReportPaymentExperience(
        self, request: companies_pb2.ReportPaymentExperienceRequest, caller: Caller
    ) -> companies_pb2.ReportPaymentExperienceResponse:
        # A tenant's own ledger: no grant needed, as with watch lists.
        report = _payment_report(request.payment_experience, "payment_experience")
        created, effect = await self._intake.report_payment(caller.tenant_id, report)
        return companies_pb2.ReportPaymentExperienceResponse(
            created=created, effect=_effect(effect)
        )
