"""What every official-register adapter shares: HTTP with retries, and the sync loop.

An adapter (one module per register) says how to read a page of its change
feed after a cursor and how to turn a page into creditwatch facts. `sync`
does the rest, the same for every register: read the cursor kept in
PostgreSQL, fetch the next page, keep the updates about watched companies
(or all, if configured), apply them through the same intake path as the API
(`Intake.upsert_company`, `Intake.record_events`), then move the cursor. The
cursor moves only after a page is applied, and every fact has a deterministic
id, so a crash mid-page re-applies the page and changes nothing twice.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.intake import IncomingEvent, Intake
from creditwatch.server.store import registers as store

log = logging.getLogger(__name__)


class RegisterUnavailable(Exception):
    """The register kept failing (5xx, 429, network) after every retry."""


@dataclass(frozen=True)
class HttpPolicy:
    """Timeouts and retries for a register's HTTP API."""

    timeout: float = 15.0
    attempts: int = 6
    initial_backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 120.0


def _retry_after(response: httpx.Response, cap: float) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        if when is None:
            return None
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, min(seconds, cap))


class RegisterHttp:
    """GETs JSON from a register, retrying 5xx, 429 (honouring Retry-After) and
    network errors with exponential back-off and jitter."""

    def __init__(self, base_url: str, policy: HttpPolicy | None = None) -> None:
        self.policy = policy or HttpPolicy()
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(self.policy.timeout),
            headers={"Accept": "application/json", "User-Agent": "creditwatch-register-sync"},
        )
        self.retries = 0

    async def get(
        self, path: str, params: Mapping[str, Any] | None = None, *, allow: Sequence[int] = ()
    ) -> tuple[int, Any]:
        """(status, JSON body) of a GET; statuses in `allow` (e.g. 404, 410) are
        returned instead of raised."""
        for attempt in range(1, self.policy.attempts + 1):
            wait = min(self.policy.max_backoff, self.policy.initial_backoff * 2 ** (attempt - 1))
            wait *= 1 - 0.2 * random.random()
            try:
                response = await self._client.get(path, params=params)
            except httpx.TransportError as error:
                problem = f"{type(error).__name__}: {error}"
            else:
                if response.status_code in allow:
                    return response.status_code, None
                if response.status_code < 400:
                    return response.status_code, response.json()
                if response.status_code != 429 and response.status_code < 500:
                    response.raise_for_status()
                problem = f"HTTP {response.status_code}"
                if response.status_code == 429:
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


@dataclass(frozen=True)
class FeedPage:
    """Updates of one feed after a cursor, and the cursor after them."""

    updates: list[Any]
    last: int | None
    """The highest update id in the page; None when the page is empty."""


class Feed(Protocol):
    """One change feed of a register."""

    name: str

    async def fetch(self, after: int | None) -> FeedPage:
        """The next page after update id `after` (None: the first run)."""

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
    cursors: dict[str, int] = field(default_factory=dict)


class RegisterAdapter(Protocol):
    """A register: its name, country and feeds."""

    name: str
    country: str

    def feeds(self) -> Sequence[Feed]:
        """The change feeds to follow, in the order they are applied."""


async def sync(
    adapter: RegisterAdapter,
    sessions: async_sessionmaker[AsyncSession],
    intake: Intake,
    *,
    every_company: bool = False,
    max_pages: int = 1_000,
    progress: Callable[[str, SyncResult], None] | None = None,
) -> SyncResult:
    """Apply every feed of a register up to its end (or `max_pages` per feed)."""
    result = SyncResult()
    started = time.perf_counter()
    for feed in adapter.feeds():
        async with sessions() as session:
            after = await store.cursor(session, adapter.name, feed.name)
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
            facts = await feed.translate(page, wanted)
            await _apply(intake, facts, result)
            result.relevant += len(wanted)
            async with sessions.begin() as session:
                await store.advance(session, adapter.name, feed.name, page.last)
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
    log.info(
        "register sync done",
        extra={
            "register": adapter.name,
            "pages": result.pages,
            "updates": result.updates,
            "events": result.events_recorded,
            "alerts": result.alerts_raised,
            "seconds": round(time.perf_counter() - started, 2),
        },
    )
    return result


async def _apply(intake: Intake, facts: Facts, result: SyncResult) -> None:
    for company, values in facts.master.items():
        _, _, effect = await intake.upsert_company(company, values)
        result.master_updates += 1
        result.alerts_raised += effect.alerts_raised
    if facts.events:
        # One id may appear twice in a page (the same flag seen in two updates).
        unique = list({e.event_id: e for e in facts.events}.values())
        for i in range(0, len(unique), 1_000):
            chunk = [
                IncomingEvent(
                    e.company, e.event_id, e.event, e.detail, e.source, index, e.detail_case
                )
                for index, e in enumerate(unique[i : i + 1_000])
            ]
            recorded, _, effects = await intake.record_events(chunk, None)
            result.events_recorded += recorded
            result.alerts_raised += sum(e.alerts_raised for e in effects)
