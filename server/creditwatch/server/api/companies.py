"""CompanyDataService: statements and events in, re-scored companies out."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
from google.protobuf import json_format

from creditwatch.server.api import converters as cv
from creditwatch.server.api import scoring_converters as sc
from creditwatch.server.api.auth import Authenticator
from creditwatch.server.api.errors import unary, unary_as_caller
from creditwatch.server.domain.currency import UnsupportedCurrency, pln_per_unit
from creditwatch.server.domain.errors import FieldViolation, InvalidArgument
from creditwatch.server.domain.identifiers import CompanyId, IdentifierError
from creditwatch.server.domain.tenants import SCOPE_COMPANIES_WRITE, Caller
from creditwatch.server.intake import Effect, IncomingEvent, Intake
from creditwatch.v1 import companies_pb2, companies_pb2_grpc

MAX_EVENTS_PER_CALL = 1_000
MAX_EVENT_ID = 200


def _effect(effect: Effect) -> companies_pb2.IntakeEffect:
    message = companies_pb2.IntakeEffect(company=cv.company_ref(effect.company))
    if effect.score is not None:
        message.score.CopyFrom(cv.score_message(effect.score, effect.company))
    if effect.previous is not None:
        message.previous_score.CopyFrom(cv.score_message(effect.previous, effect.company))
    return message


async def _not_yet(context: grpc.aio.ServicerContext[Any, Any], method: str) -> None:
    await context.abort(
        grpc.StatusCode.UNIMPLEMENTED,
        f"creditwatch.v1.CompanyDataService.{method} is not implemented by this server version yet",
    )


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
        problems: list[FieldViolation] = []
        company = cv.company(request.company, "company", problems)
        if not request.HasField("financial_statement"):
            problems.append(FieldViolation("financial_statement", "required"))
        if problems or company is None:
            raise InvalidArgument(problems)
        statement = sc.statement(request.financial_statement, "financial_statement")
        try:
            pln_per_unit(statement.currency)
        except UnsupportedCurrency as error:
            raise InvalidArgument.single("financial_statement.currency_code", str(error)) from None
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
        count = len(request.events)
        if count == 0 or count > MAX_EVENTS_PER_CALL:
            raise InvalidArgument.single(
                "events", f"{count} given; 1 to {MAX_EVENTS_PER_CALL:,} per call"
            )
        problems: list[FieldViolation] = []
        domain_events = []
        try:
            domain_events = sc.events(list(request.events), "events")
        except InvalidArgument as error:
            problems.extend(error.violations)
        incoming: list[IncomingEvent] = []
        seen: dict[str, int] = {}
        for i, message in enumerate(request.events):
            company = cv.company(message.company, f"events[{i}].company", problems)
            if not message.event_id or len(message.event_id) > MAX_EVENT_ID:
                problems.append(
                    FieldViolation(f"events[{i}].event_id", f"1 to {MAX_EVENT_ID} characters")
                )
            elif seen.setdefault(message.event_id, i) != i:
                problems.append(
                    FieldViolation(
                        f"events[{i}].event_id", f"repeats events[{seen[message.event_id]}]"
                    )
                )
            if company is None or problems:
                continue
            kind = message.WhichOneof("detail")
            detail = json_format.MessageToDict(getattr(message, kind)) if kind else {}
            incoming.append(
                IncomingEvent(
                    company, message.event_id, domain_events[i], detail, message.source, i
                )
            )
        if problems:
            raise InvalidArgument(problems)
        recorded, duplicates, effects = await self._intake.record_events(incoming, caller.tenant_id)
        return companies_pb2.RecordEventsResponse(
            recorded_count=recorded,
            duplicate_event_ids=duplicates,
            effects=[_effect(e) for e in effects],
        )

    async def UpsertCompany(
        self,
        request: companies_pb2.UpsertCompanyRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> companies_pb2.UpsertCompanyResponse:
        await _not_yet(context, "UpsertCompany")
        raise AssertionError("unreachable")

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
        message = companies_pb2.Company(
            name=f"{prefix}{company.key}",
            company=cv.company_ref(company),
            legal_name=master.name,
            industry_code=master.industry_code,
            legal_form=master.legal_form,
            status=companies_pb2.CompanyStatus.ValueType(master.status),
            create_time=cv.timestamp(master.create_time),
            update_time=cv.timestamp(master.update_time),
        )
        if score is not None:
            message.latest_score.CopyFrom(cv.score_message(score, company))
        if statement is not None:
            message.latest_financial_statement.CopyFrom(sc.statement_message(statement))
        return companies_pb2.GetCompanyResponse(company=message)

    async def ReportPaymentExperience(
        self,
        request: companies_pb2.ReportPaymentExperienceRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> companies_pb2.ReportPaymentExperienceResponse:
        await _not_yet(context, "ReportPaymentExperience")
        raise AssertionError("unreachable")
