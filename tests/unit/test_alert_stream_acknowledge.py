"""`AlertStream.acknowledge` over a stand-in server: a refused cursor the
stream handed out is waited out (a replica of an earlier release may refuse a
newer one's cursors in a rolling upgrade), however many heartbeats came since;
any other refused cursor is the caller's mistake, raised at once."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from creditwatch.client import InvalidArgumentError
from creditwatch.client._alerts import AlertStream
from creditwatch.client._retry import RetryPolicy
from creditwatch.v1 import alerts_pb2

pytestmark = pytest.mark.asyncio


class _Call:
    def __init__(self, messages: list[alerts_pb2.SubscribeAlertsResponse]) -> None:
        self._messages = messages

    async def read(self) -> alerts_pb2.SubscribeAlertsResponse:
        if self._messages:
            return self._messages.pop(0)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    def cancel(self) -> None:
        pass


class _Stub:
    AcknowledgeAlerts = "AcknowledgeAlerts"

    def __init__(self, messages: list[alerts_pb2.SubscribeAlertsResponse]) -> None:
        self._messages = messages

    def SubscribeAlerts(self, request: Any, metadata: Any) -> _Call:
        return _Call(self._messages)


class _Server:
    """Stores acknowledged cursors, refusing those in `refused` as a replica
    that cannot read them does."""

    metadata = ()

    def __init__(self, refused: set[str]) -> None:
        self.refused = refused
        self.stored: list[str] = []

    async def unary(self, method: Any, request: Any, **_: Any) -> Any:
        if request.cursor in self.refused:
            raise InvalidArgumentError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "not a cursor of this server",
                field_violations={"cursor": "not a cursor of this server"},
            )
        self.stored.append(request.cursor)
        return alerts_pb2.AcknowledgeAlertsResponse(acknowledged_cursor=request.cursor)


def _alert(cursor: str) -> alerts_pb2.SubscribeAlertsResponse:
    return alerts_pb2.SubscribeAlertsResponse(alert=alerts_pb2.Alert(name=cursor, cursor=cursor))


def _heartbeat(cursor: str) -> alerts_pb2.SubscribeAlertsResponse:
    return alerts_pb2.SubscribeAlertsResponse(heartbeat=alerts_pb2.Heartbeat(cursor=cursor))


async def test_a_refused_cursor_of_the_stream_is_waited_out_and_any_other_is_raised() -> None:
    # A digest's first alert, then a day of heartbeats (every 30 s), then more.
    messages = [_alert("a1"), *(_heartbeat(f"h{i}") for i in range(3_000)), _alert("a2")]
    server = _Server(refused={"a1", "typo"})
    stream = AlertStream(
        _Stub(messages),  # type: ignore[arg-type]
        server,  # type: ignore[arg-type]
        alerts_pb2.SubscribeAlertsRequest(consumer="digest"),
        auto_acknowledge=False,
        acknowledge_interval=1.0,
        reconnect=RetryPolicy(),
    )
    assert (await anext(stream)).cursor == "a1"
    assert (await anext(stream)).cursor == "a2"

    # The digest is mailed; its first alert's cursor meets an old replica.
    assert await stream.acknowledge("a1") is False  # kept, sent again later
    with pytest.raises(InvalidArgumentError):
        await stream.acknowledge("typo")  # never handed out: the caller's mistake
    assert await stream.acknowledge("a2") is True
    assert server.stored == ["a2"]
    await stream.close()
