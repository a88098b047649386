"""Bad intake input is refused with the field named, all problems at once,
and nothing a sender could not mean is stored: the request checks of
CompanyDataService (and the overdue reports of CreditLimitService)."""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf import field_mask_pb2
from google.type import date_pb2, money_pb2

from creditwatch.server.api import companies, limits
from creditwatch.server.api import scoring_converters as sc
from creditwatch.server.domain.errors import InvalidArgument
from creditwatch.server.domain.financials import FinancialStatement
from creditwatch.server.domain.money import Money, MoneyError
from creditwatch.v1 import common_pb2, companies_pb2, limits_pb2
from tests.unit.test_features import HEALTHY

REF = common_pb2.CompanyRef(country="NO", register_number="923609016")


def _fields(error: pytest.ExceptionInfo[InvalidArgument]) -> dict[str, str]:
    return {v.field: v.description for v in error.value.violations}


def _day(day: dt.date) -> date_pb2.Date:
    return date_pb2.Date(year=day.year, month=day.month, day=day.day)


def test_a_status_named_in_the_mask_must_be_one() -> None:
    """UNSPECIFIED ("no master data yet") would wipe a bankruptcy's class D."""
    request = companies_pb2.UpsertCompanyRequest(
        company=companies_pb2.Company(company=REF),
        update_mask=field_mask_pb2.FieldMask(paths=["status"]),
    )
    with pytest.raises(InvalidArgument) as refused:
        companies._master_values(request)
    assert list(_fields(refused)) == ["company.status"]
    request.company.status = companies_pb2.COMPANY_STATUS_BANKRUPT
    assert companies._master_values(request)[1] == {"status": 4}


def test_a_statement_of_a_period_not_ended_is_not_stored() -> None:
    """A typo's year 2204 would be the company's latest statement for good."""
    statement = sc.statement_message(FinancialStatement(**HEALTHY))
    statement.period_end.year = dt.date.today().year + 180
    request = companies_pb2.SubmitFinancialStatementRequest(
        company=REF, financial_statement=statement
    )
    with pytest.raises(InvalidArgument) as refused:
        companies._statement_intake(request)
    assert list(_fields(refused)) == ["financial_statement.period_end"]
    request.financial_statement.period_end.CopyFrom(_day(dt.date.today()))
    assert companies._statement_intake(request)[1].period_end == dt.date.today()


def test_a_bad_date_and_bad_items_are_refused_together() -> None:
    statement = sc.statement_message(FinancialStatement(**{**HEALTHY, "total_assets": -5.0}))
    statement.period_start.month = 13
    with pytest.raises(InvalidArgument) as refused:
        sc.statement(statement, "s")
    assert set(_fields(refused)) == {"s.period_start", "s.total_assets"}
    statement.period_start.month = 1
    statement.period_end.month = 13  # no "period_end before period_start" on a stand-in
    with pytest.raises(InvalidArgument) as refused:
        sc.statement(statement, "s")
    assert set(_fields(refused)) == {"s.period_end", "s.total_assets"}


def test_nul_characters_are_refused_by_field() -> None:
    """PostgreSQL cannot store U+0000: named here, not a nameless refusal later."""
    master = companies_pb2.UpsertCompanyRequest(
        company=companies_pb2.Company(company=REF, legal_name="Fjord\x00 AS")
    )
    with pytest.raises(InvalidArgument) as refused:
        companies._master_values(master)
    assert list(_fields(refused)) == ["company.legal_name"]

    payment = companies_pb2.PaymentExperience(
        invoice_id="A\x00",
        company=REF,
        invoice_due_date=_day(dt.date.today()),
        days_past_due=10,
        overdue_amount=money_pb2.Money(currency_code="NOK", units=100),
    )
    with pytest.raises(InvalidArgument) as refused:
        companies._payment_report(payment, "payment_experience")
    assert list(_fields(refused)) == ["payment_experience.invoice_id"]

    statement = companies_pb2.SubmitFinancialStatementRequest(
        company=REF,
        financial_statement=sc.statement_message(FinancialStatement(**HEALTHY)),
        source="erp\x00",
    )
    with pytest.raises(InvalidArgument) as refused:
        companies._statement_intake(statement)
    assert list(_fields(refused)) == ["source"]

    now = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    event = companies_pb2.CompanyEvent(
        event_id="e\x001",
        company=REF,
        source="bureau\x00",
        payment_remark_registered=companies_pb2.PaymentRemarkRegistered(
            remark_id="r\x001", creditor_name="Bank\x00"
        ),
    )
    event.occurred_time.FromDatetime(now)
    with pytest.raises(InvalidArgument) as refused:
        companies._incoming_events(companies_pb2.RecordEventsRequest(events=[event]))
    assert set(_fields(refused)) == {
        "events[0].event_id",
        "events[0].source",
        "events[0].payment_remark_registered.remark_id",
        "events[0].payment_remark_registered.creditor_name",
    }


def test_a_refused_settled_date_still_says_settled() -> None:
    """No second, misleading "must be greater than 0 while unpaid" beside it."""
    payment = companies_pb2.PaymentExperience(
        invoice_id="A-1",
        company=REF,
        invoice_due_date=_day(dt.date.today()),
        days_past_due=0,
        overdue_amount=money_pb2.Money(currency_code="NOK"),
        settled_date=date_pb2.Date(year=2024, month=13, day=1),
    )
    with pytest.raises(InvalidArgument) as refused:
        companies._payment_report(payment, "p")
    assert list(_fields(refused)) == ["p.settled_date"]

    overdue = limits_pb2.OverduePayment(
        invoice_id="A-1",
        invoice_date=_day(dt.date.today() - dt.timedelta(days=40)),
        invoice_due_date=_day(dt.date.today() - dt.timedelta(days=10)),
        overdue_amount=money_pb2.Money(currency_code="NOK"),
        settled_date=date_pb2.Date(year=2024, month=13, day=1),
    )
    with pytest.raises(InvalidArgument) as refused:
        limits._overdue_values(overdue, "o")
    assert list(_fields(refused)) == ["o.settled_date"]


def test_a_negative_amount_below_one_unit_names_nanos() -> None:
    with pytest.raises(MoneyError) as refused:
        Money.from_parts("NOK", 0, -500_000_000)
    assert refused.value.field == "nanos"
    with pytest.raises(MoneyError) as refused:
        Money.from_parts("NOK", -1, -500_000_000)
    assert refused.value.field == "units"
