"""Per-tenant caps in the RPC wrappers, over a real loopback gRPC server with
stand-in servicers: a call past its tenant's cap is RESOURCE_EXHAUSTED with a
QuotaFailure, other tenants are served, and every way a call ends (success,
error, abort, cancel, a dropped connection) gives its slot back."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from creditwatch.server.api import errors
from creditwatch.server.api.errors import bidi_stream, server_stream_writes, unary
from creditwatch.server.api.quotas import Quota, TenantQuotas
from creditwatch.server.domain.errors import InvalidArgument, NotFound, Unauthenticated
from creditwatch.server.domain.tenants import Caller
from creditwatch.v1 import (
    alerts_pb2,
    alerts_pb2_grpc,
    scoring_pb2,
    scoring_pb2_grpc,
    watchlists_pb2,
    watchlists_pb2_grpc,
)

pytestmark = pytest.mark.asyncio

A, B = uuid.UUID(int=0xA), uuid.UUID(int=0xB)
Ctx = grpc.aio.ServicerContext[Any, Any]


def _as(tenant: uuid.UUID) -> tuple[tuple[str, str]]:
    return (("tenant", str(tenant)),)


def _caller(context: Ctx) -> Caller:
    for key, value in context.invocation_metadata() or ():
        if key == "tenant":
            return Caller(uuid.UUID(str(value)))
    raise Unauthenticated("no tenant")


class Lists(watchlists_pb2_grpc.WatchListServiceServicer):
    """GetWatchList waits for `gate` when the name is "wait"."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def caller(self, context: Ctx) -> Caller:
        return _caller(context)

    @unary
    async def GetWatchList(  # type: ignore[override]
        self, request: watchlists_pb2.GetWatchListRequest, tenant: uuid.UUID
    ) -> watchlists_pb2.GetWatchListResponse:
        if request.name == "wait":
            await self.gate.wait()
        elif request.name == "fail":
            raise RuntimeError("unexpected")
        elif request.name == "missing":
            raise NotFound("watchLists/missing")
        return watchlists_pb2.GetWatchListResponse()


class Alerts(alerts_pb2_grpc.AlertServiceServicer):
    """SubscribeAlerts sends one heartbeat, then waits until cancelled; a
    heartbeat interval of 1 is refused after the slot was taken."""

    async def caller(self, context: Ctx) -> Caller:
        return _caller(context)

    @server_stream_writes
    async def SubscribeAlerts(  # type: ignore[override]
        self, request: alerts_pb2.SubscribeAlertsRequest, tenant: uuid.UUID, context: Ctx
    ) -> None:
        if request.heartbeat_interval_seconds == 1:
            raise InvalidArgument.single("heartbeat_interval_seconds", "too short")
        await context.write(alerts_pb2.SubscribeAlertsResponse(heartbeat=alerts_pb2.Heartbeat()))
        await asyncio.Event().wait()


class Scoring(scoring_pb2_grpc.ScoringServiceServicer):
    """StreamScores answers each chunk with `len(items)` empty results, and a
    chunk of 2 items with a thousand answers (a stream busy sending)."""

    async def caller(self, context: Ctx) -> Caller:
        return _caller(context)

    @bidi_stream
    async def StreamScores(  # type: ignore[override]
        self, requests: AsyncIterator[scoring_pb2.StreamScoresRequest], tenant: uuid.UUID
    ) -> AsyncIterator[scoring_pb2.StreamScoresResponse]:
        async for chunk in requests:
            answer = scoring_pb2.StreamScoresResponse(
                results=[scoring_pb2.ScoreItemResult() for _ in chunk.items]
            )
            for _ in range(1000 if len(chunk.items) == 2 else 1):
                yield answer


@pytest.fixture
def caps() -> Iterator[Callable[..., None]]:
    """Set the process's caps for one test; unlimited again afterwards."""

    def set_caps(unary: int = 1000, server_streams: int = 1000, bidi_streams: int = 1000) -> None:
        errors.limit_tenants(
            TenantQuotas(
                Quota("unary calls in flight", "CW_TEST_UNARY", unary),
                Quota("open SubscribeAlerts streams", "CW_TEST_ALERT_STREAMS", server_streams),
                Quota("open StreamScores streams", "CW_TEST_SCORE_STREAMS", bidi_streams),
            )
        )

    yield set_caps
    errors.limit_tenants(TenantQuotas.unlimited())


@pytest.fixture
async def served() -> AsyncIterator[tuple[grpc.aio.Channel, Lists, str]]:
    """(a channel to a server of the stand-ins, the Lists servicer, its address)."""
    server = grpc.aio.server()
    lists = Lists()
    watchlists_pb2_grpc.add_WatchListServiceServicer_to_server(lists, server)
    alerts_pb2_grpc.add_AlertServiceServicer_to_server(Alerts(), server)
    scoring_pb2_grpc.add_ScoringServiceServicer_to_server(Scoring(), server)
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    await server.start()
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            yield channel, lists, address
    finally:
        await server.stop(None)


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


def _quota_failure(error: grpc.aio.AioRpcError) -> error_details_pb2.QuotaFailure:
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    (detail,) = status.details
    failure = error_details_pb2.QuotaFailure()
    assert detail.Unpack(failure)
    return failure


async def test_a_unary_call_past_the_cap_is_refused_with_a_quota_failure_and_others_served(
    served: tuple[grpc.aio.Channel, Lists, str], caps: Callable[..., None]
) -> None:
    channel, lists, _ = served
    caps(unary=2)
    stub = watchlists_pb2_grpc.WatchListServiceStub(channel)
    waiting = [
        asyncio.ensure_future(
            stub.GetWatchList(watchlists_pb2.GetWatchListRequest(name="wait"), metadata=_as(A))
        )
        for _ in range(2)
    ]
    await _until(lambda: errors.running("unary", A) == 2, "A's two calls in flight")

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetWatchList(watchlists_pb2.GetWatchListRequest(name="now"), metadata=_as(A))
    (violation,) = _quota_failure(caught.value).violations
    assert violation.subject == f"tenants/{A}"
    assert "at most 2 unary calls in flight" in violation.description
    assert "CW_TEST_UNARY" in violation.description
    # Another tenant is served meanwhile.
    await stub.GetWatchList(watchlists_pb2.GetWatchListRequest(name="now"), metadata=_as(B))

    lists.gate.set()
    await asyncio.gather(*waiting)
    assert errors.running("unary", A) == 0
    await stub.GetWatchList(watchlists_pb2.GetWatchListRequest(name="now"), metadata=_as(A))


async def test_unary_slots_come_back_after_failed_and_cancelled_calls(
    served: tuple[grpc.aio.Channel, Lists, str], caps: Callable[..., None]
) -> None:
    channel, _, _ = served
    caps(unary=1)
    stub = watchlists_pb2_grpc.WatchListServiceStub(channel)
    for name, code in [
        ("fail", grpc.StatusCode.INTERNAL),
        ("missing", grpc.StatusCode.NOT_FOUND),
        ("fail", grpc.StatusCode.INTERNAL),
        ("missing", grpc.StatusCode.NOT_FOUND),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetWatchList(watchlists_pb2.GetWatchListRequest(name=name), metadata=_as(A))
        assert caught.value.code() == code
    for _ in range(3):  # the client gives up on a call still running
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetWatchList(
                watchlists_pb2.GetWatchListRequest(name="wait"), metadata=_as(A), timeout=0.2
            )
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await _until(lambda: errors.running("unary", A) == 0, "the cancelled call's slot")
    await stub.GetWatchList(watchlists_pb2.GetWatchListRequest(name="now"), metadata=_as(A))


async def test_server_streams_past_the_cap_are_refused_and_every_ending_frees_a_slot(
    served: tuple[grpc.aio.Channel, Lists, str], caps: Callable[..., None]
) -> None:
    channel, _, address = served
    caps(server_streams=2)

    def subscribe(tenant: uuid.UUID, on: grpc.aio.Channel = channel, interval: int = 0) -> Any:
        request = alerts_pb2.SubscribeAlertsRequest(heartbeat_interval_seconds=interval)
        return alerts_pb2_grpc.AlertServiceStub(on).SubscribeAlerts(request, metadata=_as(tenant))

    first, second = subscribe(A), subscribe(A)
    for call in (first, second):
        await call.read()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await subscribe(A).read()
    (violation,) = _quota_failure(caught.value).violations
    assert violation.subject == f"tenants/{A}"
    assert "at most 2 open SubscribeAlerts streams" in violation.description
    theirs = subscribe(B)
    await theirs.read()  # served
    theirs.cancel()

    # Cancelled by the client.
    first.cancel()
    await _until(lambda: errors.running("server_streams", A) == 1, "the cancelled stream's slot")
    third = subscribe(A)
    await third.read()
    # Refused by the handler after it took its slot (more times than the cap).
    third.cancel()
    await _until(lambda: errors.running("server_streams", A) == 1, "the cancelled stream's slot")
    for _ in range(3):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await subscribe(A, interval=1).read()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert errors.running("server_streams", A) == 1
    # The client's connection goes away with its streams.
    async with grpc.aio.insecure_channel(address) as other:
        await subscribe(A, on=other).read()
        assert errors.running("server_streams", A) == 2
    await _until(lambda: errors.running("server_streams", A) == 1, "the closed connection's slot")
    second.cancel()
    await _until(lambda: errors.running("server_streams", A) == 0, "every slot back")


async def test_bidi_streams_past_the_cap_are_refused_and_ended_or_cancelled_ones_free_slots(
    served: tuple[grpc.aio.Channel, Lists, str], caps: Callable[..., None]
) -> None:
    channel, _, _ = served
    caps(bidi_streams=1)
    stub = scoring_pb2_grpc.ScoringServiceStub(channel)
    one = scoring_pb2.StreamScoresRequest(items=[scoring_pb2.ScoreItem()])

    mine = stub.StreamScores(metadata=_as(A))
    await mine.write(one)
    await mine.read()
    extra = stub.StreamScores(metadata=_as(A))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await extra.read()
    (violation,) = _quota_failure(caught.value).violations
    assert violation.subject == f"tenants/{A}"
    assert "CW_TEST_SCORE_STREAMS" in violation.description
    theirs = stub.StreamScores(metadata=_as(B))
    await theirs.write(one)
    assert len((await theirs.read()).results) == 1
    await theirs.done_writing()

    # Ended by the client: the slot is back before the status arrives.
    await mine.done_writing()
    assert await mine.read() is grpc.aio.EOF
    assert await mine.code() == grpc.StatusCode.OK
    assert errors.running("bidi_streams", A) == 0
    # Cancelled while the server is busy sending.
    for _ in range(3):
        busy = stub.StreamScores(metadata=_as(A))
        await busy.write(scoring_pb2.StreamScoresRequest(items=[scoring_pb2.ScoreItem()] * 2))
        await busy.read()
        busy.cancel()
        await _until(lambda: errors.running("bidi_streams", A) == 0, "the cancelled stream's slot")


async def _client(
    sent: list[int], gap: float, count: int | None, close: bool
) -> AsyncIterator[int]:
    """A client's messages: `count` of them (None: endless) `gap` seconds
    apart, then a half-close, or silence (`close` False)."""
    number = 0
    while count is None or number < count:
        await asyncio.sleep(gap)
        sent.append(number)
        yield number
        number += 1
    if not close:
        await asyncio.Event().wait()


async def test_a_refused_stream_is_heard_out_within_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(errors, "REFUSAL_QUIET_SECONDS", 0.2)
    monkeypatch.setattr(errors, "REFUSAL_HEARING_SECONDS", 0.6)
    sent: list[int] = []
    # Until the client half-closes...
    assert await errors._hear_out(_client(sent, 0.01, 3, close=True)) < 0.15
    assert len(sent) == 3
    # ...or goes quiet...
    sent.clear()
    took = await errors._hear_out(_client(sent, 0.01, 2, close=False))
    assert 0.2 <= took < 0.4 and len(sent) == 2
    # ...or has sent the most messages heard...
    sent.clear()
    await errors._hear_out(_client(sent, 0.001, None, close=True))
    assert len(sent) == errors.REFUSAL_HEARING_MESSAGES
    # ...or the longest hearing has passed.
    sent.clear()
    took = await errors._hear_out(_client(sent, 0.1, None, close=True))
    assert 0.6 <= took < 0.8 and 4 <= len(sent) < errors.REFUSAL_HEARING_MESSAGES


async def test_refusals_heard_out_at_once_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(errors, "REFUSAL_QUIET_SECONDS", 30.0)
    monkeypatch.setattr(errors, "REFUSAL_HEARING_SECONDS", 30.0)
    silent: list[int] = []
    hearings = [
        asyncio.create_task(errors._hear_out(_client(silent, 0, 0, close=False)))
        for _ in range(errors.REFUSALS_HEARD_AT_ONCE)
    ]
    await asyncio.sleep(0.05)
    assert not any(h.done() for h in hearings)
    # One more is refused at once, unheard.
    assert await errors._hear_out(_client(silent, 0, 0, close=False)) == 0.0
    for hearing in hearings:
        hearing.cancel()
    await asyncio.gather(*hearings, return_exceptions=True)
    assert errors._hearings == 0
    # Freed: heard out again.
    monkeypatch.setattr(errors, "REFUSAL_QUIET_SECONDS", 0.05)
    assert await errors._hear_out(_client(silent, 0, 0, close=False)) >= 0.05
