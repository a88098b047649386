"""What every official-register adapter shares: HTTP with retries, and the sync loop.

An adapter (one module per register) says how to read a page of its change
feed after a cursor and how to turn a page into creditwatch facts. `sync`
does the rest, the same for every register: read the cursor kept in
PostgreSQL, fetch the next page, keep the updates about watched companies
(or all, if configured), apply them through the same intake path as the API
(`Intake.upsert_company`, `Intake.record_events`), then move the cursor. The
cursor moves only after a page is applied, and every fact has a deterministic
id, so a crash mid-page re-applies the page and changes nothing twice.

Before a feed's first update is read there is no cursor: the point in time the
first run started reading from is stored instead, so every poll until the first
update asks from that same point (a point recomputed per poll, such as "today",
would skip what was published between the day's last poll and midnight).

An event id the intake has stored with other content is refused; the sync logs
and skips such an event (`SyncResult.events_skipped`) rather than stop: a feed
that stopped there would stop for good, every later run failing on that page.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.domain.errors import InvalidArgument
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.intake import IncomingEvent, Intake
from creditwatch.server.store import registers as store

log = logging.getLogger(__name__)

UNIT_PATIENCE = timedelta(hours=24)
"""How long runs keep stopping at a unit the register does not answer for
before they skip it (`sync`): longer than a maintenance window, short
enough that the feed's other companies are not held for days."""


class RegisterUnavailable(Exception):
    """The register kept failing (5xx, 429, network, redirects, bodies that
    are not JSON) after every retry, or refused a request (`RegisterRefused`)."""


class UnitUnavailable(RegisterUnavailable):
    """The register kept failing on one unit (company) that a feed's update
    or the reading of newly watched companies needs: that stops it there,
    to be read again next run; past `sync`'s `unit_patience` of such stops
    at the same unit, the unit is skipped instead (logged as an error), so
    one unit the register never answers for cannot stop a feed for good."""

    def __init__(self, number: str, problem: str) -> None:
        super().__init__(problem)
        self.number = number


class RegisterRefused(RegisterUnavailable):
    """The register answered a request with a 4xx status (other than 429),
    which is not retried: the caller decides whether it is about what was
    asked for (a unit it takes for malformed) or about this client (then,
    like any RegisterUnavailable, it stops the feed until the next run)."""

    def __init__(self, path: str, status: int) -> None:
        super().__init__(f"GET {path}: HTTP {status}")
        self.status = status


@dataclass(frozen=True)
class HttpPolicy:
    """Timeouts and retries for a register's HTTP API."""

    timeout: float = 15.0
    attempts: int = 6
    initial_backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 120.0


def _retry_after(response: httpx.Response, cap: float) -> float | None:
    """Seconds a 429 asks to wait (Retry-After: seconds or an HTTP date), at
    most `cap`; None when the header is missing or unreadable."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            # Raises on what it cannot read (ValueError since Python 3.10,
            # TypeError before), though documented to return None.
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            # "-0000" gives a naive time; RFC 5322 reads it as UTC.
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if math.isnan(seconds):
        return None
    return max(0.0, min(seconds, cap))


class RegisterHttp:
    """GETs JSON from a register, retrying 5xx, 429 (honouring Retry-After),
    network errors, redirects and answers that are not JSON with exponential
    back-off and jitter. A maintenance page served with 200 (or a redirect to
    one) is the register not answering, not an answer: taken as one, the
    update it was asked about would be lost."""

    def __init__(self, base_url: str, policy: HttpPolicy | None = None) -> None:
        self.policy = policy or HttpPolicy()
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(self.policy.timeout),
            headers={"Accept": "application/json", "User-Agent": "creditwatch-register-sync"},
        )
        self.retries = 0

    async def get(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        allow: Sequence[int] = (),
        shape: type[dict[str, Any]] | type[list[Any]] | None = None,
    ) -> tuple[int, Any]:
        """(status, JSON body) of a GET; statuses in `allow` (e.g. 404, 410) are
        returned instead of raised, with no body. A body that is not of
        `shape` (a JSON object or array), when given, is retried as one that
        is not JSON is. Raises RegisterRefused for any other 4xx but 429, and
        RegisterUnavailable when every attempt failed."""
        for attempt in range(1, self.policy.attempts + 1):
            wait = min(self.policy.max_backoff, self.policy.initial_backoff * 2 ** (attempt - 1))
            wait *= 1 - 0.2 * random.random()
            try:
                response = await self._client.get(path, params=params)
            except httpx.RequestError as error:  # transport, decoding (a truncated gzip body)
                problem = f"{type(error).__name__}: {error}"
            else:
                code = response.status_code
                if code in allow:
                    return code, None
                if 200 <= code < 300:
                    kind = response.headers.get("Content-Type", "no content type")
                    try:
                        body = response.json()
                    except ValueError:  # JSONDecodeError, UnicodeDecodeError
                        problem = f"HTTP {code} with a body that is not JSON ({kind})"
                    else:
                        if shape is None or isinstance(body, shape):
                            return code, body
                        problem = f"HTTP {code} with JSON that is not a {shape.__name__} ({kind})"
                elif 300 <= code < 400:
                    where = response.headers.get("Location", "nowhere")
                    problem = f"HTTP {code}: redirected to {where}"
                elif 400 <= code < 500 and code != 429:
                    raise RegisterRefused(path, code)
                else:
                    problem = f"HTTP {code}"
                if code == 429:
                    told = _retry_after(response, self.policy.max_retry_after)
                    wait = told if told is not None else wait
            if attempt == self.policy.attempts:
                raise RegisterUnavailable(f"GET {path}: {problem}")
            self.retries += 1
            log.warning(
                "register request failed; retrying",
                extra={"path": path, "problem": problem, "wait_seconds": round(wait, 2)},
            )
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


@dataclass
class Facts:
    """What a page of a feed says, as creditwatch facts."""

    master: dict[CompanyId, dict[str, Any]] = field(default_factory=dict)
    """Master-data fields (Company field names) per company."""
    events: list[IncomingEvent] = field(default_factory=list)
    master_after: dict[CompanyId, dict[str, Any]] = field(default_factory=dict)
    """Master-data fields an event also sets, written after the events: set
    by a new event, they are unchanged then (one alert, the event's); if the
    event was recorded before, this writes them."""
    updates_skipped: int = 0
    """Updates left out because what they are about could not be read for good."""
    keep_risk_status: set[CompanyId] = field(default_factory=set)
    """Companies whose `master` status (ACTIVE) the update did not itself
    say: written only over no status or ACTIVE (Intake.upsert_company)."""


@dataclass(frozen=True)
class FeedPage:
    """Updates of one feed after a cursor, and the cursor after them."""

    updates: list[Any]
    last: int | None
    """The highest update id in the page; None when the page is empty."""


class Feed(Protocol):
    """One change feed of a register."""

    name: str

    def origin(self) -> datetime:
        """Where a first run starts reading: the feed's updates from then on."""

    async def fetch(self, after: int | datetime) -> FeedPage:
        """The next page after update id `after`; before any update was read,
        the first page of the updates from the time `after`."""

    def companies(self, page: FeedPage) -> set[str]:
        """Register numbers the page is about."""

    async def translate(self, page: FeedPage, wanted: set[str]) -> Facts:
        """Facts for the updates about `wanted` companies."""


@dataclass
class SyncResult:
    """What one sync run did."""

    pages: int = 0
    updates: int = 0
    relevant: int = 0
    events_recorded: int = 0
    master_updates: int = 0
    alerts_raised: int = 0
    events_skipped: int = 0
    """Events refused because their id was stored earlier with other content."""
    updates_skipped: int = 0
    """Updates whose unit the register refused for good (see the adapter's log)."""
    companies_read: int = 0
    """Newly watched companies whose current state was read (see `sync`)."""
    cursors: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    """Feeds that stopped in this run (feed name: problem), left where they
    got to for the next run: the register kept failing or refused, or it
    answered what could not be read; the other feeds still ran."""


class RegisterAdapter(Protocol):
    """A register: its name, country, the source its events carry, and feeds."""

    name: str
    country: str
    source: str

    def feeds(self) -> Sequence[Feed]:
        """The change feeds to follow, in the order they are applied."""

    async def current(self, numbers: Sequence[str]) -> Facts:
        """Facts of these companies' current state in the register (not a
        change: what a feed would say of a unit it saw for the first time)."""


async def sync(
    adapter: RegisterAdapter,
    sessions: async_sessionmaker[AsyncSession],
    intake: Intake,
    *,
    every_company: bool = False,
    max_pages: int = 1_000,
    progress: Callable[[str, SyncResult], None] | None = None,
    read_batch: int = 500,
    unit_patience: timedelta = UNIT_PATIENCE,
) -> SyncResult:
    """Apply every feed of a register up to its end (or `max_pages` per feed),
    then read the current state of up to `read_batch` watched companies never
    read before (a company watched while already bankrupt shows so now, not
    at the register's next change of it). A feed the register keeps failing
    on (RegisterUnavailable), or whose answers cannot be read, stops where
    it got to, logged and in `SyncResult.failed`; the next feeds still run.
    A unit the register has not answered for (UnitUnavailable) in runs over
    `unit_patience` is skipped (`SyncResult.updates_skipped`), not waited
    for again."""
    result = SyncResult()
    started = time.perf_counter()
    for feed in adapter.feeds():
        try:
            await _sync_feed(
                adapter,
                feed,
                sessions,
                intake,
                result,
                every_company,
                max_pages,
                progress,
                unit_patience,
            )
        except Exception as error:
            _stopped(result, adapter.name, feed.name, error, result.cursors.get(feed.name))
    try:
        await _read_unread(adapter, sessions, intake, result, read_batch, unit_patience)
    except Exception as error:
        _stopped(result, adapter.name, _CURRENT, error, None)
    log.info(
        "register sync done",
        extra={
            "register": adapter.name,
            "pages": result.pages,
            "updates": result.updates,
            "events": result.events_recorded,
            "events_skipped": result.events_skipped,
            "updates_skipped": result.updates_skipped,
            "feeds_failed": sorted(result.failed),
            "alerts": result.alerts_raised,
            "seconds": round(time.perf_counter() - started, 2),
        },
    )
    return result


_CURRENT = "current state"  # `SyncResult.failed`'s name for `_read_unread`


def _stopped(
    result: SyncResult, register: str, part: str, error: Exception, cursor: int | None
) -> None:
    """Log and record (`SyncResult.failed`) a feed, or the reading of newly
    watched companies, that stopped where it got to: the register kept
    failing, or it answered what this code cannot read (a feed's shape
    changed, say; logged with the traceback). Its cursor did not move past
    what it did not apply, so the next run starts there; the run's other
    parts still run."""
    result.failed[part] = (
        str(error) if isinstance(error, RegisterUnavailable) else f"{type(error).__name__}: {error}"
    )
    if part == _CURRENT:
        message = "reading newly watched companies stopped; the next run reads them"
    else:
        message = "register feed stopped; the next run goes on from where it got to"
    extra = {"register": register, "feed": part, "cursor": cursor, "problem": result.failed[part]}
    if isinstance(error, RegisterUnavailable):
        log.error(message, extra=extra)
    else:
        log.error(message, exc_info=error, extra=extra)


async def _read_unread(
    adapter: RegisterAdapter,
    sessions: async_sessionmaker[AsyncSession],
    intake: Intake,
    result: SyncResult,
    batch: int,
    unit_patience: timedelta,
) -> None:
    """Read and apply the current state of watched companies not read from
    the register since a watch list took them on, up to `batch`, and record
    them as read (after applying: a crash reads them again, and their facts'
    ids make that change nothing)."""
    if batch <= 0:
        return
    # Entries are stamped with their replica's clock; so is the reading.
    started = datetime.now(UTC)
    async with sessions() as session:
        numbers = await store.unread(session, adapter.name, adapter.country, batch)
    if not numbers:
        return
    reading = list(numbers)
    while True:
        try:
            facts = await adapter.current(reading)
            break
        except UnitUnavailable as error:
            await _give_up_on(sessions, adapter.name, _CURRENT, error, unit_patience)
            reading.remove(error.number)
            result.updates_skipped += 1
    await _apply(intake, facts, result, f"{adapter.name}/{_CURRENT}", adapter.source)
    async with sessions.begin() as session:
        # A unit given up on is marked too: its next update brings its state.
        await store.mark_read(session, adapter.name, adapter.country, numbers, started)
        await store.unstuck(session, adapter.name, _CURRENT, reading)
    result.companies_read += len(reading)
    log.info(
        "register: newly watched companies read",
        extra={"register": adapter.name, "companies": len(reading), "events": len(facts.events)},
    )


async def _sync_feed(
    adapter: RegisterAdapter,
    feed: Feed,
    sessions: async_sessionmaker[AsyncSession],
    intake: Intake,
    result: SyncResult,
    every_company: bool,
    max_pages: int,
    progress: Callable[[str, SyncResult], None] | None,
    unit_patience: timedelta,
) -> None:
    """Apply one feed's pages, each then its cursor, up to its end."""
    async with sessions.begin() as session:
        after: int | datetime | None = await store.cursor(session, adapter.name, feed.name)
        if after is None:
            after = await store.origin(session, adapter.name, feed.name, feed.origin())
    for _ in range(max_pages):
        page = await feed.fetch(after)
        if page.last is None:
            break
        result.pages += 1
        result.updates += len(page.updates)
        numbers = feed.companies(page)
        if every_company:
            wanted = numbers
        else:
            async with sessions() as session:
                wanted = await store.watched(session, adapter.country, sorted(numbers))
        while True:
            try:
                facts = await feed.translate(page, wanted)
                break
            except UnitUnavailable as error:
                await _give_up_on(sessions, adapter.name, feed.name, error, unit_patience)
                wanted = wanted - {error.number}
                result.updates_skipped += 1
        await _apply(intake, facts, result, f"{adapter.name}/{feed.name}", adapter.source)
        result.relevant += len(wanted)
        async with sessions.begin() as session:
            await store.advance(session, adapter.name, feed.name, page.last, wanted)
        after = page.last
        result.cursors[feed.name] = page.last
        if progress is not None:
            progress(feed.name, result)
        log.info(
            "register page applied",
            extra={
                "register": adapter.name,
                "feed": feed.name,
                "cursor": page.last,
                "updates": len(page.updates),
                "watched": len(wanted),
                "events": result.events_recorded,
                "alerts": result.alerts_raised,
            },
        )


async def _give_up_on(
    sessions: async_sessionmaker[AsyncSession],
    register: str,
    part: str,
    error: UnitUnavailable,
    patience: timedelta,
) -> None:
    """Raise `error` (the feed stops at the unit, for the next run) unless
    runs have stopped at this unit for longer than `patience`; then return,
    logged as an error, for the caller to go on without the unit."""
    now = datetime.now(UTC)
    async with sessions.begin() as session:
        since = await store.stuck_since(session, register, part, error.number, now)
    if now - since <= patience:
        raise error
    log.error(
        "register unit skipped: the register has not answered for it since %s; its update "
        "is not applied (its next update brings its state again)",
        since.isoformat(timespec="seconds"),
        extra={
            "register": register,
            "feed": part,
            "unit": error.number,
            "since": since.isoformat(),
            "problem": str(error),
        },
    )


async def _apply(intake: Intake, facts: Facts, result: SyncResult, feed: str, source: str) -> None:
    """Apply a page's facts; `source` is the register's, as its events carry it."""
    for company, values in facts.master.items():
        keep = company in facts.keep_risk_status
        _, _, effect = await intake.upsert_company(
            company, values, keep_risk_status=keep, source=source
        )
        result.master_updates += 1
        result.alerts_raised += effect.alerts_raised
    # One id may appear twice in a page (the same flag seen in two updates).
    unique = list({e.event_id: e for e in facts.events}.values())
    for i in range(0, len(unique), 1_000):
        await _record(intake, unique[i : i + 1_000], result, feed)
    for company, values in facts.master_after.items():
        _, _, effect = await intake.upsert_company(company, values)
        result.alerts_raised += effect.alerts_raised
    result.updates_skipped += facts.updates_skipped


async def _record(
    intake: Intake, events: Sequence[IncomingEvent], result: SyncResult, feed: str
) -> None:
    """Record events, skipping (and logging) each one the intake refuses
    because its id was stored earlier with other content: the intake refuses
    the whole call for one such event, and the feed must not stop there."""
    pending = list(events)
    while pending:
        chunk = [dataclasses.replace(e, index=index) for index, e in enumerate(pending)]
        try:
            recorded, _, effects = await intake.record_events(chunk, None)
        except InvalidArgument as error:
            refused = {v.field for v in error.violations}
            skipped = {e.index for e in chunk if f"events[{e.index}].event_id" in refused}
            if not skipped:
                raise
            for index in sorted(skipped):
                log.warning(
                    "register event recorded earlier with other content; skipped",
                    extra={
                        "feed": feed,
                        "company": chunk[index].company.key,
                        "event_id": chunk[index].event_id,
                    },
                )
            result.events_skipped += len(skipped)
            pending = [e for e in chunk if e.index not in skipped]
        else:
            result.events_recorded += recorded
            result.alerts_raised += sum(e.alerts_raised for e in effects)
            return
