"""UpsertCompany and ReportPaymentExperience: master data and pooled payment data."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.type import date_pb2, money_pb2, postal_address_pb2
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.v1 import alerts_pb2, common_pb2, companies_pb2, companies_pb2_grpc
from tests.conftest import TenantKey, new_tenant
from tests.e2e import alerting
from tests.e2e.alerting import bankruptcy, record, ref, subscribe, watch
from tests.e2e.rpc_errors import field_violations
from tests.e2e.test_scoring import healthy
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio


def _day(value: dt.date) -> date_pb2.Date:
    return date_pb2.Date(year=value.year, month=value.month, day=value.day)


async def test_upsert_creates_then_alerts_on_changed_master_data(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    number = norwegian_numbers(1, start=86_500_000)[0]
    data = companies_pb2_grpc.CompanyDataServiceStub(channel)
    company = companies_pb2.Company(
        company=ref(number),
        legal_name="Fjordkraft Verksted AS",
        industry_code="25.620",
        legal_form="AS",
        status=companies_pb2.COMPANY_STATUS_ACTIVE,
        registered_address=postal_address_pb2.PostalAddress(
            region_code="NO", postal_code="5003", locality="Bergen", address_lines=["Strandkaien 2"]
        ),
        registration_date=_day(dt.date(2004, 3, 1)),
    )
    created = await data.UpsertCompany(
        companies_pb2.UpsertCompanyRequest(company=company), metadata=feed.metadata
    )
    assert created.created
    assert created.company.legal_name == "Fjordkraft Verksted AS"
    assert created.effect.alerts_raised_count == 0

    watch_list = await watch(channel, tenant, [number])
    call = subscribe(channel, tenant)
    await alerting.first_heartbeat(call)
    renamed = await data.UpsertCompany(
        companies_pb2.UpsertCompanyRequest(
            company=companies_pb2.Company(company=ref(number), legal_name="Fjordkraft Holding AS"),
            update_mask=field_mask_pb2.FieldMask(paths=["legal_name"]),
        ),
        metadata=feed.metadata,
    )
    assert not renamed.created
    assert renamed.company.industry_code == "25.620"  # untouched by the mask
    (alert,) = await alerting.alerts(call, 1)
    assert alert.type == common_pb2.ALERT_TYPE_MASTER_DATA_CHANGED
    assert list(alert.trigger.master_data_change.changed_fields) == ["legal_name"]
    assert alert.company_legal_name == "Fjordkraft Holding AS"
    assert alert.watch_list == watch_list

    got = await data.GetCompany(
        companies_pb2.GetCompanyRequest(name=f"companies/NO-{number}"), metadata=tenant.metadata
    )
    assert got.company.registered_address.locality == "Bergen"
    assert got.company.registration_date == _day(dt.date(2004, 3, 1))

    # Bankruptcy recorded as an event sets the register status.
    await record(channel, feed, bankruptcy(number, "mb-1"))
    got = await data.GetCompany(
        companies_pb2.GetCompanyRequest(name=f"companies/NO-{number}"), metadata=tenant.metadata
    )
    assert got.company.status == companies_pb2.COMPANY_STATUS_BANKRUPT
    call.cancel()


async def test_a_bankrupt_status_forces_class_d(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    number = norwegian_numbers(1, start=86_600_000)[0]
    data = companies_pb2_grpc.CompanyDataServiceStub(channel)
    await data.SubmitFinancialStatement(
        companies_pb2.SubmitFinancialStatementRequest(
            company=ref(number), financial_statement=healthy()
        ),
        metadata=feed.metadata,
    )
    await watch(channel, tenant, [number])
    status = await data.UpsertCompany(
        companies_pb2.UpsertCompanyRequest(
            company=companies_pb2.Company(
                company=ref(number), status=companies_pb2.COMPANY_STATUS_BANKRUPT
            )
        ),
        metadata=feed.metadata,
    )
    assert status.effect.score.risk_class == common_pb2.RISK_CLASS_D
    assert any(r.code == "OVERRIDE_BANKRUPTCY" for r in status.effect.score.reasons)
    # Handled like a bankruptcy-opened event dated now: that event's alert and
    # the downgrade (the status was unknown before: no master-data alert).
    assert status.effect.alerts_raised_count == 2


async def test_a_bankruptcy_the_status_already_told_is_alerted_only_to_lists_that_missed_it(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    number = norwegian_numbers(1, start=86_150_000)[0]
    data = companies_pb2_grpc.CompanyDataServiceStub(channel)
    await alerting.submit(channel, feed, number, healthy())
    early = await watch(channel, tenant, [number])

    async def set_status(status: companies_pb2.CompanyStatus.ValueType) -> int:
        response = await data.UpsertCompany(
            companies_pb2.UpsertCompanyRequest(
                company=companies_pb2.Company(company=ref(number), status=status)
            ),
            metadata=feed.metadata,
        )
        return response.effect.alerts_raised_count

    assert await set_status(companies_pb2.COMPANY_STATUS_BANKRUPT) == 2
    late = await watch(channel, tenant, [number])  # after the status: never heard of it
    call = subscribe(channel, tenant)
    await alerting.first_heartbeat(call)
    # The feed's bankruptcy event after the status, and a second source's
    # copy of it: stored, but only the list that missed the news hears it.
    told = await record(channel, feed, bankruptcy(number, "kb-1"), bankruptcy(number, "kb-2"))
    assert told.recorded_count == 2
    assert told.effects[0].alerts_raised_count == 1
    (heard,) = await alerting.alerts(call, 1)
    assert heard.type == common_pb2.ALERT_TYPE_BANKRUPTCY_OPENED
    assert (heard.watch_list, heard.trigger.event.event_id) == (late, "kb-1")
    # An annulment (status set back), then a new bankruptcy today: news again.
    assert await set_status(companies_pb2.COMPANY_STATUS_ACTIVE) == 4
    today = alerting.event(number, "kb-3", bankruptcy_opened=companies_pb2.BankruptcyOpened())
    today.occurred_time.GetCurrentTime()
    reopened = await record(channel, feed, today)
    assert reopened.effects[0].alerts_raised_count == 4
    got = await alerting.alerts(call, 8)
    for watch_list in (early, late):
        assert [a.type for a in got if a.watch_list == watch_list] == [
            common_pb2.ALERT_TYPE_MASTER_DATA_CHANGED,
            common_pb2.ALERT_TYPE_RISK_CLASS_UPGRADE,
            common_pb2.ALERT_TYPE_BANKRUPTCY_OPENED,
            common_pb2.ALERT_TYPE_RISK_CLASS_DOWNGRADE,
        ]
    call.cancel()


async def test_a_copy_of_a_bankruptcy_is_not_news_however_dated(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    number = norwegian_numbers(1, start=86_160_000)[0]
    await watch(channel, tenant, [number])
    first = await record(channel, feed, bankruptcy(number, "court-1"))
    assert first.effects[0].alerts_raised_count >= 1
    # Another source reports the same bankruptcy (same day), later on.
    copy = await record(channel, feed, bankruptcy(number, "gazette-1"))
    assert (copy.recorded_count, copy.effects[0].alerts_raised_count) == (1, 0)
    # Nor is one dated after it while the company is still bankrupt: one
    # bankruptcy, dated otherwise by another source.
    later = bankruptcy(number, "court-2")
    later.occurred_time.FromDatetime(dt.datetime(2026, 6, 1, tzinfo=dt.UTC))
    again = await record(channel, feed, later)
    assert (again.recorded_count, again.effects[0].alerts_raised_count) == (1, 0)


async def test_upsert_refuses_bad_fields_and_callers_without_the_grant(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    number = norwegian_numbers(1, start=86_700_000)[0]
    data = companies_pb2_grpc.CompanyDataServiceStub(channel)
    tomorrow = dt.date.today() + dt.timedelta(days=1)
    bad = companies_pb2.UpsertCompanyRequest(
        company=companies_pb2.Company(
            company=ref(number),
            legal_form="aksjeselskap",
            industry_code="banking",
            status=99,  # type: ignore[arg-type]
            registration_date=_day(tomorrow),
        ),
        update_mask=field_mask_pb2.FieldMask(
            paths=["legal_form", "industry_code", "status", "registration_date", "latest_score"]
        ),
    )
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await data.UpsertCompany(bad, metadata=feed.metadata)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error.value)) == {
        "company.legal_form",
        "company.industry_code",
        "company.status",
        "company.registration_date",
        "update_mask.paths[4]",
    }
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await data.UpsertCompany(
            companies_pb2.UpsertCompanyRequest(
                company=companies_pb2.Company(company=ref(number), legal_name="X AS")
            ),
            metadata=tenant.metadata,
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await data.GetCompany(
            companies_pb2.GetCompanyRequest(name=f"companies/NO-{number}"),
            metadata=tenant.metadata,
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND  # nothing was written


def _invoice(number: str, invoice: str, days: int, amount: int) -> companies_pb2.PaymentExperience:
    due = dt.date.today() - dt.timedelta(days=days)
    return companies_pb2.PaymentExperience(
        invoice_id=invoice,
        company=ref(number),
        invoice_due_date=_day(due),
        days_past_due=days,
        overdue_amount=money_pb2.Money(currency_code="NOK", units=amount),
    )


async def test_seriously_overdue_invoices_move_the_class_and_stay_private(
    channel: grpc.aio.Channel,
    feed: TenantKey,
    tenant: TenantKey,
    other_tenant: TenantKey,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    number = norwegian_numbers(1, start=86_800_000)[0]
    data = companies_pb2_grpc.CompanyDataServiceStub(channel)
    first = await data.SubmitFinancialStatement(
        companies_pb2.SubmitFinancialStatementRequest(
            company=ref(number), financial_statement=healthy()
        ),
        metadata=feed.metadata,
    )
    before = first.effect.score.risk_class
    await watch(channel, tenant, [number])
    call = subscribe(channel, tenant)
    await alerting.first_heartbeat(call)

    # A tenant reports its own invoice (any tenant may: it is their ledger);
    # one creditor alone does not move the class every tenant sees.
    lone = await data.ReportPaymentExperience(
        companies_pb2.ReportPaymentExperienceRequest(
            payment_experience=_invoice(number, "INV-12", 200, 12_000)
        ),
        metadata=other_tenant.metadata,
    )
    assert lone.created
    assert lone.effect.score.risk_class == before
    assert not any(r.code == "OVERRIDE_OVERDUE_PAYMENTS" for r in lone.effect.score.reasons)

    # A second creditor does.
    second = await new_tenant(sessions, "second creditor")
    report = await data.ReportPaymentExperience(
        companies_pb2.ReportPaymentExperienceRequest(
            payment_experience=_invoice(number, "INV-77", 200, 81_234)
        ),
        metadata=second.metadata,
    )
    assert report.created
    assert report.effect.score.risk_class == min(before + 1, common_pb2.RISK_CLASS_D)
    assert any(r.code == "OVERRIDE_OVERDUE_PAYMENTS" for r in report.effect.score.reasons)
    assert report.effect.alerts_raised_count == 0  # the reporter watches nothing
    (alert,) = await alerting.alerts(call, 1)
    assert alert.type == common_pb2.ALERT_TYPE_RISK_CLASS_DOWNGRADE
    assert alert.trigger.rescoring.reason == alerts_pb2.RESCORE_REASON_PAYMENT_DATA
    assert "INV-77" not in str(alert) and "81234" not in str(alert)

    again = await data.ReportPaymentExperience(
        companies_pb2.ReportPaymentExperienceRequest(
            payment_experience=_invoice(number, "INV-77", 201, 81_234)
        ),
        metadata=second.metadata,
    )
    assert not again.created
    assert again.effect.alerts_raised_count == 0  # nothing new for the class
    call.cancel()


async def test_payment_reports_are_validated(channel: grpc.aio.Channel, tenant: TenantKey) -> None:
    number = norwegian_numbers(1, start=86_900_000)[0]
    data = companies_pb2_grpc.CompanyDataServiceStub(channel)
    bad = _invoice(number, "", 4_000, 0)
    bad.overdue_amount.units = -5
    bad.invoice_due_date.CopyFrom(_day(dt.date.today() + dt.timedelta(days=3)))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await data.ReportPaymentExperience(
            companies_pb2.ReportPaymentExperienceRequest(payment_experience=bad),
            metadata=tenant.metadata,
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(error.value)
    assert {"payment_experience.invoice_id", "payment_experience.days_past_due"} <= set(violations)
    assert "payment_experience.invoice_due_date" in violations
    assert any(f.startswith("payment_experience.overdue_amount") for f in violations)


async def test_a_nul_character_no_check_names_is_invalid_argument_and_writes_nothing(
    channel: grpc.aio.Channel, feed: TenantKey
) -> None:
    number = norwegian_numbers(1, start=86_180_000)[0]
    data = companies_pb2_grpc.CompanyDataServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await data.UpsertCompany(
            companies_pb2.UpsertCompanyRequest(
                company=companies_pb2.Company(company=ref(number), legal_name="Nordic\x00AS")
            ),
            metadata=feed.metadata,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
    assert "NUL" in (caught.value.details() or "") or "NUL" in str(field_violations(caught.value))
    # Nothing of it was written: the same company is new to a clean upsert.
    created = await data.UpsertCompany(
        companies_pb2.UpsertCompanyRequest(
            company=companies_pb2.Company(company=ref(number), legal_name="Nordic AS")
        ),
        metadata=feed.metadata,
    )
    assert created.created
