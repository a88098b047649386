"""The per-replica alert hub: one tail of the outbox feeding every local stream.

One task per replica reads settled alerts of all tenants in position order
(`store.alerts.tail`) and hands each to the matching local subscriptions, so
a thousand open streams cost one query per wake-up, not a thousand. It is
woken by `NOTIFY creditwatch_alerts` but never trusts a notification to
arrive: it also polls every `poll_interval` seconds, re-polls quickly while
rows exist that are not yet settled, and re-reads from its position after a
lost connection. The hub's position only moves forward, so a reconnect or a
PostgreSQL restart loses nothing.

A subscription buffers at most `buffer` alerts. When a burst or a slow
reader fills it, the subscription is marked lagging and its buffer freed: the
stream then reads what it missed from the database, in pages, and rejoins the
live feed. A stream that stays behind for longer than `max_lag` seconds (its
client does not read fast enough to ever catch up) ends with
RESOURCE_EXHAUSTED; the client resumes from its last cursor with nothing lost.
Memory per stream is bounded either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from typing import Any

import asyncpg

from creditwatch.server import metrics
from creditwatch.server.domain.alerts import AlertFilter, StoredAlert
from creditwatch.server.domain.cursors import Position
from creditwatch.server.domain.errors import Unavailable
from creditwatch.server.store import alerts as store
from creditwatch.server.store import database
from creditwatch.server.waits import wait_set

log = logging.getLogger(__name__)

# Waits before reconnecting after a lost session: doubling from the first to
# the longest while sessions fail at once, from the first again after one
# that worked.
_FIRST_RECONNECT = 0.2
_LONGEST_RECONNECT = 5.0


class Subscription:
    """One stream's view of the hub: a bounded buffer of matching alerts."""

    __slots__ = (
        "_buffer",
        "_deadline",
        "_limit",
        "_loop",
        "_timer",
        "_waiter",
        "_was_live",
        "filter",
        "lagging_since",
        "registered_at",
        "state",
        "tenant",
    )

    def __init__(
        self, tenant: uuid.UUID, wanted: AlertFilter, registered_at: Position, limit: int
    ) -> None:
        self.tenant = tenant
        self.filter = wanted
        self.registered_at = registered_at
        """Hub position at registration: alerts after it come through the buffer;
        alerts up to it must be read from the database."""
        self._buffer: deque[StoredAlert] = deque()
        self._limit = limit
        self._waiter: asyncio.Future[bool] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self.state = "open"
        """"open"; "lagging" (buffer overflowed: read the gap from the database,
        then `AlertHub.rejoin`); or "closed" (replica shutting down)."""
        self.lagging_since: float | None = None
        """monotonic() of the first overflow since the stream was last caught
        up; None while it reads its first backlog (see `offer`)."""
        self._was_live = False

    def offer(self, alert: StoredAlert) -> bool:
        """Buffer an alert if it matches; False if the buffer just overflowed."""
        if self.state != "open" or not self.filter.matches(alert):
            return True
        if len(self._buffer) >= self._limit:
            self.state = "lagging"
            if self.lagging_since is None and self._was_live:
                # Not in the first catch-up: a backlog read from the database
                # takes as long as it takes, and a client reading it at full
                # speed is not slow (one that stops reading is cut by the
                # stream's stall guard).
                self.lagging_since = time.monotonic()
            self._buffer.clear()
            self._wake()
            return False
        self._buffer.append(alert)
        self._wake()
        return True

    def caught_up(self) -> None:
        """The stream has sent everything buffered: it is live, not lagging."""
        self.lagging_since = None
        self._was_live = True

    def past_first_catch_up(self) -> None:
        """The stream read its first backlog (and fell behind while it did):
        from now on an overflow starts its lag clock (see `offer`), or a
        client reading slower than its alerts come would catch up for ever."""
        self._was_live = True

    def close(self) -> None:
        """End the stream (replica shutting down)."""
        self.state = "closed"
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    @property
    def buffered(self) -> bool:
        """Whether an alert waits in the buffer."""
        return bool(self._buffer)

    def pop(self) -> StoredAlert | None:
        """The next buffered alert, if any."""
        return self._buffer.popleft() if self._buffer else None

    async def wait(self, seconds: float) -> bool:
        """Wait until something is buffered or the state changes; False on timeout."""
        if self._buffer or self.state != "open":
            return True
        # One future per wait and one timer per quiet spell, not asyncio.wait_for
        # on an Event (a task per wait): every stream waits again after every
        # alert it sends, so at 1,000 streams this is on the fan-out's
        # critical path. The timer is not cancelled and re-armed per alert: it
        # stays armed, and when it fires before the latest deadline it re-arms
        # itself for that deadline.
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()  # one getpid(), not one per wait
        deadline = self._deadline = loop.time() + seconds
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline, self._expire)
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiter = waiter
        try:
            woken = await waiter
        finally:
            self._waiter = None
        # The timer and an offer can both fall due in one loop iteration: the
        # timer's False must not hide an alert buffered after it fired (the
        # stream would send a heartbeat past that alert, then drop it).
        return woken or bool(self._buffer) or self.state != "open"

    def _expire(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # not waiting: the next wait arms its own timer
        assert self._loop is not None
        if self._deadline - self._loop.time() > _TIMER_SLACK:
            self._timer = self._loop.call_at(self._deadline, self._expire)
        else:
            waiter.set_result(False)

    def release(self) -> None:
        """Drop the timer (the stream ended)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


# asyncio runs a timer up to its clock resolution early.
_TIMER_SLACK = max(0.001, time.get_clock_info("monotonic").resolution)


class AlertHub:
    """Tails the alert outbox for this replica and fans out to subscriptions."""

    def __init__(
        self,
        url: str,
        *,
        poll_interval: float = 1.0,
        batch: int = 1_000,
        buffer: int = 1_000,
        query_timeout: float = 10.0,
    ) -> None:
        # Every query of the hub's connection has a deadline: a connection
        # gone silent (a failover, a firewall dropping the flow) fails a poll
        # within it and the hub reconnects, keeping its position. Without
        # one, a poll waited for the operating system to give up on the
        # socket (minutes) while streams sent heartbeats of a frozen position.
        self._connect = database.connect_kwargs(url) | {"command_timeout": query_timeout}
        self._poll_interval = poll_interval
        self._batch = batch
        self._buffer = buffer
        self._position: Position | None = None
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._by_tenant: dict[uuid.UUID, set[Subscription]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._connected = False  # the current session has read the table
        self.dispatched = 0
        self.overflows = 0

    @property
    def position(self) -> Position:
        """Every alert at or before this position has been handed to subscribers."""
        if self._position is None:
            raise RuntimeError("alert hub not ready")
        return self._position

    @property
    def subscribers(self) -> int:
        """Open subscriptions on this replica."""
        return sum(len(s) for s in self._by_tenant.values())

    async def ready(self, seconds: float) -> bool:
        """Wait until the hub knows its position (first connection made)."""
        await wait_set(self._ready, seconds)
        return self._ready.is_set()

    def subscribe(self, tenant: uuid.UUID, wanted: AlertFilter) -> Subscription:
        """Register a stream; alerts after `registered_at` arrive in its buffer.
        Unavailable once the hub has stopped (a stream still setting up when
        the replica began shutting down would otherwise send heartbeats of a
        hub that reads nothing until the server's grace ran out)."""
        if self._stopped:
            raise Unavailable("this replica is shutting down; reconnect")
        subscription = Subscription(tenant, wanted, self.position, self._buffer)
        self._by_tenant.setdefault(tenant, set()).add(subscription)
        return subscription

    def rejoin(self, subscription: Subscription) -> None:
        """A lagging stream read its gap up to `registered_at`; buffer again from now."""
        subscription.registered_at = self.position
        subscription.state = "open"
        subscription.past_first_catch_up()

    def unsubscribe(self, subscription: Subscription) -> None:
        """Forget a stream (idempotent)."""
        subscription.release()
        group = self._by_tenant.get(subscription.tenant)
        if group is not None:
            group.discard(subscription)
            if not group:
                del self._by_tenant[subscription.tenant]

    def wake(self) -> None:
        """Poll now (NOTIFY arrived, or a local write committed)."""
        self._wake.set()

    def _on_notify(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        self._wake.set()

    def _dispatch(self, alerts: list[StoredAlert]) -> None:
        for alert in alerts:
            group = self._by_tenant.get(alert.tenant_id)
            if not group:
                continue
            for subscription in group:
                if not subscription.offer(alert):
                    self.overflows += 1
                    metrics.ALERT_STREAM_LAGGING.inc()
        self.dispatched += len(alerts)
        metrics.ALERTS_DISPATCHED.inc(len(alerts))
        now = datetime.now(UTC)
        for alert in alerts:
            metrics.ALERT_LAG_SECONDS.observe(max(0.0, (now - alert.create_time).total_seconds()))

    async def _poll(self, connection: asyncpg.Connection) -> None:
        """Read and dispatch until caught up with everything settled."""
        delay = 0.002
        while True:
            page = await store.tail(connection, self.position, self._batch, self._by_tenant)
            if page.alerts:
                self._dispatch(page.alerts)
                log.debug(
                    "alert hub dispatched",
                    extra={"alerts": len(page.alerts), "position": str(page.position)},
                )
            self._position = max(self.position, page.position)
            if page.read >= self._batch:
                continue
            if not await store.pending(connection, self.position):
                return
            # Rows exist whose transactions (or an older one) have not settled:
            # look again soon, without waiting for a notification.
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    async def _session(self) -> None:
        connection = await asyncpg.connect(**self._connect)
        try:
            # No jsonb codec: alerts arrive as text and only those a local
            # stream wants are decoded (store.alerts.alert_from_row, orjson).
            await connection.add_listener(store.CHANNEL, self._on_notify)
            if self._position is None:
                xmin = await connection.fetchval(
                    "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
                )
                self._position = Position.settled_below(int(xmin))
                self._ready.set()
                log.info("alert hub tailing", extra={"position": str(self._position)})
            last_log = time.monotonic()
            while True:
                self._wake.clear()
                await self._poll(connection)
                self._connected = True
                if time.monotonic() - last_log > 60:
                    last_log = time.monotonic()
                    log.info(
                        "alert hub",
                        extra={
                            "subscribers": self.subscribers,
                            "dispatched": self.dispatched,
                            "overflows": self.overflows,
                        },
                    )
                # Not asyncio.wait_for: a wake-up as the hub is stopped could
                # swallow the cancellation, and the hub would tail for ever.
                await wait_set(self._wake, self._poll_interval)
        finally:
            connection.terminate()

    async def _run(self) -> None:
        delay = _FIRST_RECONNECT
        while True:
            self._connected = False
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("alert hub connection lost", extra={"error": str(error)})
            if self._connected:
                # A session that got going: the outage starts now, and the
                # wait with it (not where the last outage's left off, which
                # after a few blips would hold every stream back 5 s each time).
                delay = _FIRST_RECONNECT
            await asyncio.sleep(delay)
            delay = min(delay * 2, _LONGEST_RECONNECT)

    def start(self) -> None:
        """Begin tailing in the background."""
        self._stopped = False
        self._task = asyncio.create_task(self._run(), name="alert-hub")

    async def stop(self) -> None:
        """Close every subscription (their streams end UNAVAILABLE), refuse new
        ones, and stop tailing."""
        self._stopped = True
        for group in list(self._by_tenant.values()):
            for subscription in list(group):
                subscription.close()
        self._by_tenant.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
