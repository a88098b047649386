"""The typed client of AlertService, with an alert stream that resumes by itself."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import Any, Literal

import grpc

from creditwatch.client._errors import CreditwatchError, error_from_rpc
from creditwatch.client._messages import company
from creditwatch.client._retry import CallContext, RetryPolicy
from creditwatch.v1 import alerts_pb2, alerts_pb2_grpc, common_pb2

log = logging.getLogger("creditwatch.client")

# Codes after which a stream is reopened after the last cursor: the server or
# the network went away (UNAVAILABLE), the stream fell behind
# (RESOURCE_EXHAUSTED), or a proxy cut a long call (DEADLINE_EXCEEDED, and
# INTERNAL/UNKNOWN for an abruptly broken connection). Anything else (a bad
# filter, an expired cursor, a revoked key) is raised.
_RESUMABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)
# Of those, the ones that may as well be a fault that never goes away: only
# `RetryPolicy.max_attempts` of them in a row are retried.
_FAULTS = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})
# A stream that stayed open this long was healthy: its break starts the
# back-off and the count of faults afresh.
_HEALTHY_SECONDS = 30.0
# The cursors a stream handed out (alerts' and heartbeats') since its last
# stored acknowledgement, which `acknowledge` may be given back: a refusal of
# one of those may be a replica of an earlier release, waited out; of any
# other cursor, the caller's mistake. Bounded for a consumer that never
# acknowledges (the oldest go first).
_ISSUED_KEPT = 100_000
# Reconnects after which each further one is logged as a warning (the first
# few, routine in a rolling deploy, at info).
_QUIET_RECONNECTS = 3


def _refused_cursor(error: CreditwatchError, field: str) -> bool:
    """Whether the server refused a cursor as not its own (INVALID_ARGUMENT on
    `field`): in a rolling upgrade, a replica of an earlier release refuses
    the cursors of a newer one (see docs/api-conventions.md)."""
    return error.code == grpc.StatusCode.INVALID_ARGUMENT and field in error.field_violations


def alert_filter(
    watch_lists: Iterable[str] = (),
    alert_types: Iterable[common_pb2.AlertType.ValueType | str] = (),
    minimum_severity: common_pb2.Severity.ValueType | str | None = None,
    companies: Iterable[tuple[str, str]] = (),
) -> alerts_pb2.AlertFilter:
    """An `AlertFilter`; types and severity may be given by name ("BANKRUPTCY_OPENED",
    "HIGH"), companies as (country, register number)."""
    types = [
        common_pb2.AlertType.Value(f"ALERT_TYPE_{t.upper()}") if isinstance(t, str) else t
        for t in alert_types
    ]
    severity = (
        common_pb2.Severity.Value(f"SEVERITY_{minimum_severity.upper()}")
        if isinstance(minimum_severity, str)
        else minimum_severity or common_pb2.SEVERITY_UNSPECIFIED
    )
    return alerts_pb2.AlertFilter(
        watch_lists=list(watch_lists),
        alert_types=types,
        minimum_severity=severity,
        companies=[company(country, number) for country, number in companies],
    )


class AlertStream:
    """An async iterator of alerts that survives disconnects and server restarts.

        async with client.alerts.subscribe(consumer="case-system", auto_acknowledge=True) as stream:
            async for alert in stream:
                handle(alert)

    It remembers the cursor of the last alert it yielded and of every heartbeat,
    and when the stream breaks (server restart, network, a replica shutting
    down, the stream falling behind, a clean end) it reopens it after that
    cursor, waiting between attempts as `reconnect` says, the wait growing
    until a stream delivers an alert or stays open for 30 s. Attempts are
    unlimited for a server or network that went away; an error that may be
    the server's own fault (INTERNAL, UNKNOWN), or a cursor the server refuses
    as not its own (a replica of an earlier release, in a rolling upgrade),
    is retried `reconnect.max_attempts` times in a row, then raised. Reconnects
    after the third in a row are logged as warnings. Nothing is lost and
    nothing is repeated within one `AlertStream`. An expired cursor
    (`FailedPreconditionError` with "CURSOR_EXPIRED") and other refusals are
    raised: resynchronise with `AlertsClient.list`.

    With a durable `consumer` and `auto_acknowledge=True`, an alert is
    acknowledged once your loop asks for the next one (it has been handled),
    and heartbeats move the stored position while nothing happens; positions
    are sent at most every `acknowledge_interval` seconds, and on `close()`.
    The alert your loop holds when it ends, by `break` or by an exception, is
    not acknowledged, so the next `AlertStream` of the consumer delivers it
    again; call `acknowledge()` before a `break` if it was handled. A position
    that cannot be stored because the server is unreachable is logged and sent
    again with the next alert, heartbeat or `close()`; it never ends the stream.
    """

    def __init__(
        self,
        stub: alerts_pb2_grpc.AlertServiceAsyncStub,
        context: CallContext,
        request: alerts_pb2.SubscribeAlertsRequest,
        *,
        auto_acknowledge: bool,
        acknowledge_interval: float,
        reconnect: RetryPolicy,
    ) -> None:
        if auto_acknowledge and not request.consumer:
            raise ValueError("auto_acknowledge needs a durable consumer name")
        self._stub = stub
        self._context = context
        self._request = request
        self._auto_acknowledge = auto_acknowledge
        self._acknowledge_interval = acknowledge_interval
        self._reconnect = reconnect
        self._call: Any = None
        self._closed = False
        self.cursor: str | None = request.after_cursor or None
        """Position after the last alert yielded (or the last heartbeat): where a
        reconnect resumes."""
        # An alert handed to the caller is not handled until the caller asks
        # for the next one: `_yielded` and `_handled` differ while it is in flight.
        self._yielded: str | None = None
        self._handled: str | None = None
        self._pending: str | None = None  # the position to store, once sent: `_acknowledged`
        self._acknowledged: str | None = None
        self._last_ack = 0.0
        self._ack_refusals = 0
        self._own_cursor = False  # `cursor` came from the server, not the caller
        self._issued: OrderedDict[str, None] = OrderedDict()
        self._opened_at = 0.0
        # Breaks since the stream last delivered an alert or stayed open for
        # long, and of those the ones that may not go away by themselves, in
        # a row (see `_broken`).
        self._failures = 0
        self._faults = 0
        self.reconnects = 0
        """How many times the stream was reopened."""

    def _open(self) -> None:
        request = alerts_pb2.SubscribeAlertsRequest()
        request.CopyFrom(self._request)
        if self.cursor is not None:
            request.after_cursor = self.cursor  # resume exactly after what we saw
        self._call = self._stub.SubscribeAlerts(request, metadata=tuple(self._context.metadata))
        self._opened_at = time.monotonic()

    async def _store(self, *, force: bool, patient: bool, asked: bool = False) -> bool:
        """Send the pending position; False if it stays pending (too soon after
        the last one, or the server could not be reached) for the next try.
        `asked`: the caller named a cursor this stream did not hand out, so a
        refusal is theirs to hear at once, not one to wait out as a replica of
        an earlier release refusing a newer one's cursor."""
        cursor = self._pending
        if not self._request.consumer or cursor is None or cursor == self._acknowledged:
            return True
        if not force and time.monotonic() - self._last_ack < self._acknowledge_interval:
            return False
        try:
            # Not `patient` (inside __anext__): one attempt, as the stream's own
            # reconnect loop waits out an outage and the position goes again
            # with the next alert or heartbeat.
            await self._context.unary(
                self._stub.AcknowledgeAlerts,
                alerts_pb2.AcknowledgeAlertsRequest(consumer=self._request.consumer, cursor=cursor),
                retryable=patient,
                rpc_timeout=None,
            )
        except CreditwatchError as error:
            refused = _refused_cursor(error, "cursor")
            if refused and asked:
                raise
            if refused:
                # A replica of an earlier release, in a rolling upgrade: the
                # next try may reach another, or this one upgraded.
                self._ack_refusals += 1
            if not (error.code in _RESUMABLE or refused) or (
                refused and self._ack_refusals >= self._reconnect.max_attempts
            ):
                raise
            log.warning(
                "could not store the consumer position; it is sent again later",
                extra={"consumer": self._request.consumer, "error": str(error)},
            )
            return False
        self._acknowledged = cursor
        self._last_ack = time.monotonic()
        self._ack_refusals = 0
        if cursor in self._issued:  # it and those handed out before it are stored
            while next(iter(self._issued)) != cursor:
                self._issued.popitem(last=False)
            self._issued.popitem(last=False)
        return True

    def _issue(self, cursor: str) -> None:
        """Remember a cursor handed out (see `_ISSUED_KEPT`)."""
        self._issued[cursor] = None
        if len(self._issued) > _ISSUED_KEPT:
            self._issued.popitem(last=False)

    async def acknowledge(self, cursor: str | None = None) -> bool:
        """Store the consumer's position now: `cursor`, or the last alert yielded
        (which counts as handled from now on).

        Returns False if the server could not be reached (or, for a cursor this
        stream handed out, refused it as a replica of an earlier release may):
        the position is kept and sent with the next alert, heartbeat or
        `close()`. Other refusals (a malformed cursor, a revoked key) are
        raised, and the refused position is dropped (the one pending before
        stays).
        """
        cursor = cursor or self._yielded
        if cursor is None:
            return True
        before = self._pending
        self._pending = cursor
        try:
            stored = await self._store(force=True, patient=True, asked=cursor not in self._issued)
        except CreditwatchError:
            if self._pending == cursor:
                self._pending = before
            raise
        if cursor == self._yielded:
            self._handled = cursor  # the caller is done with the alert it holds
        return stored

    def __aiter__(self) -> AlertStream:
        return self

    async def __anext__(self) -> alerts_pb2.Alert:
        # The caller asks for more: the alert it held is handled.
        self._handled = self._yielded
        if self._auto_acknowledge and self._handled is not None:
            self._pending = self._handled
        await self._store(force=False, patient=False)
        while not self._closed:
            if self._call is None:
                self._open()
            try:
                message = await self._call.read()
            except asyncio.CancelledError:
                # `close()` from another task cancels the call under this
                # read, which grpc.aio raises as a cancellation of the
                # reading task: the stream ends, as for a close in between.
                # A cancellation of the reading task itself goes on up.
                task = asyncio.current_task()
                if self._closed and (task is None or not task.cancelling()):
                    raise StopAsyncIteration from None
                raise
            except grpc.aio.AioRpcError as rpc_error:
                self._call = None
                error = error_from_rpc(rpc_error)
                if self._closed:
                    raise error from rpc_error
                refused = self._own_cursor and _refused_cursor(error, "after_cursor")
                if error.code not in _RESUMABLE and not refused:
                    raise error from rpc_error
                if self._broken(fault=refused or error.code in _FAULTS):
                    raise error from rpc_error
                await self._wait(str(error))
                continue
            if message is grpc.aio.EOF:
                # The server (or a proxy) ended the stream cleanly: reopen,
                # waiting as after a break, so a proxy that keeps doing so
                # gets no tight loop.
                self._call = None
                self._broken(fault=False)
                await self._wait("the server ended the stream")
                continue
            if message.WhichOneof("payload") == "heartbeat":
                # Everything before a heartbeat was yielded and, as the caller
                # asked for more, handled: the heartbeat's position is safe.
                self.cursor = self._yielded = self._handled = message.heartbeat.cursor
                self._own_cursor = True
                self._issue(self.cursor)
                if self._auto_acknowledge:
                    self._pending = self._handled
                await self._store(force=False, patient=False)
                continue
            alert: alerts_pb2.Alert = message.alert
            self.cursor = self._yielded = alert.cursor
            self._own_cursor = True
            self._issue(alert.cursor)
            self._failures = self._faults = 0  # it delivers: healthy
            return alert
        raise StopAsyncIteration

    def _broken(self, *, fault: bool) -> bool:
        """Count a break of the stream; True when it is a fault one time too many."""
        if time.monotonic() - self._opened_at >= _HEALTHY_SECONDS:
            self._failures = self._faults = 0
        self._failures += 1
        self._faults = self._faults + 1 if fault else 0
        return self._faults >= self._reconnect.max_attempts

    async def _wait(self, problem: str) -> None:
        """Wait before reopening the stream, longer after each break in a row."""
        self.reconnects += 1
        wait = self._reconnect.backoff(min(self._failures, 30))
        level = logging.WARNING if self._failures > _QUIET_RECONNECTS else logging.INFO
        log.log(
            level,
            "alert stream broken; resuming after %s (attempt %d in a row, next in %.1f s)",
            problem,
            self._failures,
            wait,
            extra={"error": problem, "wait_seconds": round(wait, 3)},
        )
        await asyncio.sleep(wait)

    async def close(self) -> None:
        """End the stream and store what is pending: with `auto_acknowledge`, the
        last handled position (never the alert the loop still held)."""
        self._closed = True
        if self._call is not None:
            self._call.cancel()
            self._call = None
        if self._auto_acknowledge and self._handled is not None:
            self._pending = self._handled
        try:
            await self._store(force=True, patient=True)
        except (CreditwatchError, grpc.aio.UsageError) as error:  # UsageError: channel closed
            log.warning("could not acknowledge on close", extra={"error": str(error)})

    async def __aenter__(self) -> AlertStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class AlertsClient:
    """Alerts (`AlertService`); get it as `client.alerts`."""

    def __init__(self, channel: grpc.aio.Channel, context: CallContext) -> None:
        self._stub = alerts_pb2_grpc.AlertServiceStub(channel)
        self._call = context

    def subscribe(
        self,
        *,
        filter: alerts_pb2.AlertFilter | None = None,
        after_cursor: str | None = None,
        start: Literal["now", "oldest"] | None = None,
        consumer: str | None = None,
        auto_acknowledge: bool = False,
        acknowledge_interval: float = 1.0,
        heartbeat_interval: int = 30,
        reconnect: RetryPolicy | None = None,
    ) -> AlertStream:
        """An `AlertStream` of the tenant's alerts matching `filter` (see `alert_filter`).

        Where it starts: after `after_cursor`; else at `start` ("now" or the
        "oldest" retained alert); else after the durable `consumer`'s stored
        position (a new consumer starts now); else now.
        """
        if after_cursor is not None and start is not None:
            raise ValueError("give after_cursor or start, not both")
        request = alerts_pb2.SubscribeAlertsRequest(
            consumer=consumer or "", heartbeat_interval_seconds=heartbeat_interval
        )
        if filter is not None:
            request.filter.CopyFrom(filter)
        if after_cursor is not None:
            request.after_cursor = after_cursor
        elif start is not None:
            request.position = (
                alerts_pb2.START_POSITION_NOW
                if start == "now"
                else alerts_pb2.START_POSITION_OLDEST_RETAINED
            )
        return AlertStream(
            self._stub,
            self._call,
            request,
            auto_acknowledge=auto_acknowledge,
            acknowledge_interval=acknowledge_interval,
            reconnect=reconnect or RetryPolicy(initial_backoff=0.2, max_backoff=5.0),
        )

    async def acknowledge(
        self, consumer: str, cursor: str, *, rpc_timeout: float | None = None
    ) -> str:
        """Move a durable consumer to `cursor` (never back); returns its stored cursor."""
        response = await self._call.unary(
            self._stub.AcknowledgeAlerts,
            alerts_pb2.AcknowledgeAlertsRequest(consumer=consumer, cursor=cursor),
            retryable=True,
            rpc_timeout=rpc_timeout,
        )
        return response.acknowledged_cursor

    async def list(
        self,
        *,
        filter: alerts_pb2.AlertFilter | None = None,
        order_by: Literal["create_time desc", "priority desc"] = "create_time desc",
        page_size: int = 500,
        rpc_timeout: float | None = None,
    ) -> AsyncIterator[alerts_pb2.Alert]:
        """Every retained alert matching `filter`, newest first or by priority,
        fetched page by page."""
        request = alerts_pb2.ListAlertsRequest(order_by=order_by, page_size=page_size)
        if filter is not None:
            request.filter.CopyFrom(filter)
        async for page in self._call.pages(self._stub.ListAlerts, request, rpc_timeout=rpc_timeout):
            for alert in page.alerts:
                yield alert

    async def get(self, name: str, *, rpc_timeout: float | None = None) -> alerts_pb2.Alert:
        """One alert by name ("alerts/{id}")."""
        response = await self._call.unary(
            self._stub.GetAlert,
            alerts_pb2.GetAlertRequest(name=name),
            retryable=True,
            rpc_timeout=rpc_timeout,
        )
        return response.alert
