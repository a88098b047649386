"""How the register sync polls Enhetsregisteret (a real HTTP server on loopback
serving the recordings): rate limits it cannot read, and the first run."""

from __future__ import annotations

import email.utils
import time
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.intake import Intake
from creditwatch.server.registers.base import HttpPolicy, RegisterHttp, sync
from creditwatch.server.registers.brreg import UNITS_PATH, Enhetsregisteret
from creditwatch.server.scoring.registry import ModelRegistry
from tests.registers_server import Register, placeholders, serve

pytestmark = pytest.mark.asyncio


async def _get_after_a_rate_limit(retry_after: str) -> tuple[int, int, float]:
    """(status, retries, seconds taken) of a GET first answered 429 with `retry_after`."""
    register = Register(placeholders(83_800_000))
    register.fail(UNITS_PATH, 429, times=1, retry_after=retry_after)
    with serve(register) as url:
        http = RegisterHttp(url, HttpPolicy(initial_backoff=0.05))
        started = time.perf_counter()
        status, _ = await http.get(UNITS_PATH, {"size": 1})
        waited = time.perf_counter() - started
        await http.close()
    return status, http.retries, waited


async def test_a_rate_limit_with_an_unreadable_retry_after_is_retried_after_the_back_off() -> None:
    status, retries, waited = await _get_after_a_rate_limit("soon")
    assert (status, retries) == (200, 1)
    assert waited < 1.0  # the usual back-off, 0.05 s


async def test_a_retry_after_date_in_utc_without_a_zone_is_honoured() -> None:
    # "-0000" (UTC, origin unknown): Python reads it as a time without a zone.
    soon = (datetime.now(UTC) + timedelta(seconds=2)).replace(tzinfo=None)
    status, retries, waited = await _get_after_a_rate_limit(email.utils.format_datetime(soon))
    assert (status, retries) == (200, 1)
    assert 0.9 < waited < 3.0


async def test_what_is_published_between_an_empty_first_days_last_poll_and_midnight_is_read(
    sessions: async_sessionmaker[AsyncSession], registry: ModelRegistry
) -> None:
    async with sessions.begin() as session:
        await session.execute(text("DELETE FROM register_cursors WHERE register = 'brreg'"))
    intake = Intake(sessions, registry)
    numbers = placeholders(83_810_000)
    register = Register(numbers, dated=True)
    unit_update = next(u for u in register.updates if u["organisasjonsnummer"] == numbers["W1"])
    role_update = register.roles[0]
    register.updates, register.roles = [], []
    first_day = date(2026, 11, 23)
    with serve(register) as url:
        http = RegisterHttp(url)
        # The day's last poll: nothing published since the first run began.
        # (No reads of newly watched companies: other tests' watch lists
        # would each be a request to this register.)
        quiet = await sync(
            Enhetsregisteret(http, first_day=first_day), sessions, intake, read_batch=0
        )
        assert quiet.pages == 0
        # Published just before midnight; the next poll runs after it.
        register.updates = [{**unit_update, "dato": "2026-11-23T23:59:55.000Z"}]
        register.roles = [{**role_update, "time": "2026-11-23T23:59:56.000Z"}]
        next_day = first_day + timedelta(days=1)
        result = await sync(
            Enhetsregisteret(http, first_day=next_day),
            sessions,
            intake,
            every_company=True,
            read_batch=0,
        )
        await http.close()
    assert result.cursors == {"enheter": 24310001, "roller": 51770001}
    assert result.events_recorded == 2  # W1's bankruptcy, W2's roles change
    async with sessions() as session:
        rows = await session.execute(
            text("SELECT feed, position FROM register_cursors WHERE register = 'brreg'")
        )
    # From now on each poll continues from the update ids.
    assert {r.feed: r.position for r in rows} == {"enheter": 24310001, "roller": 51770001}
