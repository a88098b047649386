"""Read-only API keys (`tenant:read`) against a real server: they read everything
their tenant has, durable alert consumers included, and every write is
PERMISSION_DENIED and changes nothing; keys without tenant grants still write."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message
from google.type import date_pb2, money_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.api import access
from creditwatch.server.domain.tenants import SCOPE_TENANT_READ, SCOPE_TENANT_WRITE
from creditwatch.server.store.tenants import TenantStore
from creditwatch.v1 import (
    alerts_pb2,
    alerts_pb2_grpc,
    companies_pb2,
    companies_pb2_grpc,
    limits_pb2,
    limits_pb2_grpc,
    portfolio_pb2,
    portfolio_pb2_grpc,
    scoring_pb2,
    scoring_pb2_grpc,
    watchlists_pb2,
    watchlists_pb2_grpc,
)
from tests.conftest import TenantKey
from tests.e2e import alerting
from tests.e2e.alerting import record, ref, remark, subscribe, watch
from tests.e2e.test_credit_limits import _ask, _statement, strong
from tests.e2e.test_scoring import healthy
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio

MODULES = (alerts_pb2, companies_pb2, limits_pb2, portfolio_pb2, scoring_pb2, watchlists_pb2)


async def _key(
    sessions: async_sessionmaker[AsyncSession], tenant: TenantKey, *scopes: str
) -> TenantKey:
    """Another key of `tenant` with these grants."""
    key = await TenantStore(sessions).create_api_key(tenant.tenant_id, "second key", scopes)
    return TenantKey(tenant.tenant_id, key.token)


async def _refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def _outcome(
    channel: grpc.aio.Channel, key: TenantKey, module: Any, service: Any, method: Any
) -> tuple[grpc.StatusCode, str]:
    """Call `method` with an empty request; (code, details) of how it ended."""
    path = f"/{service.full_name}/{method.name}"
    request_type: type[Message] = getattr(module, method.input_type.name)
    response_type: type[Message] = getattr(module, method.output_type.name)
    options: dict[str, Any] = {
        "request_serializer": request_type.SerializeToString,
        "response_deserializer": response_type.FromString,
    }
    try:
        if method.client_streaming:
            stream = channel.stream_stream(path, **options)(iter(()), metadata=key.metadata)
            async for _ in stream:
                pass
        elif method.server_streaming:
            call = channel.unary_stream(path, **options)(request_type(), metadata=key.metadata)
            await asyncio.wait_for(call.read(), 15)  # the opening heartbeat
            call.cancel()
        else:
            await channel.unary_unary(path, **options)(
                request_type(), metadata=key.metadata, timeout=30
            )
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def _rpcs() -> list[tuple[Any, Any, Any]]:
    """(pb2 module, service, method) of every RPC in the protos."""
    return [
        (module, service, method)
        for module in MODULES
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ]


async def test_every_rpc_is_enforced_as_classified_for_read_only_and_legacy_keys(
    channel: grpc.aio.Channel, sessions: async_sessionmaker[AsyncSession], tenant: TenantKey
) -> None:
    read_only = await _key(sessions, tenant, SCOPE_TENANT_READ)
    rpcs = _rpcs()
    assert {m.name for _, _, m in rpcs} == access.READS | access.WRITES
    for module, service, method in rpcs:
        code, details = await _outcome(channel, read_only, module, service, method)
        if method.name in access.WRITES:
            assert code == grpc.StatusCode.PERMISSION_DENIED, method.name
            assert "'tenant:write'" in details and "read-only" in details, details
        else:
            # An empty request may be invalid or name nothing; it is not refused for access.
            assert code != grpc.StatusCode.PERMISSION_DENIED, (method.name, details)
        # The tenant's first key, created before grants existed, is never
        # refused for tenant access (intake and model activation need their own
        # grants, as before).
        code, details = await _outcome(channel, tenant, module, service, method)
        assert "tenant:" not in details, (method.name, details)


async def test_a_read_only_key_reads_watch_lists_scores_alerts_limits_and_portfolio(
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    tenant: TenantKey,
    feed: TenantKey,
) -> None:
    first, second = norwegian_numbers(2, start=86_110_000)
    dashboard = await _key(sessions, tenant, SCOPE_TENANT_READ)
    await _statement(channel, feed, first, strong())
    watch_list = await watch(channel, tenant, [first, second])
    limits = limits_pb2_grpc.CreditLimitServiceStub(channel)
    decided = await limits.DecideCreditLimit(_ask(first, 100_000), metadata=tenant.metadata)

    stream = subscribe(channel, dashboard, filter=alerts_pb2.AlertFilter(watch_lists=[watch_list]))
    await alerting.first_heartbeat(stream)
    await record(channel, feed, remark(first, "ro-remark-1"))
    (alert,) = await alerting.alerts(stream, 1)
    stream.cancel()

    lists = watchlists_pb2_grpc.WatchListServiceStub(channel)
    listed = await lists.ListWatchLists(
        watchlists_pb2.ListWatchListsRequest(), metadata=dashboard.metadata
    )
    assert [w.name for w in listed.watch_lists] == [watch_list]
    got = await lists.GetWatchList(
        watchlists_pb2.GetWatchListRequest(name=watch_list), metadata=dashboard.metadata
    )
    assert got.watch_list.entry_count == 2
    entries = await lists.ListEntries(
        watchlists_pb2.ListEntriesRequest(parent=watch_list), metadata=dashboard.metadata
    )
    assert sorted(e.company.register_number for e in entries.entries) == [first, second]
    entry = await lists.GetEntry(
        watchlists_pb2.GetEntryRequest(name=f"{watch_list}/entries/NO-{first}"),
        metadata=dashboard.metadata,
    )
    assert entry.entry.external_reference == f"cust-{first}"

    scoring = scoring_pb2_grpc.ScoringServiceStub(channel)
    score = await scoring.ScoreCompany(
        scoring_pb2.ScoreCompanyRequest(company=ref(first)), metadata=dashboard.metadata
    )
    assert 0 < score.score.probability_of_default < 1
    financials = await scoring.ScoreFinancials(
        scoring_pb2.ScoreFinancialsRequest(financial_statement=healthy()),
        metadata=dashboard.metadata,
    )
    assert financials.score.risk_class
    streamed = [
        reply
        async for reply in scoring.StreamScores(
            iter(
                [
                    scoring_pb2.StreamScoresRequest(
                        items=[scoring_pb2.ScoreItem(correlation_id="row-1", company=ref(first))]
                    )
                ]
            ),
            metadata=dashboard.metadata,
        )
    ]
    assert [r.correlation_id for reply in streamed for r in reply.results] == ["row-1"]

    alerts = alerts_pb2_grpc.AlertServiceStub(channel)
    history = await alerts.ListAlerts(alerts_pb2.ListAlertsRequest(), metadata=dashboard.metadata)
    assert alert.name in [a.name for a in history.alerts]
    one = await alerts.GetAlert(
        alerts_pb2.GetAlertRequest(name=alert.name), metadata=dashboard.metadata
    )
    assert one.alert.name == alert.name

    portfolio = portfolio_pb2_grpc.PortfolioServiceStub(channel)
    summary = await portfolio.GetPortfolioSummary(
        portfolio_pb2.GetPortfolioSummaryRequest(watch_list=watch_list, reporting_currency="NOK"),
        metadata=dashboard.metadata,
    )
    assert summary.entry_count == 2 and summary.scored_entry_count == 1

    policy = await limits.GetCreditPolicy(
        limits_pb2.GetCreditPolicyRequest(), metadata=dashboard.metadata
    )
    assert policy.credit_policy.version == 1
    standing = await limits.ListCreditLimits(
        limits_pb2.ListCreditLimitsRequest(), metadata=dashboard.metadata
    )
    assert [c.name for c in standing.credit_limits] == [decided.decision.credit_limit]
    company = await companies_pb2_grpc.CompanyDataServiceStub(channel).GetCompany(
        companies_pb2.GetCompanyRequest(name=f"companies/NO-{first}"), metadata=dashboard.metadata
    )
    assert company.company.latest_score.probability_of_default == pytest.approx(
        score.score.probability_of_default
    )


async def test_a_read_only_durable_consumer_acknowledges_and_resumes(
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    tenant: TenantKey,
    feed: TenantKey,
) -> None:
    numbers = norwegian_numbers(3, start=86_120_000)
    bridge = await _key(sessions, tenant, SCOPE_TENANT_READ)
    await watch(channel, tenant, numbers)
    call = subscribe(channel, bridge, consumer="mail-bridge")
    await alerting.first_heartbeat(call)
    await record(channel, feed, *(remark(n, f"ro-dur-{n}") for n in numbers))
    got = await alerting.alerts(call, 3)
    acked = await alerts_pb2_grpc.AlertServiceStub(channel).AcknowledgeAlerts(
        alerts_pb2.AcknowledgeAlertsRequest(consumer="mail-bridge", cursor=got[0].cursor),
        metadata=bridge.metadata,
    )
    assert acked.acknowledged_cursor == got[0].cursor
    call.cancel()

    again = subscribe(channel, bridge, consumer="mail-bridge")
    heartbeat = await alerting.first_heartbeat(again)
    assert heartbeat.cursor == got[0].cursor
    rest = await alerting.alerts(again, 2)
    assert [a.name for a in rest] == [a.name for a in got[1:]]
    again.cancel()


async def _state(
    channel: grpc.aio.Channel, sessions: async_sessionmaker[AsyncSession], tenant: TenantKey
) -> tuple[Any, ...]:
    """What a tenant owns, as its own full key reads it (and its invoices in the database)."""
    lists = watchlists_pb2_grpc.WatchListServiceStub(channel)
    listed = await lists.ListWatchLists(
        watchlists_pb2.ListWatchListsRequest(), metadata=tenant.metadata
    )
    entries = {}
    for watch_list in listed.watch_lists:
        found = await lists.ListEntries(
            watchlists_pb2.ListEntriesRequest(parent=watch_list.name), metadata=tenant.metadata
        )
        entries[watch_list.name] = sorted(e.company.register_number for e in found.entries)
    limits = limits_pb2_grpc.CreditLimitServiceStub(channel)
    policy = await limits.GetCreditPolicy(
        limits_pb2.GetCreditPolicyRequest(), metadata=tenant.metadata
    )
    standing = await limits.ListCreditLimits(
        limits_pb2.ListCreditLimitsRequest(), metadata=tenant.metadata
    )
    async with sessions() as session:
        invoices = await session.scalar(
            text(
                "SELECT (SELECT count(*) FROM payment_experiences WHERE tenant_id = :t)"
                " + (SELECT count(*) FROM overdue_payments WHERE tenant_id = :t)"
            ),
            {"t": tenant.tenant_id},
        )
    return (
        sorted((w.name, w.display_name, w.pd_threshold) for w in listed.watch_lists),
        entries,
        policy.credit_policy,
        sorted((c.name, c.amount.units, c.state) for c in standing.credit_limits),
        invoices,
    )


async def test_every_kind_of_write_is_refused_to_a_read_only_key_and_changes_nothing(
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    tenant: TenantKey,
    feed: TenantKey,
) -> None:
    watched, other = norwegian_numbers(2, start=86_130_000)
    await _statement(channel, feed, watched, strong())
    watch_list = await watch(channel, tenant, [watched])
    limits = limits_pb2_grpc.CreditLimitServiceStub(channel)
    decided = await limits.DecideCreditLimit(_ask(watched, 100_000), metadata=tenant.metadata)
    dashboard = await _key(sessions, tenant, SCOPE_TENANT_READ)
    before = await _state(channel, sessions, tenant)
    ro = dashboard.metadata
    today = dt.datetime.now(dt.UTC).date()
    day = date_pb2.Date(year=today.year, month=today.month, day=today.day)

    lists = watchlists_pb2_grpc.WatchListServiceStub(channel)
    companies = companies_pb2_grpc.CompanyDataServiceStub(channel)
    calls = {
        "CreateWatchList": lists.CreateWatchList(
            watchlists_pb2.CreateWatchListRequest(
                watch_list=watchlists_pb2.WatchList(display_name="sneaky")
            ),
            metadata=ro,
        ),
        "UpdateWatchList": lists.UpdateWatchList(
            watchlists_pb2.UpdateWatchListRequest(
                watch_list=watchlists_pb2.WatchList(name=watch_list, display_name="renamed"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
            metadata=ro,
        ),
        "DeleteWatchList": lists.DeleteWatchList(
            watchlists_pb2.DeleteWatchListRequest(name=watch_list), metadata=ro
        ),
        "AddEntries": lists.AddEntries(
            watchlists_pb2.AddEntriesRequest(
                parent=watch_list, entries=[watchlists_pb2.WatchListEntry(company=ref(other))]
            ),
            metadata=ro,
        ),
        "RemoveEntries": lists.RemoveEntries(
            watchlists_pb2.RemoveEntriesRequest(parent=watch_list, companies=[ref(watched)]),
            metadata=ro,
        ),
        "DecideCreditLimit": limits.DecideCreditLimit(_ask(other, 50_000), metadata=ro),
        "UpdateCreditPolicy": limits.UpdateCreditPolicy(
            limits_pb2.UpdateCreditPolicyRequest(
                credit_policy=limits_pb2.CreditPolicy(version=1, decision_validity_days=30),
                update_mask=field_mask_pb2.FieldMask(paths=["decision_validity_days"]),
            ),
            metadata=ro,
        ),
        "ReportOverduePayment": limits.ReportOverduePayment(
            limits_pb2.ReportOverduePaymentRequest(
                parent=decided.decision.credit_limit,
                overdue_payment=limits_pb2.OverduePayment(
                    invoice_id="INV-RO-1",
                    invoice_date=day,
                    invoice_due_date=day,
                    overdue_amount=money_pb2.Money(currency_code="NOK", units=10_000),
                ),
            ),
            metadata=ro,
        ),
        "ReportPaymentExperience": companies.ReportPaymentExperience(
            companies_pb2.ReportPaymentExperienceRequest(
                payment_experience=companies_pb2.PaymentExperience(
                    invoice_id="INV-RO-2",
                    company=ref(watched),
                    invoice_due_date=day,
                    days_past_due=120,
                    overdue_amount=money_pb2.Money(currency_code="NOK", units=10_000),
                )
            ),
            metadata=ro,
        ),
        "RecordEvents": companies.RecordEvents(
            companies_pb2.RecordEventsRequest(events=[remark(watched, "ro-sneaky")]), metadata=ro
        ),
        "ActivateModel": scoring_pb2_grpc.ScoringServiceStub(channel).ActivateModel(
            scoring_pb2.ActivateModelRequest(name="models/pd-lgbm-2026.11.1"), metadata=ro
        ),
    }
    for rpc, call in calls.items():
        refused = await _refused(call)
        assert refused.code() == grpc.StatusCode.PERMISSION_DENIED, rpc
        assert refused.details() == (
            "this API key lacks the 'tenant:write' grant (it is a read-only key); "
            "ask the creditwatch operator"
        ), rpc
    assert await _state(channel, sessions, tenant) == before


async def test_keys_without_tenant_grants_and_write_keys_still_write(
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    tenant: TenantKey,
    feed: TenantKey,
) -> None:
    number = norwegian_numbers(1, start=86_140_000)[0]
    await _statement(channel, feed, number, strong())  # a feed key: companies:write only
    writer = await _key(sessions, tenant, SCOPE_TENANT_WRITE)
    lists = watchlists_pb2_grpc.WatchListServiceStub(channel)
    limits = limits_pb2_grpc.CreditLimitServiceStub(channel)
    for key in (tenant, writer):  # the first key (no grants) and an explicit tenant:write key
        created = await lists.CreateWatchList(
            watchlists_pb2.CreateWatchListRequest(
                watch_list=watchlists_pb2.WatchList(display_name="written")
            ),
            metadata=key.metadata,
        )
        name = created.watch_list.name
        await lists.AddEntries(
            watchlists_pb2.AddEntriesRequest(
                parent=name, entries=[watchlists_pb2.WatchListEntry(company=ref(number))]
            ),
            metadata=key.metadata,
        )
        renamed = await lists.UpdateWatchList(
            watchlists_pb2.UpdateWatchListRequest(
                watch_list=watchlists_pb2.WatchList(name=name, display_name="renamed"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
            metadata=key.metadata,
        )
        assert (renamed.watch_list.display_name, renamed.watch_list.entry_count) == ("renamed", 1)
        await lists.DeleteWatchList(
            watchlists_pb2.DeleteWatchListRequest(name=name), metadata=key.metadata
        )
        decided = await limits.DecideCreditLimit(_ask(number, 10_000), metadata=key.metadata)
        assert decided.decision.credit_limit
    current = await limits.GetCreditPolicy(
        limits_pb2.GetCreditPolicyRequest(), metadata=tenant.metadata
    )
    changed = await limits.UpdateCreditPolicy(
        limits_pb2.UpdateCreditPolicyRequest(
            credit_policy=limits_pb2.CreditPolicy(
                version=current.credit_policy.version, decision_validity_days=30
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["decision_validity_days"]),
        ),
        metadata=tenant.metadata,
    )
    assert changed.credit_policy.version == current.credit_policy.version + 1
