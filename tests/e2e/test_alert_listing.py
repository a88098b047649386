"""ListAlerts and GetAlert: every cursor they give is a safe resume point, and
bad input is INVALID_ARGUMENT naming the field, never INTERNAL."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.client.testing import ServerProcess
from creditwatch.server.domain.cursors import Position
from creditwatch.server.store import database
from creditwatch.v1 import alerts_pb2, alerts_pb2_grpc
from tests.conftest import TenantKey
from tests.e2e import alerting
from tests.e2e.alerting import record, remark, subscribe, watch
from tests.e2e.rpc_errors import field_violations
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio

# Every column a writer sets, to copy an alert (the copy gets its own id,
# position and create time; its summary is the `$2` below).
_COPY = """
INSERT INTO alerts (tenant_id, watch_list_id, country, register_number, type, severity,
    priority, company_legal_name, external_reference, exposure_currency, exposure_amount,
    previous_score, score, trigger, suggested_action, summary, occurred_time)
SELECT tenant_id, watch_list_id, country, register_number, type, severity,
    priority, company_legal_name, external_reference, exposure_currency, exposure_amount,
    previous_score, score, trigger, suggested_action, $2, occurred_time
FROM alerts WHERE id = $1::uuid
"""


async def _listed_settled(
    stub: alerts_pb2_grpc.AlertServiceStub, tenant: TenantKey, count: int
) -> list[alerts_pb2.Alert]:
    """The tenant's `count` alerts, newest first, once all have cursors (an open
    write transaction elsewhere on the cluster holds settling back a moment)."""
    deadline = time.monotonic() + 15
    while True:
        listed = await stub.ListAlerts(alerts_pb2.ListAlertsRequest(), metadata=tenant.metadata)
        if len(listed.alerts) == count and all(a.cursor for a in listed.alerts):
            return list(listed.alerts)
        assert time.monotonic() < deadline, listed
        await asyncio.sleep(0.1)


async def test_an_alert_behind_an_open_transaction_is_listed_without_a_cursor_until_it_settles(
    channel: grpc.aio.Channel, database_url: str, feed: TenantKey, tenant: TenantKey
) -> None:
    earlier, later = norwegian_numbers(2, start=94_600_000)
    await watch(channel, tenant, [earlier, later])
    stub = alerts_pb2_grpc.AlertServiceStub(channel)
    await record(channel, feed, remark(earlier, "settle-1"))
    (first,) = await _listed_settled(stub, tenant, 1)

    # A slow writer: its transaction takes its id (the first half of a
    # position) now and commits only after a later transaction's alert.
    slow = await asyncpg.connect(**database.connect_kwargs(database.async_url(database_url)))
    try:
        async with slow.transaction():
            await slow.execute(_COPY, first.name.removeprefix("alerts/"), "slow writer")
            await record(channel, feed, remark(later, "settle-2"))
            listed = await stub.ListAlerts(alerts_pb2.ListAlertsRequest(), metadata=tenant.metadata)
            newest = listed.alerts[0]
            assert newest.company.register_number == later
            # Visible, but resuming after it would skip the slow writer's alert.
            assert newest.cursor == ""
            got = await stub.GetAlert(
                alerts_pb2.GetAlertRequest(name=newest.name), metadata=tenant.metadata
            )
            assert got.alert.name == newest.name and got.alert.cursor == ""
            assert listed.alerts[1].name == first.name and listed.alerts[1].cursor == first.cursor
            stream = subscribe(channel, tenant, after_cursor=first.cursor)
            await alerting.first_heartbeat(stream)
    finally:
        await slow.close()
    # Committed: both reach the stream, the slow writer's first.
    streamed = await alerting.alerts(stream, 2)
    assert streamed[0].summary == "slow writer"
    assert streamed[1].name == newest.name
    stream.cancel()
    # Settled: now the listing and GetAlert give the cursors the stream gave.
    listed_now = {a.name: a.cursor for a in await _listed_settled(stub, tenant, 3)}
    assert [listed_now[a.name] for a in streamed] == [a.cursor for a in streamed]
    got = await stub.GetAlert(
        alerts_pb2.GetAlertRequest(name=newest.name), metadata=tenant.metadata
    )
    assert got.alert.cursor == streamed[1].cursor


async def _refused(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value
    return error.value


async def test_out_of_range_times_are_invalid_argument(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    stub = alerts_pb2_grpc.AlertServiceStub(channel)
    for field, stamp in (
        ("min_create_time", Timestamp(seconds=10**12)),
        ("max_create_time", Timestamp(seconds=-(10**12))),
        ("min_create_time", Timestamp(seconds=0, nanos=-5)),
        ("max_create_time", Timestamp(seconds=0, nanos=10**9)),
    ):
        request = alerts_pb2.ListAlertsRequest(**{field: stamp})
        error = await _refused(stub.ListAlerts(request, metadata=tenant.metadata))
        assert field in field_violations(error), (field, stamp)
    # The range's ends themselves are fine.
    edges = alerts_pb2.ListAlertsRequest(
        min_create_time=Timestamp(seconds=-62_135_596_800),
        max_create_time=Timestamp(seconds=253_402_300_799, nanos=999_999_999),
    )
    assert (await stub.ListAlerts(edges, metadata=tenant.metadata)).alerts == []


def _forged(token: str, key: list[object]) -> str:
    """`token` with another sort key (its filters' fingerprint kept)."""
    body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    body["k"] = key
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


async def test_forged_page_tokens_and_cursors_are_invalid_argument(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    numbers = norwegian_numbers(2, start=94_700_000)
    await watch(channel, tenant, numbers)
    await record(channel, feed, *(remark(n, f"forged-{n}") for n in numbers))
    stub = alerts_pb2_grpc.AlertServiceStub(channel)
    stamp = "2026-01-01T00:00:00+00:00"
    for order_by, key in (
        ("", [stamp, 2**70, 1]),  # xid beyond bigint
        ("", [stamp, 1, -1]),  # no position is negative
        ("", ["2026-01-01T00:00:00", 1, 1]),  # issued times carry their offset
        ("", ["yesterday", 1, 1]),
        ("priority desc", [1.0, 2**40, stamp, 1, 1]),  # severity beyond smallint
        ("priority desc", [1.0, 3, stamp, 1, 2**64]),
    ):
        first = await stub.ListAlerts(
            alerts_pb2.ListAlertsRequest(order_by=order_by, page_size=1), metadata=tenant.metadata
        )
        assert first.next_page_token
        request = alerts_pb2.ListAlertsRequest(
            order_by=order_by, page_size=1, page_token=_forged(first.next_page_token, key)
        )
        error = await _refused(stub.ListAlerts(request, metadata=tenant.metadata))
        assert "page_token" in field_violations(error), key
    # A cursor is refused the same way wherever it is given.
    beyond = alerting.legacy_cursor(Position(2**64 - 1, 1), tenant.tenant_id)
    ack = alerts_pb2.AcknowledgeAlertsRequest(consumer="forger", cursor=beyond)
    error = await _refused(stub.AcknowledgeAlerts(ack, metadata=tenant.metadata))
    assert "cursor" in field_violations(error)
    error = await _refused(subscribe(channel, tenant, after_cursor=beyond).read())
    assert "after_cursor" in field_violations(error)


async def test_another_tenants_page_token_is_refused(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey, other_tenant: TenantKey
) -> None:
    numbers = norwegian_numbers(2, start=94_800_000)
    await watch(channel, tenant, numbers)
    await record(channel, feed, *(remark(n, f"tokens-{n}") for n in numbers))
    stub = alerts_pb2_grpc.AlertServiceStub(channel)
    first = await stub.ListAlerts(
        alerts_pb2.ListAlertsRequest(page_size=1), metadata=tenant.metadata
    )
    assert first.next_page_token
    request = alerts_pb2.ListAlertsRequest(page_size=1, page_token=first.next_page_token)
    error = await _refused(stub.ListAlerts(request, metadata=other_tenant.metadata))
    assert "page_token" in field_violations(error)


async def test_cursors_and_page_tokens_hide_positions_and_earlier_ones_resume_after_an_upgrade(
    channel: grpc.aio.Channel,
    feed: TenantKey,
    tenant: TenantKey,
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    numbers = norwegian_numbers(3, start=94_850_000)
    await watch(channel, tenant, numbers)
    await record(channel, feed, *(remark(n, f"sealed-{n}") for n in numbers))
    stub = alerts_pb2_grpc.AlertServiceStub(channel)
    listed = await _listed_settled(stub, tenant, 3)
    positions = text("SELECT id, xid, seq, create_time FROM alerts WHERE tenant_id = :t")
    async with sessions() as session:
        stored = {
            f"alerts/{row.id}": row
            for row in await session.execute(positions.bindparams(t=tenant.tenant_id))
        }
    heartbeat = await alerting.first_heartbeat(subscribe(channel, tenant))
    for cursor in [heartbeat.cursor, *(a.cursor for a in listed)]:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        for row in stored.values():
            assert struct.pack(">Q", row.xid) not in raw
            assert struct.pack(">Q", row.seq) not in raw
    newest, second = stored[listed[0].name], stored[listed[1].name]
    first = await stub.ListAlerts(
        alerts_pb2.ListAlertsRequest(page_size=1), metadata=tenant.metadata
    )
    assert first.alerts[0].name == listed[0].name
    # What a release before sealed cursors gave out: the position in plain.
    legacy_token = _forged(
        first.next_page_token, [newest.create_time.isoformat(), newest.xid, newest.seq]
    )
    legacy_cursor = alerting.legacy_cursor(Position(second.xid, second.seq), tenant.tenant_id)

    async def continues(channel: grpc.aio.Channel, token: str, cursor: str) -> None:
        page = await alerts_pb2_grpc.AlertServiceStub(channel).ListAlerts(
            alerts_pb2.ListAlertsRequest(page_size=1, page_token=token), metadata=tenant.metadata
        )
        assert [a.name for a in page.alerts] == [listed[1].name]
        resumed = subscribe(channel, tenant, after_cursor=cursor)
        (alert,) = await alerting.alerts(resumed, 1)
        assert alert.name == listed[0].name
        resumed.cancel()

    await continues(channel, first.next_page_token, listed[1].cursor)
    # This deployment never gave them out (no alert before its secret was
    # made): they are refused, the cursor as expired, as anyone can write one.
    with pytest.raises(grpc.aio.AioRpcError) as expired:
        await subscribe(channel, tenant, after_cursor=legacy_cursor).read()
    assert expired.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "START_POSITION_NOW" in (expired.value.details() or "")
    page = alerts_pb2.ListAlertsRequest(page_size=1, page_token=legacy_token)
    error = await _refused(stub.ListAlerts(page, metadata=tenant.metadata))
    assert "page_token" in field_violations(error)
    # As if upgraded a day ago, with these alerts from before: a replica
    # started now reads them, for LEGACY_DAYS after the upgrade.
    secret = text("UPDATE server_secrets SET create_time = :at RETURNING create_time")
    async with sessions.begin() as session:
        (made,) = (await session.execute(text("SELECT create_time FROM server_secrets"))).one()
        await session.execute(secret.bindparams(at=datetime.now(UTC) - timedelta(days=1)))
        await session.execute(
            text(
                "UPDATE alerts SET create_time = create_time - interval '2 days' "
                "WHERE tenant_id = :t"
            ).bindparams(t=tenant.tenant_id)
        )
    try:
        with ServerProcess(database_url) as upgraded:
            async with grpc.aio.insecure_channel(upgraded.address) as upgraded_channel:
                shifted = newest.create_time - timedelta(days=2)
                token = _forged(
                    first.next_page_token, [shifted.isoformat(), newest.xid, newest.seq]
                )
                await continues(upgraded_channel, token, legacy_cursor)
    finally:
        async with sessions.begin() as session:
            await session.execute(secret.bindparams(at=made))
