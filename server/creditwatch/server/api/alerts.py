"""AlertService: the resumable alert stream, durable consumers and alert history."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.alerts.hub import AlertHub, Subscription
from creditwatch.server.api import converters as cv
from creditwatch.server.api.auth import Authenticator
from creditwatch.server.api.errors import server_stream_writes, unary
from creditwatch.server.api.handlers import add_service
from creditwatch.server.domain.alerts import AlertFilter, Severity, StoredAlert
from creditwatch.server.domain.cursors import MAX_SEQ, CursorKeys, Position
from creditwatch.server.domain.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
    ResourceExhausted,
    Unavailable,
)
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.money import Money
from creditwatch.server.domain.paging import (
    PageRequest,
    encode_token,
    page_request,
    tenant_fingerprints,
)
from creditwatch.server.domain.tenants import Caller
from creditwatch.server.store import alerts as store
from creditwatch.server.store.watchlists import WatchListStore
from creditwatch.v1 import alerts_pb2, alerts_pb2_grpc, common_pb2, companies_pb2

log = logging.getLogger(__name__)

MAX_FILTER_WATCH_LISTS = 100
MAX_FILTER_COMPANIES = 1_000
CATCH_UP_BATCH = 500
PAGE = b"page"
"""The purpose a ListAlerts page token's cursor is sealed for (domain.cursors)."""
# An open stream re-checks its key this often (the shortest heartbeat
# interval, so at least once per heartbeat), idle or not.
KEY_CHECK_SECONDS = 5.0
_CONSUMER = re.compile(r"[a-z0-9-]{1,63}")
_ALERT_NAME = re.compile(r"alerts/([0-9a-fA-F-]{36})")
_ORDERS = {"": False, "create_time desc": False, "priority desc": True}
# google.protobuf.Timestamp's valid range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799
_FOREIGN_TOKEN = "not a token this server issued; start again with an empty token"


def _company_event(value: dict[str, Any]) -> companies_pb2.CompanyEvent:
    country, number = value["company"].split("-", 1)
    message = companies_pb2.CompanyEvent(
        event_id=value["event_id"],
        company=common_pb2.CompanyRef(country=country, register_number=number),
        source=value["source"],
        type=companies_pb2.CompanyEventType.ValueType(value["type"]),
    )
    if value.get("occurred_at"):
        message.occurred_time.FromDatetime(datetime.fromisoformat(value["occurred_at"]))
    case = value.get("detail_case")
    if case:
        detail = getattr(message, case)
        detail.SetInParent()  # an empty detail (e.g. BankruptcyOpened{}) still names the case
        json_format.ParseDict(value["detail"], detail, ignore_unknown_fields=True)
    return message


def _date(text: str) -> Any:
    from google.type import date_pb2

    day = datetime.fromisoformat(text).date()
    return date_pb2.Date(year=day.year, month=day.month, day=day.day)


def trigger_message(value: dict[str, Any]) -> alerts_pb2.AlertTrigger:
    """The wire form of a stored trigger."""
    if "event" in value:
        return alerts_pb2.AlertTrigger(event=_company_event(value["event"]))
    if "financial_statement" in value:
        period = value["financial_statement"]
        return alerts_pb2.AlertTrigger(
            financial_statement=alerts_pb2.StatementPeriod(
                period_start=_date(period["period_start"]), period_end=_date(period["period_end"])
            )
        )
    if "rescoring" in value:
        rescoring = value["rescoring"]
        return alerts_pb2.AlertTrigger(
            rescoring=alerts_pb2.Rescoring(
                reason=alerts_pb2.RescoreReason.ValueType(rescoring["reason"]),
                model_version=rescoring["model_version"],
            )
        )
    if "master_data_change" in value:
        return alerts_pb2.AlertTrigger(
            master_data_change=alerts_pb2.MasterDataChange(
                changed_fields=value["master_data_change"]["changed_fields"]
            )
        )
    if "credit_limit" in value:
        return alerts_pb2.AlertTrigger(credit_limit=value["credit_limit"])
    if "overdue_payment" in value:
        return alerts_pb2.AlertTrigger(overdue_payment=value["overdue_payment"])
    return alerts_pb2.AlertTrigger()


def alert_message(alert: StoredAlert, keys: CursorKeys) -> alerts_pb2.Alert:
    """The wire form of a stored alert; no cursor while it is not settled (an
    older transaction may still commit an alert before it, which a stream
    resumed after its cursor would never receive)."""
    message = alerts_pb2.Alert(
        name=f"alerts/{alert.id}",
        cursor=keys.encode(alert.position, alert.tenant_id) if alert.settled else "",
        type=common_pb2.AlertType.ValueType(alert.type),
        severity=common_pb2.Severity.ValueType(alert.severity),
        priority=alert.priority,
        company=cv.company_ref(alert.company),
        company_legal_name=alert.company_legal_name,
        watch_list=f"watchLists/{alert.watch_list_id}",
        external_reference=alert.external_reference,
        trigger=trigger_message(alert.trigger),
        occurred_time=cv.timestamp(alert.occurred_time),
        create_time=cv.timestamp(alert.create_time),
        suggested_action=alerts_pb2.SuggestedAction.ValueType(alert.suggested_action),
        summary=alert.summary,
    )
    if alert.exposure_currency is not None and alert.exposure_amount is not None:
        message.exposure.CopyFrom(
            cv.money_message(Money(alert.exposure_currency, alert.exposure_amount))
        )
    if alert.previous_score is not None:
        message.previous_score.CopyFrom(cv.score_message(alert.previous_score, alert.company))
    if alert.score is not None:
        message.score.CopyFrom(cv.score_message(alert.score, alert.company))
    return message


def _heartbeat(
    position: Position, tenant: uuid.UUID, keys: CursorKeys
) -> alerts_pb2.SubscribeAlertsResponse:
    now = Timestamp()
    now.GetCurrentTime()
    return alerts_pb2.SubscribeAlertsResponse(
        heartbeat=alerts_pb2.Heartbeat(cursor=keys.encode(position, tenant), server_time=now)
    )


def _expired(subject: str) -> FailedPrecondition:
    return FailedPrecondition(
        "the start position is older than alert retention; resynchronise: subscribe from "
        "START_POSITION_NOW, then rebuild state with ListAlerts",
        [
            PreconditionViolation(
                "CURSOR_EXPIRED", subject, "alerts after this position were deleted by retention"
            )
        ],
    )


def _time(value: Timestamp | None, field: str, problems: list[FieldViolation]) -> datetime | None:
    """An optional Timestamp as a datetime; out of the Timestamp's range is a
    violation (Timestamp.ToDatetime would raise: INTERNAL)."""
    if value is None:
        return None
    if not _MIN_SECONDS <= value.seconds <= _MAX_SECONDS or not 0 <= value.nanos < 10**9:
        problems.append(
            FieldViolation(
                field, "must lie between 0001-01-01 and 9999-12-31 UTC, nanos 0 to 999,999,999"
            )
        )
        return None
    return value.ToDatetime(UTC)


def _list_after(
    page: PageRequest, by_priority: bool, keys: CursorKeys, tenant: uuid.UUID
) -> tuple[Any, ...] | None:
    """The sort key a ListAlerts page token continues after, checked to fit the
    columns it is compared with: a forged token is INVALID_ARGUMENT, not a
    query that fails (an integer beyond bigint) or compares wrongly. A token
    holds the last alert's position as its cursor (sealed: see
    domain.cursors); tokens of earlier releases, with the position in plain,
    are read as long as their cursors are."""
    head: tuple[type, ...] = (float, int, str) if by_priority else (str,)
    raw: tuple[Any, ...] | None
    if page.after is not None and len(page.after) == len(head) + 1:
        raw = page.key(*head, str)
        assert raw is not None
        try:
            # Sealed for pages; a token of the release before, for streams.
            sealed = keys.decode(raw[-1], tenant, "page_token", (PAGE, b""))
        except (InvalidArgument, FailedPrecondition):
            # FailedPrecondition: a cursor of the first layout, past its
            # window; no page token ever held one.
            raise InvalidArgument.single("page_token", _FOREIGN_TOKEN) from None
        raw = (*raw[:-1], sealed.xid, sealed.seq)
    else:
        raw = page.key(*head, int, int)
        if raw is None:
            return None
        if not keys.legacy_accepted():  # anyone can write one: see domain.cursors
            raise InvalidArgument.single("page_token", _FOREIGN_TOKEN)
    stamp, position = (raw[2], raw[3:]) if by_priority else (raw[0], raw[1:])
    try:
        when = datetime.fromisoformat(stamp)
        if by_priority:
            Severity(raw[1])  # ValueError unless a severity (the column is a smallint)
        # Issued tokens carry create_time with its offset; the driver converts
        # it to UTC, which a time at the ends of the range cannot be.
        when.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument.single("page_token", _FOREIGN_TOKEN) from None
    # And a position.
    if when.tzinfo is None or not all(0 <= value <= MAX_SEQ for value in position):
        raise InvalidArgument.single("page_token", _FOREIGN_TOKEN)
    return (raw[0], raw[1], when, *position) if by_priority else (when, *position)


def _shutting_down() -> Unavailable:
    return Unavailable("this replica is shutting down; reconnect after the last cursor received")


def _too_slow(max_lag: float) -> ResourceExhausted:
    return ResourceExhausted(
        f"this stream has been behind for more than {max_lag:g} s; "
        "reconnect after the last cursor received (nothing is lost)"
    )


class _StallGuard:
    """Ends a stream whose client stopped reading altogether.

    The stream checks its lag between writes, but a write to a client that
    does not read waits on HTTP/2 flow control and never returns: the call,
    its subscription and its slot would live for ever. One timer per stream
    (not one per write: a live alert goes to every stream) looks every quarter
    of the allowed lag; once a pending write has waited for longer than the
    lag allowed, or the stream has been lagging for longer while a write is
    pending, `scope` expires, which cancels the write. (Waiting alone counts:
    a stream in its first catch-up on a backlog does not count as lagging
    however often its live buffer overflows (`Subscription.offer`), and a
    client that stopped reading then held it for ever.)
    """

    __slots__ = ("_handle", "_loop", "_max_lag", "_scope", "_subscription", "_writing_since")

    def __init__(self, subscription: Subscription, max_lag: float, scope: asyncio.Timeout) -> None:
        self._subscription = subscription
        self._max_lag = max_lag
        self._scope = scope
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_later(max_lag / 4, self._check)
        self._writing_since: float | None = None

    @property
    def writing(self) -> bool:
        """True while the stream awaits a write (set around every write that
        can block)."""
        return self._writing_since is not None

    @writing.setter
    def writing(self, value: bool) -> None:
        self._writing_since = time.monotonic() if value else None

    def _check(self) -> None:
        now = time.monotonic()
        since = self._subscription.lagging_since
        behind = 0.0 if since is None else now - since
        started = self._writing_since
        if started is not None and max(behind, now - started) > self._max_lag:
            self._scope.reschedule(self._loop.time())  # expires now: cancels the write
            return
        delay = self._max_lag / 4
        if since is not None and behind <= self._max_lag:
            delay = min(delay, self._max_lag - behind + 0.01)  # right when the budget ends
        self._handle = self._loop.call_later(delay, self._check)

    def stop(self) -> None:
        """Drop the timer (the stream ended)."""
        self._handle.cancel()


def _consumer_name(name: str, field: str) -> str:
    if not _CONSUMER.fullmatch(name):
        raise InvalidArgument.single(field, "1 to 63 characters of a-z, 0-9 and '-'")
    return name


def _start_subject(request: alerts_pb2.SubscribeAlertsRequest) -> str:
    """The request field a stream's start came from, as CURSOR_EXPIRED names it."""
    start = request.WhichOneof("start")
    if start == "after_cursor":
        return "after_cursor"
    if (start != "position" or request.position == 0) and request.consumer:
        return "consumer"
    return "position"


async def catch_up(
    sessions: async_sessionmaker[AsyncSession],
    tenant: uuid.UUID,
    wanted: AlertFilter,
    position: Position,
    until: Position,
    subject: str,
    batch: int = CATCH_UP_BATCH,
    follow_retention: bool = False,
) -> AsyncIterator[StoredAlert]:
    """The tenant's alerts `wanted` after `position` up to `until`, from the
    database, in position order, `batch` per read. Retention may run while
    they are read (a backlog takes minutes to send to a slow client): a read
    that finds the purged position past where it reads from ends the stream
    with CURSOR_EXPIRED on `subject`, as a start that old would have, rather
    than skip the alerts the purge took; with `follow_retention` (a stream
    that asked for the oldest retained alert) it goes on from the purged
    position instead. The purged position is read after the alerts, in the
    same session: a purge that committed before the alerts were read shows
    there too."""
    while position < until:
        async with sessions() as session:
            found = await store.read_range(session, tenant, wanted, position, until, batch)
            purged = await store.purged_position(session)
        if purged > position:
            if not follow_retention:
                raise _expired(subject)
            position = purged
        for alert in found:
            yield alert
        if len(found) < batch:
            return
        position = max(found[-1].position, position)


class AlertServicer(alerts_pb2_grpc.AlertServiceServicer):
    """gRPC face of the alert outbox and this replica's hub."""

    def __init__(
        self,
        auth: Authenticator,
        sessions: Any,
        hub: AlertHub,
        watch_lists: WatchListStore,
        keys: CursorKeys,
        max_lag_seconds: float = 60.0,
    ) -> None:
        self._max_lag = max_lag_seconds
        self._keys = keys
        # A live alert goes to every subscriber of its tenant: convert and
        # serialise it once (see `add_to_server`).
        self._converted: OrderedDict[uuid.UUID, bytes] = OrderedDict()
        self._auth = auth
        self._sessions = sessions
        self._hub = hub
        self._watch_lists = watch_lists

    async def caller(self, context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
        """The calling tenant and its key's grants."""
        return await self._auth.caller(context)

    async def _filter(
        self, message: alerts_pb2.AlertFilter, tenant: uuid.UUID, field: str
    ) -> AlertFilter:
        problems: list[FieldViolation] = []
        if len(message.watch_lists) > MAX_FILTER_WATCH_LISTS:
            problems.append(
                FieldViolation(f"{field}.watch_lists", f"at most {MAX_FILTER_WATCH_LISTS}")
            )
        if len(message.companies) > MAX_FILTER_COMPANIES:
            problems.append(FieldViolation(f"{field}.companies", f"at most {MAX_FILTER_COMPANIES}"))
        lists: list[uuid.UUID] = []
        for i, name in enumerate(message.watch_lists):
            try:
                lists.append(cv.watch_list_id(name, f"{field}.watch_lists[{i}]"))
            except InvalidArgument as error:
                problems.extend(error.violations)
        known_types = set(common_pb2.AlertType.values())
        for i, value in enumerate(message.alert_types):
            if value not in known_types or value == 0:
                problems.append(
                    FieldViolation(f"{field}.alert_types[{i}]", f"unknown alert type {value}")
                )
        if message.minimum_severity not in set(common_pb2.Severity.values()):
            problems.append(
                FieldViolation(
                    f"{field}.minimum_severity", f"unknown severity {message.minimum_severity}"
                )
            )
        companies: list[CompanyId] = []
        for i, ref in enumerate(message.companies):
            company = cv.company(ref, f"{field}.companies[{i}]", problems)
            if company is not None:
                companies.append(company)
        if problems:
            raise InvalidArgument(problems)
        for watch_list in lists:
            await self._watch_lists.get(tenant, watch_list)  # NotFound for unknown/foreign
        return AlertFilter(
            watch_lists=frozenset(lists),
            types=frozenset(int(t) for t in message.alert_types),
            minimum_severity=int(message.minimum_severity),
            companies=frozenset((c.country, c.register_number) for c in companies),
        )

    async def _start(
        self, request: alerts_pb2.SubscribeAlertsRequest, tenant: uuid.UUID
    ) -> Position:
        """Where the stream starts, checked against retention."""
        async with self._sessions() as session:
            purged = await store.purged_position(session)
        start = request.WhichOneof("start")
        if start == "after_cursor":
            position = self._keys.decode(request.after_cursor, tenant, "after_cursor")
            if position < purged:
                raise _expired("after_cursor")
            return position
        if start == "position" and request.position != 0:
            if request.position == alerts_pb2.START_POSITION_OLDEST_RETAINED:
                return purged
            if request.position == alerts_pb2.START_POSITION_NOW:
                return self._hub.position
            raise InvalidArgument.single("position", f"unknown start position {request.position}")
        if request.consumer:
            async with self._sessions.begin() as session:
                stored = await store.consumer_position(session, tenant, request.consumer)
                if stored is None:
                    return await store.create_consumer(
                        session, tenant, request.consumer, self._hub.position
                    )
            if stored < purged:
                raise _expired("consumer")
            return stored
        return self._hub.position

    async def _catch_up(
        self, subscription: Subscription, position: Position, subject: str, oldest: bool
    ) -> AsyncIterator[StoredAlert]:
        """Alerts between `position` and the hub position at registration, from
        the database, in position order (`catch_up`; a stream that asked for
        the oldest retained alert follows retention)."""
        async for alert in catch_up(
            self._sessions,
            subscription.tenant,
            subscription.filter,
            position,
            subscription.registered_at,
            subject,
            follow_retention=oldest,
        ):
            yield alert

    @server_stream_writes
    async def SubscribeAlerts(  # type: ignore[override]
        self,
        request: alerts_pb2.SubscribeAlertsRequest,
        tenant: uuid.UUID,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        interval = request.heartbeat_interval_seconds or 30
        if not 5 <= interval <= 300:
            raise InvalidArgument.single(
                "heartbeat_interval_seconds", "5 to 300 seconds, or 0 for 30"
            )
        if request.consumer:
            _consumer_name(request.consumer, "consumer")
        wanted = await self._filter(request.filter, tenant, "filter")
        if not await self._hub.ready(10.0):
            raise Unavailable("the alert feed is not connected to the database yet; retry")
        # Sent with context.write, not yielded (see errors.server_stream_writes);
        # a live alert goes as the bytes every stream shares (`add_to_server`).
        write: Callable[[Any], Awaitable[None]] = context.write
        subscription = self._hub.subscribe(tenant, wanted)
        try:
            async with self._guarded(subscription) as guard:
                position = await self._start(request, tenant)
                subject = _start_subject(request)
                oldest = (
                    request.WhichOneof("start") == "position"
                    and request.position == alerts_pb2.START_POSITION_OLDEST_RETAINED
                )
                await write(_heartbeat(position, tenant, self._keys))
                last_sent = time.monotonic()
                # The key was checked when the stream opened; a revoked key must
                # not go on receiving alerts (see `_recheck_key`).
                key_due = last_sent + KEY_CHECK_SECONDS
                while True:
                    # The gap up to the hub's position at (re)registration, from the database.
                    async for alert in self._catch_up(subscription, position, subject, oldest):
                        if subscription.state == "closed":
                            raise _shutting_down()
                        self._check_lag(subscription)
                        if last_sent >= key_due:
                            key_due = await self._recheck_key(context)
                        guard.writing = True
                        await write(
                            alerts_pb2.SubscribeAlertsResponse(
                                alert=alert_message(alert, self._keys)
                            )
                        )
                        guard.writing = False
                        position = alert.position
                        last_sent = time.monotonic()
                    position = max(position, subscription.registered_at)
                    # Live: alerts the hub buffered for us.
                    while subscription.state == "open":
                        live = subscription.pop()
                        if live is not None:
                            if live.position > position:
                                if last_sent >= key_due:
                                    key_due = await self._recheck_key(context)
                                guard.writing = True
                                await write(self._live_message(live))
                                guard.writing = False
                                position = live.position
                                last_sent = time.monotonic()
                            continue
                        subscription.caught_up()
                        now = time.monotonic()
                        if now >= key_due:
                            key_due = await self._recheck_key(context)
                        remaining = interval - (now - last_sent)
                        if remaining > 0 and await subscription.wait(min(remaining, key_due - now)):
                            continue
                        if time.monotonic() - last_sent < interval:
                            continue  # woken for the key check, not for a heartbeat
                        if subscription.buffered or subscription.state != "open":
                            # Offered (or overflowed) during the key check's
                            # await: send it first. A heartbeat now would move
                            # past it, and it would then be dropped as sent.
                            continue
                        # Quiet: every alert up to the hub's position was offered
                        # to us and sent (checked above with no await since).
                        position = max(position, self._hub.position)
                        guard.writing = True
                        await write(_heartbeat(position, tenant, self._keys))
                        guard.writing = False
                        last_sent = time.monotonic()
                    if subscription.state == "closed":
                        raise _shutting_down()
                    self._check_lag(subscription)
                    self._hub.rejoin(subscription)
                    log.debug(
                        "alert stream rejoined",
                        extra={"from": str(position), "to": str(subscription.registered_at)},
                    )
        finally:
            self._hub.unsubscribe(subscription)

    @contextlib.asynccontextmanager
    async def _guarded(self, subscription: Subscription) -> AsyncIterator[_StallGuard]:
        """Run a stream under a `_StallGuard`: a write the guard cut off ends the
        stream RESOURCE_EXHAUSTED, like any stream too far behind."""
        scope = asyncio.timeout(None)
        try:
            async with scope:
                guard = _StallGuard(subscription, self._max_lag, scope)
                try:
                    yield guard
                finally:
                    guard.stop()
        except TimeoutError:
            if not scope.expired():
                raise
            raise _too_slow(self._max_lag) from None

    def _live_message(self, alert: StoredAlert) -> bytes:
        message = self._converted.get(alert.id)
        if message is None:
            message = alerts_pb2.SubscribeAlertsResponse(
                alert=alert_message(alert, self._keys)
            ).SerializeToString()
            self._converted[alert.id] = message
            if len(self._converted) > 10_000:
                self._converted.popitem(last=False)
        return message

    async def _recheck_key(self, context: grpc.aio.ServicerContext[Any, Any]) -> float:
        """End the stream UNAUTHENTICATED if its key was revoked since it opened;
        when the next check is due. A cache look-up (`Authenticator`), no query
        per alert."""
        await self._auth.check_still_valid(context)
        return time.monotonic() + KEY_CHECK_SECONDS

    def _check_lag(self, subscription: Subscription) -> None:
        since = subscription.lagging_since
        if since is not None and time.monotonic() - since > self._max_lag:
            raise _too_slow(self._max_lag)

    @unary
    async def AcknowledgeAlerts(
        self, request: alerts_pb2.AcknowledgeAlertsRequest, tenant: uuid.UUID
    ) -> alerts_pb2.AcknowledgeAlertsResponse:
        problems: list[FieldViolation] = []
        if not _CONSUMER.fullmatch(request.consumer):
            problems.append(FieldViolation("consumer", "1 to 63 characters of a-z, 0-9 and '-'"))
        position = None
        if not request.cursor:
            problems.append(FieldViolation("cursor", "required"))
        else:
            try:
                position = self._keys.decode(request.cursor, tenant, "cursor")
            except InvalidArgument as error:
                problems.extend(error.violations)
        if problems or position is None:
            raise InvalidArgument(problems)
        async with self._sessions.begin() as session:
            stored = await store.acknowledge(session, tenant, request.consumer, position)
        return alerts_pb2.AcknowledgeAlertsResponse(
            acknowledged_cursor=self._keys.encode(stored, tenant)
        )

    @unary
    async def ListAlerts(
        self, request: alerts_pb2.ListAlertsRequest, tenant: uuid.UUID
    ) -> alerts_pb2.ListAlertsResponse:
        if request.order_by.strip().lower() not in _ORDERS:
            raise InvalidArgument.single(
                "order_by", "'create_time desc' (default) or 'priority desc'"
            )
        by_priority = _ORDERS[request.order_by.strip().lower()]
        problems: list[FieldViolation] = []
        low = _time(
            request.min_create_time if request.HasField("min_create_time") else None,
            "min_create_time",
            problems,
        )
        high = _time(
            request.max_create_time if request.HasField("max_create_time") else None,
            "max_create_time",
            problems,
        )
        if problems:
            raise InvalidArgument(problems)
        wanted = await self._filter(request.filter, tenant, "filter")
        # Another tenant's token is refused like a changed filter.
        digest, legacy = tenant_fingerprints(
            tenant,
            sorted(map(str, wanted.watch_lists)),
            sorted(wanted.types),
            wanted.minimum_severity,
            sorted(wanted.companies),
            str(low),
            str(high),
            by_priority,
        )
        page = page_request(
            request.page_size,
            request.page_token,
            digest,
            default_size=100,
            max_size=1_000,
            legacy=legacy,
        )
        after = _list_after(page, by_priority, self._keys, tenant)
        async with self._sessions() as session:
            found = await store.list_page(
                session,
                tenant,
                wanted,
                min_create_time=low,
                max_create_time=high,
                by_priority=by_priority,
                after=after,
                limit=page.size + 1,
            )
        more = len(found) > page.size
        found = found[: page.size]
        token = ""
        if more:
            last = found[-1]
            stamp = last.create_time.isoformat()
            cursor = self._keys.encode(last.position, tenant, PAGE)
            key: tuple[Any, ...] = (
                (last.priority, int(last.severity), stamp, cursor)
                if by_priority
                else (stamp, cursor)
            )
            token = encode_token(key, digest)
        return alerts_pb2.ListAlertsResponse(
            alerts=[alert_message(a, self._keys) for a in found], next_page_token=token
        )

    @unary
    async def GetAlert(
        self, request: alerts_pb2.GetAlertRequest, tenant: uuid.UUID
    ) -> alerts_pb2.GetAlertResponse:
        match = _ALERT_NAME.fullmatch(request.name)
        if match is None:
            raise InvalidArgument.single("name", "must be a resource name 'alerts/{id}'")
        try:
            alert_id = uuid.UUID(match[1])
        except ValueError:
            raise InvalidArgument.single("name", "alert id is not a UUID") from None
        async with self._sessions() as session:
            alert = await store.get(session, tenant, alert_id)
        if alert is None:
            raise NotFound(request.name)
        return alerts_pb2.GetAlertResponse(alert=alert_message(alert, self._keys))


def add_to_server(servicer: AlertServicer, server: grpc.aio.Server) -> None:
    """Register the service like the generated `add_AlertServiceServicer_to_server`,
    except that SubscribeAlerts accepts pre-serialised messages (a live alert
    shared by many streams)."""
    add_service(server, alerts_pb2, "AlertService", servicer, frozenset({"SubscribeAlerts"}))
