"""Enhetsregisteret's events: one register fact is one event and one alert,
however often and in whatever way the feed reports it, and no event stops the
feed (the intake refuses an event id it stored with other content)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.domain.events import CompanyEvent, CompanyStatus, EventType
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.overrides import OverridePolicy
from creditwatch.server.intake import IncomingEvent, Intake
from creditwatch.server.registers.base import (
    UNIT_PATIENCE,
    HttpPolicy,
    RegisterHttp,
    SyncResult,
    sync,
)
from creditwatch.server.registers.brreg import Enhetsregisteret, master_data
from creditwatch.server.scoring.registry import ModelRegistry
from creditwatch.server.store import facts
from creditwatch.v1 import common_pb2
from tests.conftest import TenantKey
from tests.e2e.alerting import watch
from tests.registers_server import Register, placeholders, serve

pytestmark = pytest.mark.asyncio

A = common_pb2.AlertType


@pytest.fixture(scope="module")
async def intake(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[Intake]:
    """The intake path the server uses, in this process."""
    with ThreadPoolExecutor(1) as executor:
        yield Intake(sessions, ModelRegistry.load(executor, OverridePolicy()))


async def _sync(
    register: Register,
    sessions: async_sessionmaker[AsyncSession],
    intake: Intake,
    read_batch: int = 0,
) -> SyncResult:
    """One sync run against the register, from the stored cursors (reading
    no newly watched company's current state unless `read_batch` says so)."""
    with serve(register) as url:
        http = RegisterHttp(url)
        try:
            return await sync(
                Enhetsregisteret(http, page_size=10), sessions, intake, read_batch=read_batch
            )
        finally:
            await http.close()


async def _first_run(sessions: async_sessionmaker[AsyncSession]) -> None:
    """No cursors: the next sync is a first run (or a re-run after a crash)."""
    async with sessions.begin() as session:
        await session.execute(text("DELETE FROM register_cursors WHERE register = 'brreg'"))


async def _register(
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    tenant: TenantKey,
    start: int,
    *watched: str,
    roles: bool = False,
) -> Register:
    """The recordings with numbers from `start` on, the `watched` placeholders
    on the tenant's watch list, no cursors yet; no roles updates unless asked."""
    await _first_run(sessions)
    register = Register(placeholders(start))
    await watch(channel, tenant, [register.numbers[key] for key in watched])
    if not roles:
        register.roles = []
    return register


async def _events(
    sessions: async_sessionmaker[AsyncSession], number: str, kind: EventType
) -> list[tuple[str, datetime | None]]:
    """(event id, occurred_at) of a company's events of one type."""
    async with sessions() as session:
        rows = await session.execute(
            text(
                "SELECT event_id, occurred_at FROM company_events"
                " WHERE register_number = :n AND type = :t ORDER BY record_time, event_id"
            ),
            {"n": number, "t": int(kind)},
        )
    return [(r.event_id, r.occurred_at) for r in rows]


async def _alerts(
    sessions: async_sessionmaker[AsyncSession], tenant: TenantKey, number: str, kind: int
) -> list[dict[str, Any]]:
    """The triggers of a tenant's alerts of one type about a company, oldest first."""
    async with sessions() as session:
        rows = await session.execute(
            text(
                "SELECT trigger FROM alerts WHERE tenant_id = :t AND register_number = :n"
                " AND type = :k ORDER BY seq"
            ),
            {"t": tenant.tenant_id, "n": number, "k": kind},
        )
    return [r.trigger for r in rows]


def _publish(
    register: Register, number: str, update_id: int, kind: str, *changes: tuple[str, str, Any]
) -> None:
    """A units-feed update published 2026-11-24, with its (op, path, value) changes."""
    update: dict[str, Any] = {
        "oppdateringsid": update_id,
        "dato": "2026-11-24T10:00:00.000Z",
        "organisasjonsnummer": number,
        "endringstype": kind,
    }
    if changes:
        update["endringer"] = [{"op": o, "path": p, "value": v} for o, p, v in changes]
    register.updates.append(update)


async def test_a_bankruptcy_without_its_date_is_one_event_and_the_feed_goes_on(
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    intake: Intake,
    tenant: TenantKey,
) -> None:
    register = await _register(channel, sessions, tenant, 83_700_000, "W1")
    w1 = register.numbers["W1"]
    unit = register.units[w1]
    del unit["konkursdato"]  # the register has the flag, not yet the date
    register.updates = [u for u in register.updates if u["organisasjonsnummer"] == w1][:1]
    await _sync(register, sessions, intake)

    # A later change of the same unit sends the (still undated) flag again.
    unit["navn"] = "FJORDLYS VERKSTED AS KONKURSBO"
    _publish(register, w1, 24310030, "Endring", ("replace", "/navn", unit["navn"]))
    later = await _sync(register, sessions, intake)

    assert later.cursors["enheter"] == 24310030
    assert (later.events_recorded, later.events_skipped) == (0, 0)
    assert await _events(sessions, w1, EventType.BANKRUPTCY_OPENED) == [
        (f"brreg:{w1}:konkurs:", None)
    ]
    assert len(await _alerts(sessions, tenant, w1, A.ALERT_TYPE_BANKRUPTCY_OPENED)) == 1
    # The change itself came through: the feed did not stop at the flag.
    (renamed,) = await _alerts(sessions, tenant, w1, A.ALERT_TYPE_MASTER_DATA_CHANGED)
    assert renamed["master_data_change"]["changed_fields"] == ["legal_name"]


async def test_a_page_applied_again_after_the_unit_moved_again_alerts_each_address_once(
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    intake: Intake,
    tenant: TenantKey,
) -> None:
    register = await _register(channel, sessions, tenant, 83_710_000, "W2")
    w2 = register.numbers["W2"]
    await _sync(register, sessions, intake)  # moved to Kaigaten 9

    # The process died before the cursor was stored; meanwhile the unit moved
    # again, so the page is read again with the unit at its newest address.
    await _first_run(sessions)
    register.units[w2]["forretningsadresse"]["adresse"] = ["Bryggen 1"]
    _publish(
        register, w2, 24310050, "Endring", ("replace", "/forretningsadresse/adresse/0", "Bryggen 1")
    )
    again = await _sync(register, sessions, intake)

    assert again.cursors["enheter"] == 24310050
    assert again.events_skipped == 0
    moves = await _alerts(sessions, tenant, w2, A.ALERT_TYPE_ADDRESS_CHANGED)
    assert [m["event"]["detail"]["newAddress"]["addressLines"] for m in moves] == [
        ["Kaigaten 9"],
        ["Bryggen 1"],
    ]


async def test_an_event_stored_earlier_with_other_content_is_skipped_and_the_feed_goes_on(
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    intake: Intake,
    tenant: TenantKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    register = await _register(channel, sessions, tenant, 83_720_000, "W1", "W2", roles=True)
    w1, w2 = register.numbers["W1"], register.numbers["W2"]
    del register.units[w1]["konkursdato"]
    # What an earlier version stored for the undated flag: the update's time.
    seen = datetime(2026, 11, 23, 5, 1, 12, 334000, tzinfo=UTC)
    await intake.record_events(
        [
            IncomingEvent(
                CompanyId("NO", w1),
                f"brreg:{w1}:konkurs:",
                CompanyEvent(EventType.BANKRUPTCY_OPENED, seen),
                {},
                "brreg",
                0,
                "bankruptcy_opened",
            )
        ],
        None,
    )

    with caplog.at_level(logging.WARNING, logger="creditwatch.server.registers.base"):
        result = await _sync(register, sessions, intake)

    assert result.events_skipped == 1
    assert result.cursors == {"enheter": 24310012, "roller": 51770002}
    # The rest of the page was applied: W2's move and its roles change.
    assert result.events_recorded == 2
    assert len(await _alerts(sessions, tenant, w2, A.ALERT_TYPE_ADDRESS_CHANGED)) == 1
    assert await _events(sessions, w1, EventType.BANKRUPTCY_OPENED) == [
        (f"brreg:{w1}:konkurs:", seen)
    ]
    assert any(getattr(r, "event_id", None) == f"brreg:{w1}:konkurs:" for r in caplog.records), (
        caplog.text
    )


@pytest.mark.parametrize(
    ("start", "kind"),
    [(83_730_000, "Fjernet"), (83_740_000, "Sletting")],
)
async def test_a_unit_deleted_is_one_deletion_however_the_feed_reports_it(
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    intake: Intake,
    tenant: TenantKey,
    start: int,
    kind: str,
) -> None:
    register = await _register(channel, sessions, tenant, start, "W2")
    w2 = register.numbers["W2"]
    if kind == "Fjernet":
        register.gone.add(w2)  # the earlier update's unit answers 410 Gone
    else:
        register.units[w2]["slettedato"] = "2026-11-24"  # the unit says it is deleted
    # Caught up in one page: an earlier change and the deletion itself.
    _publish(register, w2, 24310040, kind)

    result = await _sync(register, sessions, intake)

    assert await _events(sessions, w2, EventType.DELETED_FROM_REGISTER) == [
        (f"brreg:{w2}:slettet", None)
    ]
    assert len(await _alerts(sessions, tenant, w2, A.ALERT_TYPE_DELETED_FROM_REGISTER)) == 1
    assert result.events_skipped == 0

    # Reported once more later (a unit's deletion seen again): still one.
    _publish(register, w2, 24310041, kind)
    again = await _sync(register, sessions, intake)
    assert len(await _alerts(sessions, tenant, w2, A.ALERT_TYPE_DELETED_FROM_REGISTER)) == 1
    assert (again.events_recorded, again.events_skipped) == (0, 0)


async def test_a_second_ground_for_a_compulsory_dissolution_is_no_second_dissolution(
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    intake: Intake,
    tenant: TenantKey,
) -> None:
    register = await _register(channel, sessions, tenant, 83_750_000, "W2")
    w2 = register.numbers["W2"]
    unit = register.units[w2]
    unit["underTvangsavviklingEllerTvangsopplosning"] = True
    unit["tvangsopplostPgaManglendeRegnskapDato"] = "2026-11-01"  # no accounts filed
    await _sync(register, sessions, intake)

    # Later the auditor leaves too: a second ground of the same dissolution.
    ground, day = "tvangsopplostPgaManglendeRevisorDato", "2026-11-20"
    unit[ground] = day
    _publish(register, w2, 24310060, "Endring", ("add", f"/{ground}", day))
    later = await _sync(register, sessions, intake)

    assert await _events(sessions, w2, EventType.COMPULSORY_DISSOLUTION) == [
        (f"brreg:{w2}:tvangsavvikling:2026-11-01", datetime(2026, 11, 1, tzinfo=UTC))
    ]
    assert len(await _alerts(sessions, tenant, w2, A.ALERT_TYPE_COMPULSORY_DISSOLUTION)) == 1
    assert (later.events_recorded, later.events_skipped) == (0, 0)

    # Then the accounts are filed, the auditor still missing: the dissolution
    # goes on, now dated by its remaining ground. Stored, not news.
    del unit["tvangsopplostPgaManglendeRegnskapDato"]
    _publish(
        register,
        w2,
        24310061,
        "Endring",
        ("remove", "/tvangsopplostPgaManglendeRegnskapDato", None),
    )
    cured = await _sync(register, sessions, intake)
    assert cured.events_recorded == 1
    assert len(await _alerts(sessions, tenant, w2, A.ALERT_TYPE_COMPULSORY_DISSOLUTION)) == 1
    assert await _status(sessions, w2) == int(CompanyStatus.COMPULSORY_DISSOLUTION)


async def _bureau_bankruptcy(intake: Intake, number: str, event_id: str) -> None:
    """A credit bureau (not the register) reports a bankruptcy opened 2026-11-22."""
    await intake.record_events(
        [
            IncomingEvent(
                CompanyId("NO", number),
                event_id,
                CompanyEvent(EventType.BANKRUPTCY_OPENED, datetime(2026, 11, 22, tzinfo=UTC)),
                {},
                "bureau",
                0,
                "bankruptcy_opened",
            )
        ],
        None,
    )


async def _status(sessions: async_sessionmaker[AsyncSession], number: str) -> int:
    async with sessions() as session:
        found = await session.scalar(
            text("SELECT status FROM companies WHERE country = 'NO' AND register_number = :n"),
            {"n": number},
        )
    return int(found or 0)


async def test_an_update_that_touches_no_flag_does_not_undo_a_bankruptcy_told_elsewhere(
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    intake: Intake,
    tenant: TenantKey,
) -> None:
    register = await _register(channel, sessions, tenant, 83_760_000, "W2")
    w2 = register.numbers["W2"]
    # A bureau reports the bankruptcy before the register flags it.
    await _bureau_bankruptcy(intake, w2, "bureau-konkurs-1")
    await _sync(register, sessions, intake)  # W2 moved: no flag in the update
    assert await _status(sessions, w2) == int(CompanyStatus.BANKRUPT)
    assert await _alerts(sessions, tenant, w2, A.ALERT_TYPE_RISK_CLASS_UPGRADE) == []

    # The register clears a flag (an annulment): now it says the status, and
    # another update of the unit in the same page does not unsay it.
    _publish(register, w2, 24310070, "Endring", ("replace", "/konkurs", False))
    _publish(register, w2, 24310071, "Endring", ("replace", "/navn", register.units[w2]["navn"]))
    await _sync(register, sessions, intake)
    assert await _status(sessions, w2) == int(CompanyStatus.ACTIVE)


async def test_a_flag_lifted_while_nobody_watched_is_lifted_when_the_company_is_read_again(
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    intake: Intake,
    tenant: TenantKey,
) -> None:
    await _all_read(sessions)
    register = await _register(channel, sessions, tenant, 83_870_000, "W1", "W2")
    w1, w2 = register.numbers["W1"], register.numbers["W2"]
    # W1's bankruptcy is the register's own word (its flag); W2's, a bureau's.
    await _bureau_bankruptcy(intake, w2, "bureau-konkurs-2")
    await _sync(register, sessions, intake, read_batch=10)
    assert await _status(sessions, w1) == int(CompanyStatus.BANKRUPT)
    assert await _status(sessions, w2) == int(CompanyStatus.BANKRUPT)

    # Both leave every watch list; the register lifts W1's flag meanwhile (no
    # update reaches creditwatch); then both are watched again, and read anew.
    register.units[w1]["konkurs"] = False
    register.updates = []
    async with sessions.begin() as session:
        await session.execute(
            text("DELETE FROM register_units WHERE register_number IN (:a, :b)"),
            {"a": w1, "b": w2},
        )
    again = await _sync(register, sessions, intake, read_batch=10)
    assert again.companies_read == 2
    # The register was the only one to say W1 was bankrupt: it no longer is.
    assert await _status(sessions, w1) == int(CompanyStatus.ACTIVE)
    # A bureau said W2 was: a unit without flags does not undo that.
    assert await _status(sessions, w2) == int(CompanyStatus.BANKRUPT)


async def test_a_move_is_one_alert_and_a_move_back_too(
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    intake: Intake,
    tenant: TenantKey,
) -> None:
    register = await _register(channel, sessions, tenant, 83_770_000, "W2")
    w2 = register.numbers["W2"]
    unit = register.units[w2]
    # Known master data: the unit as it was, at its old address.
    before = master_data(unit) | {
        "registered_address": {"regionCode": "NO", "addressLines": ["Strandkaien 2"]}
    }
    await intake.upsert_company(CompanyId("NO", w2), before)
    # Moved to Kaigaten 9, and changed again in the same page.
    _publish(register, w2, 24310006, "Endring", ("replace", "/naeringskode1/beskrivelse", "x"))
    register.updates.sort(key=lambda u: int(u["oppdateringsid"]))
    await _sync(register, sessions, intake)

    moves = await _alerts(sessions, tenant, w2, A.ALERT_TYPE_ADDRESS_CHANGED)
    assert len(moves) == 1
    assert await _alerts(sessions, tenant, w2, A.ALERT_TYPE_MASTER_DATA_CHANGED) == []

    def move(update_id: int, line: str) -> None:
        unit["forretningsadresse"]["adresse"] = [line]
        _publish(
            register, w2, update_id, "Endring", ("replace", "/forretningsadresse/adresse/0", line)
        )

    move(24310080, "Bryggen 1")
    await _sync(register, sessions, intake)
    move(24310081, "Kaigaten 9")  # back: that address's event was recorded before
    back = await _sync(register, sessions, intake)

    assert back.events_recorded == 0
    moves = await _alerts(sessions, tenant, w2, A.ALERT_TYPE_ADDRESS_CHANGED)
    assert [m["event"]["detail"]["newAddress"]["addressLines"] for m in moves] == [
        ["Kaigaten 9"],
        ["Bryggen 1"],
    ]
    (changed,) = await _alerts(sessions, tenant, w2, A.ALERT_TYPE_MASTER_DATA_CHANGED)
    assert changed["master_data_change"]["changed_fields"] == ["registered_address"]
    async with sessions() as session:
        stored = await facts.master_data(session, CompanyId("NO", w2))
    assert stored is not None
    assert stored.address["addressLines"] == ["Kaigaten 9"]


async def test_a_unit_refused_for_good_is_skipped_and_a_failing_feed_stops_alone(
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    intake: Intake,
    tenant: TenantKey,
) -> None:
    register = await _register(channel, sessions, tenant, 83_780_000, "W1", "W2", roles=True)
    w1, w2 = register.numbers["W1"], register.numbers["W2"]
    register.fail(f"/enhetsregisteret/api/enheter/{w1}", 400, times=100)
    first = await _sync(register, sessions, intake)

    assert first.updates_skipped == 1  # W1's unit, once however many updates
    assert first.cursors["enheter"] == 24310012
    assert len(await _alerts(sessions, tenant, w2, A.ALERT_TYPE_ADDRESS_CHANGED)) == 1
    assert await _alerts(sessions, tenant, w1, A.ALERT_TYPE_BANKRUPTCY_OPENED) == []

    # The units feed keeps failing: it stops where it got to, the roles go on.
    await _first_run(sessions)
    register.failures.clear()
    register.fail("/enhetsregisteret/api/oppdateringer/enheter", 500, times=100)
    with serve(register) as url:
        http = RegisterHttp(url, HttpPolicy(attempts=2, initial_backoff=0.01))
        try:
            stopped = await sync(
                Enhetsregisteret(http, page_size=10), sessions, intake, read_batch=0
            )
        finally:
            await http.close()
    assert set(stopped.failed) == {"enheter"}
    assert "enheter" not in stopped.cursors
    assert stopped.cursors["roller"] == 51770002

    # A 403 for a unit is about this client, not the unit: the feed stops
    # there for the run rather than skip the update for good.
    register.failures.clear()
    register.fail(f"/enhetsregisteret/api/enheter/{w2}", 403, times=100)
    refused = await _sync(register, sessions, intake)
    assert set(refused.failed) == {"enheter"} and refused.updates_skipped == 0
    assert "enheter" not in refused.cursors


async def _all_read(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Mark every company watched so far (by any test) as read from the register."""
    async with sessions.begin() as session:
        await session.execute(
            text(
                "INSERT INTO register_units (register, country, register_number) "
                "SELECT DISTINCT 'brreg', country, register_number FROM watch_list_entries "
                "ON CONFLICT DO NOTHING"
            )
        )


async def _sync_quickly(
    register: Register,
    sessions: async_sessionmaker[AsyncSession],
    intake: Intake,
    read_batch: int = 0,
    unit_patience: timedelta = UNIT_PATIENCE,
) -> SyncResult:
    """`_sync` with two attempts per request, a hundredth of a second apart."""
    with serve(register) as url:
        http = RegisterHttp(url, HttpPolicy(attempts=2, initial_backoff=0.01))
        try:
            return await sync(
                Enhetsregisteret(http, page_size=10),
                sessions,
                intake,
                read_batch=read_batch,
                unit_patience=unit_patience,
            )
        finally:
            await http.close()


_MAINTENANCE = b"<html><body>Vi oppgraderer tjenesten</body></html>"


@pytest.mark.parametrize(
    ("start", "status", "body", "headers"),
    [
        (83_820_000, 200, _MAINTENANCE, {"Content-Type": "text/html"}),
        (83_830_000, 302, b"", {"Location": "https://example.invalid/vedlikehold"}),
        (83_850_000, 200, b"[]", {"Content-Type": "application/json"}),
    ],
    ids=["maintenance page", "redirect", "not a unit"],
)
async def test_a_unit_the_register_does_not_really_answer_for_is_read_again_not_lost(
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    intake: Intake,
    tenant: TenantKey,
    start: int,
    status: int,
    body: bytes,
    headers: dict[str, str],
) -> None:
    register = await _register(channel, sessions, tenant, start, "W1", "W2", roles=True)
    w1 = register.numbers["W1"]
    unit = f"/enhetsregisteret/api/enheter/{w1}"
    # Once: the retry reads the unit.
    register.fail(unit, status, times=1, body=body, headers=headers)
    retried = await _sync_quickly(register, sessions, intake)
    assert retried.failed == {} and retried.updates_skipped == 0
    assert len(await _alerts(sessions, tenant, w1, A.ALERT_TYPE_BANKRUPTCY_OPENED)) == 1

    # Every time: the units feed stops before W1's update, for the next run
    # to read again; the roles feed and the reading of new companies go on.
    register = await _register(channel, sessions, tenant, start + 5_000, "W1", "W2", roles=True)
    w1 = register.numbers["W1"]
    register.fail(f"/enhetsregisteret/api/enheter/{w1}", status, 100, body=body, headers=headers)
    stopped = await _sync_quickly(register, sessions, intake)
    assert set(stopped.failed) == {"enheter"} and stopped.updates_skipped == 0
    assert "enheter" not in stopped.cursors and stopped.cursors["roller"] == 51770002
    assert await _alerts(sessions, tenant, w1, A.ALERT_TYPE_BANKRUPTCY_OPENED) == []

    register.failures.clear()
    again = await _sync_quickly(register, sessions, intake)
    assert again.failed == {} and again.cursors["enheter"] == 24310012
    assert len(await _alerts(sessions, tenant, w1, A.ALERT_TYPE_BANKRUPTCY_OPENED)) == 1


async def test_a_unit_the_register_never_answers_for_is_skipped_after_the_patience(
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    intake: Intake,
    tenant: TenantKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await _all_read(sessions)
    register = await _register(channel, sessions, tenant, 83_860_000, "W1", "W2", roles=True)
    w1, w2 = register.numbers["W1"], register.numbers["W2"]
    # W1's unit, and reading it as a newly watched company, always fail.
    register.fail(f"/enhetsregisteret/api/enheter/{w1}", 503, times=1_000)
    patience = timedelta(hours=1)
    first = await _sync_quickly(register, sessions, intake, 10, patience)
    assert set(first.failed) == {"enheter", "current state"}
    assert "enheter" not in first.cursors and first.updates_skipped == 0
    # Within the patience: it stops there again, and reads nobody new yet.
    assert set((await _sync_quickly(register, sessions, intake, 10, patience)).failed) == {
        "enheter",
        "current state",
    }
    # An hour and a minute later, as far as the stored stops know.
    async with sessions.begin() as session:
        await session.execute(
            text(
                "UPDATE register_cursors SET position = position - :us"
                " WHERE register = 'brreg' AND feed LIKE '%@stuck:' || :n"
            ),
            {"us": 61 * 60 * 1_000_000, "n": w1},
        )
    with caplog.at_level(logging.ERROR, logger="creditwatch.server.registers.base"):
        past = await _sync_quickly(register, sessions, intake, 10, patience)
    # Past it: W1 is skipped, in the feed and in the reading; the rest goes on.
    assert past.failed == {} and past.cursors["enheter"] == 24310012
    assert past.updates_skipped == 2  # W1's update and W1's current state
    assert past.companies_read == 1  # W2
    assert await _alerts(sessions, tenant, w1, A.ALERT_TYPE_BANKRUPTCY_OPENED) == []
    assert len(await _alerts(sessions, tenant, w2, A.ALERT_TYPE_ADDRESS_CHANGED)) == 1
    assert sum("register unit skipped" in r.getMessage() for r in caplog.records) == 2

    async def stuck() -> int:
        async with sessions() as session:
            found = await session.scalar(
                text("SELECT count(*) FROM register_cursors WHERE feed LIKE 'enheter@stuck:%'")
            )
        return int(found or 0)

    # The stop at the unit given up on is remembered: W1's next update, with
    # the register still failing for it, is skipped at once, not after a new
    # hour in which every other unit's updates on the feed wait too.
    assert await stuck() == 1
    _publish(register, w2, 24310013, "Endring", ("replace", "/navn", "W2 AS"))
    _publish(register, w1, 24310014, "Endring", ("replace", "/navn", "W1 AS"))
    again = await _sync_quickly(register, sessions, intake, 10, patience)
    assert again.failed == {} and again.cursors["enheter"] == 24310014
    assert again.updates_skipped == 1
    # Once the register answers for it again, the stop is forgotten.
    register.failures.clear()
    _publish(register, w1, 24310015, "Endring", ("replace", "/navn", "W1 ASA"))
    answered = await _sync_quickly(register, sessions, intake, 10, patience)
    assert answered.failed == {} and answered.updates_skipped == 0
    assert await stuck() == 0


async def test_a_feed_answering_what_cannot_be_read_stops_alone(
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    intake: Intake,
    tenant: TenantKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Units: a firewall's 403 on the feed itself. Roles: JSON of another shape
    # (an object where a list of updates belongs) on every request. Every
    # company watched so far (by other tests too) was read already, so the
    # run's reading of newly watched companies reads W1 and W2.
    await _all_read(sessions)
    register = await _register(channel, sessions, tenant, 83_840_000, "W1", "W2", roles=True)
    w1 = register.numbers["W1"]
    register.fail("/enhetsregisteret/api/oppdateringer/enheter", 403, times=100)
    register.fail(
        "/enhetsregisteret/api/oppdateringer/roller",
        200,
        times=100,
        body=b'{"data": "not a list"}',
        headers={"Content-Type": "application/json"},
    )
    with caplog.at_level(logging.ERROR, logger="creditwatch.server.registers.base"):
        stopped = await _sync_quickly(register, sessions, intake, read_batch=10)

    assert set(stopped.failed) == {"enheter", "roller"}
    assert "HTTP 403" in stopped.failed["enheter"]
    assert "not a list" in stopped.failed["roller"]
    assert stopped.cursors == {}
    # The run still read the newly watched companies: W1 shows bankrupt.
    assert stopped.companies_read == 2
    assert await _status(sessions, w1) == int(CompanyStatus.BANKRUPT)
    assert sum("register feed stopped" in r.getMessage() for r in caplog.records) == 2


async def test_a_company_watched_while_bankrupt_shows_so_at_the_next_run(
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    intake: Intake,
    tenant: TenantKey,
) -> None:
    # Every company watched so far was read; then W1, bankrupt since
    # 2026-11-20, is put on a watch list, with nothing about it in the feed.
    await _all_read(sessions)
    register = await _register(channel, sessions, tenant, 83_790_000, "W1")
    w1 = register.numbers["W1"]
    register.updates = []
    first = await _sync(register, sessions, intake, read_batch=10)

    assert first.companies_read == 1
    assert await _events(sessions, w1, EventType.BANKRUPTCY_OPENED) == [
        (f"brreg:{w1}:konkurs:2026-11-20", datetime(2026, 11, 20, tzinfo=UTC))
    ]
    assert len(await _alerts(sessions, tenant, w1, A.ALERT_TYPE_BANKRUPTCY_OPENED)) == 1
    assert await _status(sessions, w1) == int(CompanyStatus.BANKRUPT)
    # Read once: the next run asks the register nothing about it.
    asked = len(register.requests)
    again = await _sync(register, sessions, intake, read_batch=10)
    assert again.companies_read == 0
    assert not any(f"/enheter/{w1}" in r for r in register.requests[asked:])
    # Taken on by another list later (it may have changed meanwhile): read again.
    await watch(channel, tenant, [w1])
    later = await _sync(register, sessions, intake, read_batch=10)
    assert later.companies_read == 1
    assert len(await _alerts(sessions, tenant, w1, A.ALERT_TYPE_BANKRUPTCY_OPENED)) == 1
