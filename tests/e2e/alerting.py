"""Helpers for alert tests: watch companies, cause facts, read streams."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import struct
import uuid
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.type import money_pb2

from creditwatch.server.domain.cursors import Position
from creditwatch.v1 import (
    alerts_pb2,
    alerts_pb2_grpc,
    common_pb2,
    companies_pb2,
    companies_pb2_grpc,
    watchlists_pb2,
    watchlists_pb2_grpc,
)
from tests.conftest import TenantKey


def ref(number: str) -> common_pb2.CompanyRef:
    """A Norwegian company reference."""
    return common_pb2.CompanyRef(country="NO", register_number=number)


async def watch(
    channel: grpc.aio.Channel,
    tenant: TenantKey,
    numbers: list[str],
    *,
    exposure: int = 1_000_000,
    **watch_list: Any,
) -> str:
    """Create a watch list holding `numbers` (each with `exposure` NOK); its name."""
    stub = watchlists_pb2_grpc.WatchListServiceStub(channel)
    created = await stub.CreateWatchList(
        watchlists_pb2.CreateWatchListRequest(
            watch_list=watchlists_pb2.WatchList(display_name="alerts test", **watch_list)
        ),
        metadata=tenant.metadata,
    )
    await stub.AddEntries(
        watchlists_pb2.AddEntriesRequest(
            parent=created.watch_list.name,
            entries=[
                watchlists_pb2.WatchListEntry(
                    company=ref(n),
                    exposure=money_pb2.Money(currency_code="NOK", units=exposure),
                    external_reference=f"cust-{n}",
                )
                for n in numbers
            ],
        ),
        metadata=tenant.metadata,
    )
    return created.watch_list.name


def event(number: str, event_id: str, **detail: Any) -> companies_pb2.CompanyEvent:
    """An event dated 2026-05-01 about a Norwegian company."""
    stamp = Timestamp()
    stamp.FromDatetime(datetime(2026, 5, 1, tzinfo=UTC))
    return companies_pb2.CompanyEvent(
        event_id=event_id, company=ref(number), occurred_time=stamp, source="test", **detail
    )


def remark(number: str, event_id: str) -> companies_pb2.CompanyEvent:
    """A payment remark registered."""
    return event(
        number,
        event_id,
        payment_remark_registered=companies_pb2.PaymentRemarkRegistered(remark_id=event_id),
    )


def bankruptcy(number: str, event_id: str) -> companies_pb2.CompanyEvent:
    """Bankruptcy opened."""
    return event(number, event_id, bankruptcy_opened=companies_pb2.BankruptcyOpened())


async def submit(
    channel: grpc.aio.Channel,
    feed: TenantKey,
    number: str,
    statement: companies_pb2.FinancialStatement,
) -> companies_pb2.SubmitFinancialStatementResponse:
    """SubmitFinancialStatement through the API, for a Norwegian company."""
    stub = companies_pb2_grpc.CompanyDataServiceStub(channel)
    response: companies_pb2.SubmitFinancialStatementResponse = await stub.SubmitFinancialStatement(
        companies_pb2.SubmitFinancialStatementRequest(
            company=ref(number), financial_statement=statement
        ),
        metadata=feed.metadata,
    )
    return response


async def record(
    channel: grpc.aio.Channel, feed: TenantKey, *events: companies_pb2.CompanyEvent
) -> companies_pb2.RecordEventsResponse:
    """RecordEvents through the API."""
    stub = companies_pb2_grpc.CompanyDataServiceStub(channel)
    response: companies_pb2.RecordEventsResponse = await stub.RecordEvents(
        companies_pb2.RecordEventsRequest(events=list(events)), metadata=feed.metadata
    )
    return response


def subscribe(
    channel: grpc.aio.Channel, tenant: TenantKey, **request: Any
) -> grpc.aio.UnaryStreamCall[Any, alerts_pb2.SubscribeAlertsResponse]:
    """Open SubscribeAlerts."""
    stub = alerts_pb2_grpc.AlertServiceStub(channel)
    return stub.SubscribeAlerts(
        alerts_pb2.SubscribeAlertsRequest(**request), metadata=tenant.metadata
    )


async def first_heartbeat(call: Any, seconds: float = 15.0) -> alerts_pb2.Heartbeat:
    """The stream's opening heartbeat (the start position)."""
    message = await asyncio.wait_for(call.read(), seconds)
    assert message.WhichOneof("payload") == "heartbeat", message
    heartbeat: alerts_pb2.Heartbeat = message.heartbeat
    return heartbeat


async def alerts(call: Any, count: int, seconds: float = 15.0) -> list[alerts_pb2.Alert]:
    """The next `count` alerts of a stream (heartbeats skipped)."""
    out: list[alerts_pb2.Alert] = []

    async def read() -> None:
        while len(out) < count:
            message = await call.read()
            assert message is not grpc.aio.EOF, "stream ended"
            if message.WhichOneof("payload") == "alert":
                out.append(message.alert)

    await asyncio.wait_for(read(), seconds)
    return out


async def next_of_type(call: Any, kind: int, at_most: int = 5) -> alerts_pb2.Alert:
    """The stream's next alert of type `kind`, past at most `at_most` - 1 of
    other types: a stream that starts "now" starts at its replica's hub's
    position, which may be a moment behind a commit just made, so that
    commit's alerts can come first (never lost, so possibly early)."""
    for _ in range(at_most):
        (alert,) = await alerts(call, 1)
        if alert.type == kind:
            return alert
    raise AssertionError(f"no alert of type {kind} among the next {at_most}")


async def quiet(call: Any, seconds: float) -> list[alerts_pb2.Alert]:
    """Alerts that arrive within `seconds` (expected: none)."""
    out: list[alerts_pb2.Alert] = []

    async def read() -> None:
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                return
            if message.WhichOneof("payload") == "alert":
                out.append(message.alert)

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(read(), seconds)
    return out


def legacy_cursor(position: Position, tenant: uuid.UUID) -> str:
    """A cursor as releases before sealed cursors issued them (layout 1: the
    position in plain and the tenant's tag), which a client may still hold."""
    tag = hashlib.sha256(tenant.bytes).digest()[:4]
    raw = struct.pack(">BQQ4s", 1, position.xid, position.seq, tag)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
