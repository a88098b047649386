"""The SubscribeAlerts handler on a stand-in hub and clock (and the real
database for its start position).

* A heartbeat never moves past an alert the hub buffered for the stream while
  it was checking its key (an await): the heartbeat would tell the client
  everything before it was sent, and the alert, popped next, would be dropped
  as already sent. The key check and the heartbeat fall due together here
  (as after a long catch-up that wrote nothing) and the hub offers an alert
  mid-check.
* A replica shutting down ends a stream that is still catching up on a
  backlog at once (UNAVAILABLE), not when the backlog is through."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.alerts.hub import Subscription
from creditwatch.server.api import alerts as api
from creditwatch.server.domain.alerts import AlertFilter, StoredAlert
from creditwatch.server.domain.cursors import CursorKeys, Position
from creditwatch.server.domain.errors import Unavailable
from creditwatch.v1 import alerts_pb2
from tests.unit.test_subscription import stored_alert

pytestmark = pytest.mark.asyncio

TENANT = uuid.uuid4()


def _alert(position: Position) -> StoredAlert:
    return stored_alert(position, TENANT)


class _Hub:
    """What the handler uses of AlertHub: one subscription, a position."""

    def __init__(self) -> None:
        self.position = Position(100, 0)
        self.subscription: Subscription | None = None

    async def ready(self, seconds: float) -> bool:
        return True

    def subscribe(self, tenant: uuid.UUID, wanted: AlertFilter) -> Subscription:
        self.subscription = Subscription(tenant, wanted, self.position, 100)
        return self.subscription

    def dispatch(self, alert: StoredAlert) -> None:
        """As the hub's tail does: offer, and move the position, in one step."""
        assert self.subscription is not None
        self.subscription.offer(alert)
        self.position = alert.position

    def unsubscribe(self, subscription: Subscription) -> None:
        pass

    def rejoin(self, subscription: Subscription) -> None:
        subscription.state = "open"
        subscription.registered_at = self.position


class _Auth:
    """The key check: the hub offers an alert while it waits."""

    def __init__(self, hub: _Hub) -> None:
        self.hub = hub
        self.checks = 0

    async def check_still_valid(self, context: Any) -> None:
        self.checks += 1
        if self.checks == 1:
            self.hub.dispatch(_alert(Position(101, 1)))
        await asyncio.sleep(0)


class _Clock:
    """time.monotonic for the handler: ten seconds pass between readings once
    the stream has sent its first message (heartbeats and key checks are due)."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.running = False

    def monotonic(self) -> float:
        if self.running:
            self.now += 10.0
        return self.now


class _Context:
    def __init__(self, hub: _Hub, clock: _Clock, close_after: int = 3) -> None:
        self.hub, self.clock = hub, clock
        self.close_after = close_after
        self.sent: list[alerts_pb2.SubscribeAlertsResponse] = []

    async def write(self, message: Any) -> None:
        if isinstance(message, bytes):
            message = alerts_pb2.SubscribeAlertsResponse.FromString(message)
        self.sent.append(message)
        self.clock.running = True
        if len(self.sent) == self.close_after and self.hub.subscription is not None:
            self.hub.subscription.close()  # as AlertHub.stop does


def _servicer(
    sessions: async_sessionmaker[AsyncSession],
) -> tuple[_Hub, _Clock, CursorKeys, api.AlertServicer]:
    hub, clock = _Hub(), _Clock()
    keys = CursorKeys(b"k" * 32)
    servicer = api.AlertServicer(
        _Auth(hub),  # type: ignore[arg-type]
        sessions,
        hub,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]  # no watch-list filter here
        keys,
    )
    return hub, clock, keys, servicer


async def _stream(
    servicer: api.AlertServicer, request: alerts_pb2.SubscribeAlertsRequest, context: _Context
) -> None:
    """The handler itself, without its authentication wrapper."""
    await asyncio.wait_for(
        api.AlertServicer.SubscribeAlerts.__wrapped__(  # type: ignore[attr-defined]
            servicer, request, TENANT, context
        ),
        30,
    )


async def test_a_heartbeat_waits_for_an_alert_offered_during_the_key_check(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    hub, clock, keys, servicer = _servicer(sessions)
    monkeypatch.setattr(api, "time", clock)
    context = _Context(hub, clock)
    request = alerts_pb2.SubscribeAlertsRequest(heartbeat_interval_seconds=5)
    with pytest.raises(Unavailable):
        await _stream(servicer, request, context)
    kinds = [m.WhichOneof("payload") for m in context.sent]
    assert kinds[:2] == ["heartbeat", "alert"], kinds
    alert = context.sent[1].alert
    assert keys.decode(alert.cursor, TENANT, "cursor") == Position(101, 1)
    # A later heartbeat is at or past the alert, never a jump over it unsent.
    for message in context.sent[2:]:
        assert keys.decode(message.heartbeat.cursor, TENANT, "c") >= Position(101, 1)


async def test_a_stream_catching_up_ends_when_the_replica_shuts_down(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    hub, clock, _, servicer = _servicer(sessions)
    read: list[int] = []

    async def backlog(*args: Any, **kwargs: Any) -> Any:
        for seq in range(1, 1_001):  # a backlog read from the database
            read.append(seq)
            yield _alert(Position(50, seq))

    monkeypatch.setattr(api, "catch_up", backlog)
    # The initial heartbeat, then the hub stops after the first backlog alert.
    context = _Context(hub, clock, close_after=2)
    with pytest.raises(Unavailable, match="shutting down"):
        await _stream(servicer, alerts_pb2.SubscribeAlertsRequest(), context)
    assert len(context.sent) == 2
    assert len(read) < 5  # it stopped reading the backlog too
