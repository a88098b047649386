"""The SDK's alert stream against a scripted server: how it reopens, backs
off and gives up (the end-to-end resumption is in tests/e2e/test_sdk_alerts.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from creditwatch.client import RetryPolicy
from creditwatch.client._alerts import AlertStream
from creditwatch.client._errors import CreditwatchError
from creditwatch.client._retry import CallContext
from creditwatch.v1 import alerts_pb2

pytestmark = pytest.mark.asyncio

Step = alerts_pb2.SubscribeAlertsResponse | grpc.aio.AioRpcError | object


def _error(code: grpc.StatusCode, field: str | None = None) -> grpc.aio.AioRpcError:
    trailing: tuple[tuple[str, Any], ...] = ()
    if field is not None:
        bad = error_details_pb2.BadRequest(
            field_violations=[error_details_pb2.BadRequest.FieldViolation(field=field)]
        )
        detail = any_pb2.Any()
        detail.Pack(bad)
        status = status_pb2.Status(
            code=code_pb2.INVALID_ARGUMENT, message="scripted", details=[detail]
        )
        trailing = (("grpc-status-details-bin", status.SerializeToString()),)
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details="scripted"
    )


def _heartbeat(cursor: str) -> alerts_pb2.SubscribeAlertsResponse:
    return alerts_pb2.SubscribeAlertsResponse(heartbeat=alerts_pb2.Heartbeat(cursor=cursor))


def _alert(cursor: str) -> alerts_pb2.SubscribeAlertsResponse:
    return alerts_pb2.SubscribeAlertsResponse(alert=alerts_pb2.Alert(name="a", cursor=cursor))


class _Call:
    def __init__(self, steps: list[Step]) -> None:
        self._steps = steps

    async def read(self) -> Any:
        await asyncio.sleep(0)
        step = self._steps.pop(0) if self._steps else grpc.aio.EOF
        if isinstance(step, grpc.aio.AioRpcError):
            raise step
        return step

    def cancel(self) -> None:
        pass


class _Stub:
    """Each SubscribeAlerts opens the next scripted stream (a list of steps)."""

    def __init__(self, streams: Callable[[int], list[Step]]) -> None:
        self._streams = streams
        self.requests: list[alerts_pb2.SubscribeAlertsRequest] = []

    def SubscribeAlerts(self, request: alerts_pb2.SubscribeAlertsRequest, **_: Any) -> _Call:
        self.requests.append(request)
        return _Call(self._streams(len(self.requests)))


def _stream(stub: _Stub, after: str | None = None, attempts: int = 3) -> AlertStream:
    request = alerts_pb2.SubscribeAlertsRequest(after_cursor=after or "")
    policy = RetryPolicy(max_attempts=attempts, initial_backoff=0.001, max_backoff=0.004)
    return AlertStream(
        stub,  # type: ignore[arg-type]
        CallContext((), None, policy),
        request,
        auto_acknowledge=False,
        acknowledge_interval=1.0,
        reconnect=policy,
    )


async def test_a_fault_that_does_not_go_away_is_raised_after_max_attempts() -> None:
    # Each stream says hello (a heartbeat), then fails INTERNAL: the
    # heartbeats must not reset the count of faults in a row.
    stub = _Stub(lambda n: [_heartbeat(f"h{n}"), _error(grpc.StatusCode.INTERNAL)])
    stream = _stream(stub, attempts=3)
    with pytest.raises(CreditwatchError) as raised:
        await asyncio.wait_for(stream.__anext__(), 5)
    assert raised.value.code == grpc.StatusCode.INTERNAL
    assert len(stub.requests) == 3
    assert stub.requests[-1].after_cursor == "h2"  # resumed after what it saw


async def test_a_server_that_went_away_is_waited_for_without_limit() -> None:
    def streams(n: int) -> list[Step]:
        return [_error(grpc.StatusCode.UNAVAILABLE)] if n < 8 else [_alert("a1")]

    stub = _Stub(streams)
    stream = _stream(stub, attempts=2)
    alert = await asyncio.wait_for(stream.__anext__(), 5)
    assert alert.cursor == "a1"
    assert stream.reconnects == 7


async def test_a_clean_end_reopens_with_a_wait_not_in_a_tight_loop() -> None:
    stub = _Stub(lambda n: [] if n < 5 else [_alert("a1")])  # EOF at once, four times
    stream = _stream(stub)
    assert (await asyncio.wait_for(stream.__anext__(), 5)).cursor == "a1"
    assert stream.reconnects == 4


async def test_a_refused_cursor_of_its_own_is_retried_a_few_times_the_callers_is_not() -> None:
    # A replica of an earlier release refuses the new cursor; the next one takes it.
    refuse = _error(grpc.StatusCode.INVALID_ARGUMENT, "after_cursor")

    def upgrade(n: int) -> list[Step]:
        if n == 1:
            return [_alert("a1"), _error(grpc.StatusCode.UNAVAILABLE)]
        return [refuse] if n == 2 else [_alert("a2")]

    stub = _Stub(upgrade)
    stream = _stream(stub)
    assert (await stream.__anext__()).cursor == "a1"
    assert (await asyncio.wait_for(stream.__anext__(), 5)).cursor == "a2"
    assert [r.after_cursor for r in stub.requests] == ["", "a1", "a1"]
    # A cursor the caller gave and the server refuses is the caller's mistake.
    stub = _Stub(lambda n: [refuse])
    with pytest.raises(CreditwatchError) as raised:
        await _stream(stub, after="forged").__anext__()
    assert raised.value.field_violations.keys() == {"after_cursor"}
    assert len(stub.requests) == 1


async def test_an_expired_cursor_is_raised_naming_which_position_expired() -> None:
    failure = error_details_pb2.PreconditionFailure(
        violations=[
            error_details_pb2.PreconditionFailure.Violation(
                type="CURSOR_EXPIRED", subject="consumer", description="deleted by retention"
            )
        ]
    )
    detail = any_pb2.Any()
    detail.Pack(failure)
    status = status_pb2.Status(
        code=code_pb2.FAILED_PRECONDITION, message="scripted", details=[detail]
    )
    expired = grpc.aio.AioRpcError(
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString())),
        details="scripted",
    )
    stub = _Stub(lambda n: [expired])
    with pytest.raises(CreditwatchError) as raised:
        await _stream(stub).__anext__()
    assert raised.value.preconditions == (("CURSOR_EXPIRED", "consumer"),)
    assert raised.value.precondition_types == ("CURSOR_EXPIRED",)
    assert len(stub.requests) == 1
