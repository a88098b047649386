"""AlertService end to end: intake writes alerts, streams deliver them in order."""

from __future__ import annotations

import asyncio
import base64
import json

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.jobs.scheduler import purge_alerts
from creditwatch.v1 import (
    alerts_pb2,
    alerts_pb2_grpc,
    common_pb2,
    companies_pb2,
    companies_pb2_grpc,
    limits_pb2,
    limits_pb2_grpc,
    watchlists_pb2,
)
from tests.conftest import TenantKey
from tests.e2e import alerting
from tests.e2e.alerting import bankruptcy, record, ref, remark, subscribe, watch
from tests.e2e.rpc_errors import field_violations
from tests.e2e.test_scoring import distressed, healthy
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio

A = common_pb2.AlertType


def _precondition(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    found = []
    for detail in status.details:
        if detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            found += [(v.type, v.subject) for v in failure.violations]
    return found


async def test_bankruptcy_of_a_watched_company_reaches_the_stream(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey, other_tenant: TenantKey
) -> None:
    watched, unwatched = norwegian_numbers(2, start=88_100_000)
    data = companies_pb2_grpc.CompanyDataServiceStub(channel)
    await data.SubmitFinancialStatement(
        companies_pb2.SubmitFinancialStatementRequest(
            company=ref(watched), financial_statement=healthy()
        ),
        metadata=feed.metadata,
    )
    watch_list = await watch(channel, tenant, [watched], exposure=2_500_000)
    call = subscribe(channel, tenant)
    other = subscribe(channel, other_tenant)
    await alerting.first_heartbeat(call)
    await alerting.first_heartbeat(other)

    response = await record(channel, feed, bankruptcy(watched, "b-1"), bankruptcy(unwatched, "b-2"))
    effects = {e.company.register_number: e for e in response.effects}
    assert effects[watched].alerts_raised_count == 2  # the event, and the class change to D
    assert effects[unwatched].alerts_raised_count == 0

    got = await alerting.alerts(call, 2)
    by_type = {a.type: a for a in got}
    opened = by_type[A.ALERT_TYPE_BANKRUPTCY_OPENED]
    assert opened.severity == common_pb2.SEVERITY_CRITICAL
    assert opened.suggested_action == alerts_pb2.SUGGESTED_ACTION_STOP_CREDIT
    assert opened.priority == 16 * 2_500_000
    assert opened.watch_list == watch_list
    assert opened.company.register_number == watched
    assert opened.external_reference == f"cust-{watched}"
    assert opened.exposure.units == 2_500_000
    assert opened.trigger.event.event_id == "b-1"
    assert opened.trigger.event.WhichOneof("detail") == "bankruptcy_opened"
    assert opened.score.risk_class == common_pb2.RISK_CLASS_D
    assert opened.previous_score.risk_class < common_pb2.RISK_CLASS_D
    downgrade = by_type[A.ALERT_TYPE_RISK_CLASS_DOWNGRADE]
    assert downgrade.severity == common_pb2.SEVERITY_HIGH
    assert "→ D" in downgrade.summary
    # Positions are totally ordered: the two cursors differ and the stream
    # delivered them in order.
    assert got[0].cursor != got[1].cursor
    # Nothing for a tenant that does not watch the company.
    assert await alerting.quiet(other, 1.0) == []
    call.cancel()
    other.cancel()


async def test_watch_list_rules_decide_what_is_raised(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    number = norwegian_numbers(1, start=88_200_000)[0]
    everything = await watch(channel, tenant, [number])
    severe_only = await watch(
        channel,
        tenant,
        [number],
        alert_rules=watchlists_pb2.AlertRules(minimum_severity=common_pb2.SEVERITY_MEDIUM),
    )
    remarks_only = await watch(
        channel,
        tenant,
        [number],
        alert_rules=watchlists_pb2.AlertRules(alert_types=[A.ALERT_TYPE_PAYMENT_REMARK_REGISTERED]),
    )
    call = subscribe(channel, tenant)
    await alerting.first_heartbeat(call)
    response = await record(channel, feed, remark(number, "r-1"))
    # A LOW remark alert for `everything` and `remarks_only`; nothing for `severe_only`.
    assert response.effects[0].alerts_raised_count == 2
    got = await alerting.alerts(call, 2)
    assert {a.watch_list for a in got} == {everything, remarks_only}
    assert all(a.type == A.ALERT_TYPE_PAYMENT_REMARK_REGISTERED for a in got)
    assert all(a.severity == common_pb2.SEVERITY_LOW for a in got)
    assert severe_only not in {a.watch_list for a in got}
    call.cancel()


async def test_pd_threshold_crossing(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    number = norwegian_numbers(1, start=88_300_000)[0]
    data = companies_pb2_grpc.CompanyDataServiceStub(channel)
    first = await data.SubmitFinancialStatement(
        companies_pb2.SubmitFinancialStatementRequest(
            company=ref(number), financial_statement=healthy()
        ),
        metadata=feed.metadata,
    )
    pd = first.effect.score.probability_of_default
    watch_list = await watch(
        channel,
        tenant,
        [number],
        pd_threshold=pd + 1e-6,
        alert_rules=watchlists_pb2.AlertRules(alert_types=[A.ALERT_TYPE_PD_THRESHOLD_CROSSED]),
    )
    call = subscribe(channel, tenant)
    await alerting.first_heartbeat(call)
    worse = await data.SubmitFinancialStatement(
        companies_pb2.SubmitFinancialStatementRequest(
            company=ref(number), financial_statement=distressed()
        ),
        metadata=feed.metadata,
    )
    assert worse.effect.score.probability_of_default > pd
    assert worse.effect.alerts_raised_count == 1
    (alert,) = await alerting.alerts(call, 1)
    assert alert.type == A.ALERT_TYPE_PD_THRESHOLD_CROSSED
    assert alert.watch_list == watch_list
    assert alert.severity == common_pb2.SEVERITY_MEDIUM
    assert alert.suggested_action == alerts_pb2.SUGGESTED_ACTION_REDUCE_LIMIT
    assert alert.previous_score.probability_of_default == pytest.approx(pd)
    call.cancel()


async def test_resume_after_cursor_loses_nothing_and_repeats_nothing(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    numbers = norwegian_numbers(6, start=88_400_000)
    await watch(channel, tenant, numbers)
    call = subscribe(channel, tenant)
    start = await alerting.first_heartbeat(call)
    await record(channel, feed, *(remark(n, f"res-{n}") for n in numbers[:3]))
    first = await alerting.alerts(call, 3)
    call.cancel()
    # While disconnected, three more.
    await record(channel, feed, *(remark(n, f"res-{n}") for n in numbers[3:]))
    resumed = subscribe(channel, tenant, after_cursor=first[-1].cursor)
    heartbeat = await alerting.first_heartbeat(resumed)
    assert heartbeat.cursor == first[-1].cursor
    rest = await alerting.alerts(resumed, 3)
    assert [a.company.register_number for a in first + rest] == numbers
    assert await alerting.quiet(resumed, 0.5) == []
    resumed.cancel()
    # From the very start cursor: all six again, in the same order.
    replay = subscribe(channel, tenant, after_cursor=start.cursor)
    await alerting.first_heartbeat(replay)
    again = await alerting.alerts(replay, 6)
    assert [a.name for a in again] == [a.name for a in first + rest]
    replay.cancel()


async def test_durable_consumer_continues_where_it_acknowledged(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    numbers = norwegian_numbers(4, start=88_500_000)
    await watch(channel, tenant, numbers)
    stub = alerts_pb2_grpc.AlertServiceStub(channel)
    call = subscribe(channel, tenant, consumer="case-system")
    await alerting.first_heartbeat(call)
    await record(channel, feed, *(remark(n, f"dur-{n}") for n in numbers))
    got = await alerting.alerts(call, 4)
    acked = await stub.AcknowledgeAlerts(
        alerts_pb2.AcknowledgeAlertsRequest(consumer="case-system", cursor=got[1].cursor),
        metadata=tenant.metadata,
    )
    assert acked.acknowledged_cursor == got[1].cursor
    # Acknowledging an older cursor does not move the consumer back.
    older = await stub.AcknowledgeAlerts(
        alerts_pb2.AcknowledgeAlertsRequest(consumer="case-system", cursor=got[0].cursor),
        metadata=tenant.metadata,
    )
    assert older.acknowledged_cursor == got[1].cursor
    call.cancel()
    again = subscribe(channel, tenant, consumer="case-system")
    heartbeat = await alerting.first_heartbeat(again)
    assert heartbeat.cursor == got[1].cursor
    rest = await alerting.alerts(again, 2)
    assert [a.name for a in rest] == [a.name for a in got[2:]]
    again.cancel()


async def test_list_get_and_priority_order(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey, other_tenant: TenantKey
) -> None:
    small, large = norwegian_numbers(2, start=88_600_000)
    await watch(channel, tenant, [small], exposure=1_000)
    await watch(channel, tenant, [large], exposure=1_000_000)
    await record(channel, feed, remark(small, "p-1"), remark(large, "p-2"))
    stub = alerts_pb2_grpc.AlertServiceStub(channel)
    by_priority = await stub.ListAlerts(
        alerts_pb2.ListAlertsRequest(order_by="priority desc", page_size=1),
        metadata=tenant.metadata,
    )
    assert [a.company.register_number for a in by_priority.alerts] == [large]
    assert by_priority.alerts[0].priority == 2 * 1_000_000
    second = await stub.ListAlerts(
        alerts_pb2.ListAlertsRequest(
            order_by="priority desc", page_size=1, page_token=by_priority.next_page_token
        ),
        metadata=tenant.metadata,
    )
    assert [a.company.register_number for a in second.alerts] == [small]
    assert second.next_page_token == ""
    # The position inside a page token (its last alert's, settled or not) is
    # no cursor: a stream or a consumer cannot start from it.
    token = by_priority.next_page_token
    inside = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))["k"][-1]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await subscribe(channel, tenant, after_cursor=inside).read()
    assert "after_cursor" in field_violations(caught.value)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AcknowledgeAlerts(
            alerts_pb2.AcknowledgeAlertsRequest(consumer="from-a-page", cursor=inside),
            metadata=tenant.metadata,
        )
    assert "cursor" in field_violations(caught.value)
    newest = await stub.ListAlerts(alerts_pb2.ListAlertsRequest(), metadata=tenant.metadata)
    assert [a.company.register_number for a in newest.alerts] == [large, small]

    name = newest.alerts[0].name
    got = await stub.GetAlert(alerts_pb2.GetAlertRequest(name=name), metadata=tenant.metadata)
    assert got.alert == newest.alerts[0]
    with pytest.raises(grpc.aio.AioRpcError) as foreign:
        await stub.GetAlert(alerts_pb2.GetAlertRequest(name=name), metadata=other_tenant.metadata)
    assert foreign.value.code() == grpc.StatusCode.NOT_FOUND
    assert (
        await stub.ListAlerts(alerts_pb2.ListAlertsRequest(), metadata=other_tenant.metadata)
    ).alerts == []


async def test_bad_requests_name_the_field(
    channel: grpc.aio.Channel, tenant: TenantKey, other_tenant: TenantKey
) -> None:
    stub = alerts_pb2_grpc.AlertServiceStub(channel)
    mine = subscribe(channel, tenant)
    heartbeat = await alerting.first_heartbeat(mine)
    mine.cancel()

    async def refused(call_kwargs: dict[str, object], key: TenantKey) -> grpc.aio.AioRpcError:
        call = subscribe(channel, key, **call_kwargs)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call.read()
        return error.value

    foreign = await refused({"after_cursor": heartbeat.cursor}, other_tenant)
    assert foreign.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "another tenant" in field_violations(foreign)["after_cursor"]
    garbage = await refused({"after_cursor": "not-a-cursor"}, tenant)
    assert "after_cursor" in field_violations(garbage)
    bad_type = await refused({"filter": alerts_pb2.AlertFilter(alert_types=[999])}, tenant)
    assert "filter.alert_types[0]" in field_violations(bad_type)
    unknown_list = await refused(
        {
            "filter": alerts_pb2.AlertFilter(
                watch_lists=[f"watchLists/{'0' * 8}-0000-0000-0000-{'0' * 12}"]
            )
        },
        tenant,
    )
    assert unknown_list.code() == grpc.StatusCode.NOT_FOUND
    bad_consumer = await refused({"consumer": "Case System"}, tenant)
    assert "consumer" in field_violations(bad_consumer)
    short = await refused({"heartbeat_interval_seconds": 1}, tenant)
    assert "heartbeat_interval_seconds" in field_violations(short)
    with pytest.raises(grpc.aio.AioRpcError) as order:
        await stub.ListAlerts(
            alerts_pb2.ListAlertsRequest(order_by="severity"), metadata=tenant.metadata
        )
    assert "order_by" in field_violations(order.value)
    with pytest.raises(grpc.aio.AioRpcError) as ack:
        await stub.AcknowledgeAlerts(
            alerts_pb2.AcknowledgeAlertsRequest(consumer="x", cursor=heartbeat.cursor),
            metadata=other_tenant.metadata,
        )
    assert "cursor" in field_violations(ack.value)


async def test_heartbeats_keep_an_idle_position_fresh(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey, other_tenant: TenantKey
) -> None:
    numbers = norwegian_numbers(1, start=88_700_000)
    await watch(channel, other_tenant, numbers)
    call = subscribe(channel, tenant, heartbeat_interval_seconds=5)
    start = await alerting.first_heartbeat(call)
    # Another tenant's alert moves the replica's position; ours follows in the
    # next heartbeat, though no alert of ours was sent.
    await record(channel, feed, remark(numbers[0], "hb-1"))
    message = await asyncio.wait_for(call.read(), 10)
    assert message.WhichOneof("payload") == "heartbeat"
    assert message.heartbeat.cursor != start.cursor
    call.cancel()


async def test_a_cursor_older_than_retention_is_refused_with_resync_advice(
    channel: grpc.aio.Channel,
    feed: TenantKey,
    tenant: TenantKey,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    number = norwegian_numbers(1, start=88_800_000)[0]
    await watch(channel, tenant, [number])
    call = subscribe(channel, tenant, consumer="old-bridge")
    start = await alerting.first_heartbeat(call)
    call.cancel()
    await record(channel, feed, remark(number, "ret-1"))
    async with sessions.begin() as session:
        await session.execute(
            text(
                "UPDATE alerts SET create_time = now() - interval '400 days' WHERE tenant_id = :t"
            ),
            {"t": tenant.tenant_id},
        )
    assert await purge_alerts(sessions, retention_days=90) == 1

    for request, subject in (
        ({"after_cursor": start.cursor}, "after_cursor"),
        ({"consumer": "old-bridge"}, "consumer"),
    ):
        refused = subscribe(channel, tenant, **request)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await refused.read()
        assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert _precondition(error.value) == [("CURSOR_EXPIRED", subject)]
        assert "ListAlerts" in (error.value.details() or "")
    # Resynchronising from "now" works.
    fresh = subscribe(channel, tenant, position=alerts_pb2.START_POSITION_NOW)
    await alerting.first_heartbeat(fresh)
    fresh.cancel()


async def test_a_class_change_suggests_what_each_tenants_credit_policy_says(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey, other_tenant: TenantKey
) -> None:
    # `tenant` asks for prepayment from customers that fall into class C;
    # `other_tenant` keeps the default policy (C: reduce the limit).
    limits = limits_pb2_grpc.CreditLimitServiceStub(channel)
    current = (
        await limits.GetCreditPolicy(limits_pb2.GetCreditPolicyRequest(), metadata=tenant.metadata)
    ).credit_policy
    stricter = [
        limits_pb2.ClassPolicy(
            risk_class=p.risk_class,
            max_share_of_equity=p.max_share_of_equity,
            max_share_of_sales=p.max_share_of_sales,
            max_payment_terms_days=p.max_payment_terms_days,
            suggested_action=(
                alerts_pb2.SUGGESTED_ACTION_REQUIRE_PREPAYMENT
                if p.risk_class == common_pb2.RISK_CLASS_C
                else p.suggested_action
            ),
        )
        for p in current.class_policies
    ]
    await limits.UpdateCreditPolicy(
        limits_pb2.UpdateCreditPolicyRequest(
            credit_policy=limits_pb2.CreditPolicy(class_policies=stricter),
            update_mask=field_mask_pb2.FieldMask(paths=["class_policies"]),
        ),
        metadata=tenant.metadata,
    )
    number = norwegian_numbers(1, start=88_900_000)[0]
    data = companies_pb2_grpc.CompanyDataServiceStub(channel)
    first = await data.SubmitFinancialStatement(
        companies_pb2.SubmitFinancialStatementRequest(
            company=ref(number), financial_statement=healthy()
        ),
        metadata=feed.metadata,
    )
    assert first.effect.score.risk_class == common_pb2.RISK_CLASS_B
    rules = watchlists_pb2.AlertRules(alert_types=[A.ALERT_TYPE_RISK_CLASS_DOWNGRADE])
    strict_list = await watch(channel, tenant, [number], alert_rules=rules)
    default_list = await watch(channel, other_tenant, [number], alert_rules=rules)
    # A payment remark moves it one class down, to C (the built-in override policy).
    response = await record(channel, feed, remark(number, "policy-r1"))
    assert response.effects[0].score.risk_class == common_pb2.RISK_CLASS_C
    stub = alerts_pb2_grpc.AlertServiceStub(channel)
    actions = {}
    for key, watch_list in ((tenant, strict_list), (other_tenant, default_list)):
        listed = await stub.ListAlerts(
            alerts_pb2.ListAlertsRequest(filter=alerts_pb2.AlertFilter(watch_lists=[watch_list])),
            metadata=key.metadata,
        )
        (alert,) = listed.alerts
        assert alert.type == A.ALERT_TYPE_RISK_CLASS_DOWNGRADE
        actions[watch_list] = alert.suggested_action
    assert actions == {
        strict_list: alerts_pb2.SUGGESTED_ACTION_REQUIRE_PREPAYMENT,
        default_list: alerts_pb2.SUGGESTED_ACTION_REDUCE_LIMIT,
    }
