"""Enhetsregisteret's update feeds as a live event source, against recorded pages
served by a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.client.testing import ServerProcess
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.overrides import OverridePolicy
from creditwatch.server.domain.scores import RiskClass
from creditwatch.server.intake import Intake
from creditwatch.server.registers.base import RegisterHttp, sync
from creditwatch.server.registers.brreg import Enhetsregisteret
from creditwatch.server.scoring.registry import ModelRegistry
from creditwatch.server.store import facts
from creditwatch.v1 import common_pb2, companies_pb2, companies_pb2_grpc
from tests.conftest import TenantKey
from tests.e2e import alerting
from tests.e2e.alerting import subscribe, watch
from tests.registers_server import Register, placeholders, serve

pytestmark = pytest.mark.asyncio

A = common_pb2.AlertType
EXPECTED = [
    ("W1", A.ALERT_TYPE_BANKRUPTCY_OPENED),
    ("W2", A.ALERT_TYPE_ADDRESS_CHANGED),
    ("W3", A.ALERT_TYPE_DELETED_FROM_REGISTER),
    ("W2", A.ALERT_TYPE_RESPONSIBLE_PERSON_CHANGED),
]


@pytest.fixture(scope="module")
async def intake(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[Intake]:
    """The intake path the server uses, in this process."""
    with ThreadPoolExecutor(1) as executor:
        yield Intake(sessions, ModelRegistry.load(executor, OverridePolicy()))


async def _reset_cursors(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions.begin() as session:
        await session.execute(text("DELETE FROM register_cursors WHERE register = 'brreg'"))


async def _events_of(sessions: async_sessionmaker[AsyncSession], number: str) -> int:
    async with sessions() as session:
        found = await session.scalar(
            text("SELECT count(*) FROM company_events WHERE register_number = :n"), {"n": number}
        )
    return int(found or 0)


async def test_register_changes_reach_subscribers_once_via_the_cli(
    channel: grpc.aio.Channel,
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    tenant: TenantKey,
) -> None:
    await _reset_cursors(sessions)
    numbers = placeholders(83_100_000)
    await watch(channel, tenant, [numbers["W1"], numbers["W2"], numbers["W3"]])
    call = subscribe(channel, tenant)
    await alerting.first_heartbeat(call)
    register = Register(numbers)
    with serve(register) as url:
        env = {**os.environ, "DATABASE_URL": database_url, "CREDITWATCH_REGISTERS_READ_BATCH": "0"}
        command = [sys.executable, "-m", "creditwatch.server", "registers", "sync", "--once"]
        run = await asyncio.to_thread(
            subprocess.run, [*command, "--base-url", url], env=env, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        assert "enheter: 1 pages, 5 updates" in run.stdout  # progress, page by page
        assert "done: 7 updates, 4 events, 4 alerts" in run.stdout

        got = await alerting.alerts(call, 4)
        assert [(a.company.register_number, a.type) for a in got] == [
            (numbers[key], kind) for key, kind in EXPECTED
        ]
        bankruptcy = got[0]
        assert bankruptcy.severity == common_pb2.SEVERITY_CRITICAL
        assert bankruptcy.trigger.event.event_id == f"brreg:{numbers['W1']}:konkurs:2026-11-20"
        assert bankruptcy.trigger.event.source == "brreg"
        assert bankruptcy.score.risk_class == common_pb2.RISK_CLASS_D
        assert bankruptcy.company_legal_name == "FJORDLYS VERKSTED AS"
        # The unwatched company's bankruptcy became nothing at all.
        assert await _events_of(sessions, numbers["U1"]) == 0

        # Master data came along: name, NACE, legal form, address, status.
        company = await companies_pb2_grpc.CompanyDataServiceStub(channel).GetCompany(
            companies_pb2.GetCompanyRequest(name=f"companies/NO-{numbers['W2']}"),
            metadata=tenant.metadata,
        )
        assert company.company.legal_name == "NORDKAPP FRAKT AS"
        assert company.company.industry_code == "49.410"
        assert company.company.legal_form == "AS"
        assert list(company.company.registered_address.address_lines) == ["Kaigaten 9"]
        assert company.company.status == companies_pb2.COMPANY_STATUS_ACTIVE

        # A second run continues after the stored cursors: nothing to do.
        again = await asyncio.to_thread(
            subprocess.run,
            [*command, "--base-url", url, "--json"],
            env=env,
            capture_output=True,
            text=True,
        )
        assert json.loads(again.stdout) == {
            "pages": 0,
            "updates": 0,
            "events": 0,
            "master_updates": 0,
            "alerts": 0,
            "events_skipped": 0,
            "updates_skipped": 0,
            "companies_read": 0,
            "feeds_failed": {},
        }
        assert any("oppdateringsid=24310013" in r for r in register.requests)
        assert any("afterId=51770002" in r for r in register.requests)
        assert await alerting.quiet(call, 1.0) == []
    call.cancel()


async def test_the_same_pages_applied_twice_change_nothing(
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    intake: Intake,
    tenant: TenantKey,
) -> None:
    await _reset_cursors(sessions)
    numbers = placeholders(83_200_000)
    await watch(channel, tenant, [numbers["W1"], numbers["W2"], numbers["W3"]])
    register = Register(numbers)
    with serve(register) as url:
        http = RegisterHttp(url)
        first = await sync(Enhetsregisteret(http, page_size=2), sessions, intake, read_batch=0)
        assert (first.events_recorded, first.alerts_raised) == (4, 4)
        assert first.pages == 4  # three pages of units (size 2), one of roles
        # As if the cursor had been lost after a crash: every page again.
        await _reset_cursors(sessions)
        second = await sync(Enhetsregisteret(http, page_size=2), sessions, intake, read_batch=0)
        await http.close()
    assert (second.events_recorded, second.alerts_raised) == (0, 0)
    async with sessions() as session:
        alerts = await session.scalar(
            text("SELECT count(*) FROM alerts WHERE tenant_id = :t"), {"t": tenant.tenant_id}
        )
    assert alerts == 4


async def test_server_errors_and_rate_limits_are_retried_and_nothing_is_lost(
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    intake: Intake,
    tenant: TenantKey,
) -> None:
    await _reset_cursors(sessions)
    numbers = placeholders(83_300_000)
    await watch(channel, tenant, [numbers["W1"], numbers["W2"], numbers["W3"]])
    register = Register(numbers)
    # A 500 in the middle of the units feed, a 429 with Retry-After on a unit.
    register.fail("/enhetsregisteret/api/oppdateringer/enheter", 500, times=1)
    register.fail(f"/enhetsregisteret/api/enheter/{numbers['W2']}", 429, times=1, retry_after=1)
    register.fail("/enhetsregisteret/api/oppdateringer/roller", 503, times=2)
    call = subscribe(channel, tenant)
    await alerting.first_heartbeat(call)
    with serve(register) as url:
        http = RegisterHttp(url)
        result = await sync(Enhetsregisteret(http, page_size=3), sessions, intake, read_batch=0)
        await http.close()
    assert http.retries == 4
    assert (result.events_recorded, result.alerts_raised) == (4, 4)
    got = await alerting.alerts(call, 4)
    assert [(a.company.register_number, a.type) for a in got] == [
        (numbers[key], kind) for key, kind in EXPECTED
    ]
    assert await alerting.quiet(call, 0.5) == []
    call.cancel()


async def test_a_unit_removed_from_the_register_is_a_deletion(
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    intake: Intake,
    tenant: TenantKey,
) -> None:
    await _reset_cursors(sessions)
    numbers = placeholders(83_400_000)
    await watch(channel, tenant, [numbers["W2"]])
    register = Register(numbers)
    register.gone.add(numbers["W2"])  # 410 Gone: removed for legal reasons
    with serve(register) as url:
        http = RegisterHttp(url)
        await sync(Enhetsregisteret(http, page_size=10), sessions, intake, read_batch=0)
        await http.close()
    async with sessions() as session:
        kinds = (
            (
                await session.execute(
                    text(
                        "SELECT type FROM company_events WHERE register_number = :n ORDER BY type"
                    ),
                    {"n": numbers["W2"]},
                )
            )
            .scalars()
            .all()
        )
    assert kinds == [10, 12]  # responsible person changed (roles feed), deleted


async def test_a_server_with_the_feed_enabled_raises_alerts_by_itself(
    channel: grpc.aio.Channel,
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    tenant: TenantKey,
) -> None:
    await _reset_cursors(sessions)
    numbers = placeholders(83_500_000)
    await watch(channel, tenant, [numbers["W1"], numbers["W2"], numbers["W3"]])
    register = Register(numbers)
    with serve(register) as url:
        env = {
            "CREDITWATCH_BRREG_ENABLED": "true",
            "CREDITWATCH_BRREG_BASE_URL": url,
            "CREDITWATCH_REGISTERS_INTERVAL_SECONDS": "2",
            "CREDITWATCH_REGISTERS_READ_BATCH": "0",
        }
        with ServerProcess(database_url, env=env) as polling:
            async with grpc.aio.insecure_channel(polling.address) as polling_channel:
                call = subscribe(polling_channel, tenant)
                await alerting.first_heartbeat(call)
                got = await alerting.alerts(call, 4, seconds=30)
                assert [(a.company.register_number, a.type) for a in got] == [
                    (numbers[key], kind) for key, kind in EXPECTED
                ]
                call.cancel()
            assert "register page applied" in polling.log_text()


async def test_a_changed_industry_code_or_legal_form_is_a_master_data_alert(
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    intake: Intake,
    tenant: TenantKey,
) -> None:
    await _reset_cursors(sessions)
    numbers = placeholders(83_600_000)
    await watch(channel, tenant, [numbers["W2"]])
    register = Register(numbers)
    with serve(register) as url:
        http = RegisterHttp(url)
        await sync(Enhetsregisteret(http, page_size=10), sessions, intake, read_batch=0)
        call = subscribe(channel, tenant)
        await alerting.first_heartbeat(call)
        # The register reclassifies the company and converts it to a public company.
        unit = register.units[numbers["W2"]]
        unit["naeringskode1"] = {"kode": "52.291", "beskrivelse": "Spedisjon"}
        unit["organisasjonsform"] = {"kode": "ASA", "beskrivelse": "Allmennaksjeselskap"}
        register.updates.append(
            {
                "oppdateringsid": 24310020,
                "dato": "2026-11-24T06:00:00.000Z",
                "organisasjonsnummer": numbers["W2"],
                "endringstype": "Endring",
                "endringer": [
                    {"op": "replace", "path": "/naeringskode1/kode", "value": "52.291"},
                    {"op": "replace", "path": "/organisasjonsform/kode", "value": "ASA"},
                ],
            }
        )
        result = await sync(Enhetsregisteret(http, page_size=10), sessions, intake, read_batch=0)
        await http.close()
    assert result.alerts_raised == 1
    alert = await alerting.next_of_type(call, A.ALERT_TYPE_MASTER_DATA_CHANGED)
    assert list(alert.trigger.master_data_change.changed_fields) == ["industry_code", "legal_form"]
    call.cancel()


async def test_a_cleared_bankruptcy_flag_lifts_class_d(
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    intake: Intake,
    tenant: TenantKey,
) -> None:
    """The register annuls W1's bankruptcy (its flag cleared): the unit reads
    ACTIVE again, which ends the bankruptcy event's class D."""
    await _reset_cursors(sessions)
    numbers = placeholders(83_900_000)
    await watch(channel, tenant, [numbers["W1"]])
    register = Register(numbers)
    with serve(register) as url:
        http = RegisterHttp(url)
        await sync(Enhetsregisteret(http, page_size=10), sessions, intake, read_batch=0)
        company = CompanyId("NO", numbers["W1"])
        async with sessions() as session:
            bankrupt = await facts.latest_score(session, company)
        assert bankrupt is not None and bankrupt.risk_class == RiskClass.D
        call = subscribe(channel, tenant)
        await alerting.first_heartbeat(call)
        unit = register.units[numbers["W1"]]
        unit["konkurs"] = False
        del unit["konkursdato"]
        register.updates.append(
            {
                "oppdateringsid": 24310030,
                "dato": "2026-11-30T06:00:00.000Z",
                "organisasjonsnummer": numbers["W1"],
                "endringstype": "Endring",
                "endringer": [{"op": "replace", "path": "/konkurs", "value": False}],
            }
        )
        await sync(Enhetsregisteret(http, page_size=10), sessions, intake, read_batch=0)
        await http.close()
    async with sessions() as session:
        # No statement: with the override gone there is nothing to score it on.
        assert await facts.latest_score(session, company) is None
    # A stream that starts "now" starts at its replica's hub's position, which
    # may be a moment behind the first sync's commit: its bankruptcy alert
    # can come first (never lost, so possibly early), and is not this test's.
    read = await alerting.alerts(call, 2)
    if any(a.type == A.ALERT_TYPE_BANKRUPTCY_OPENED for a in read):
        read += await alerting.alerts(call, 1)
    got = {a.type: a for a in read if a.type != A.ALERT_TYPE_BANKRUPTCY_OPENED}
    assert set(got) == {A.ALERT_TYPE_MASTER_DATA_CHANGED, A.ALERT_TYPE_RISK_CLASS_UPGRADE}
    assert got[A.ALERT_TYPE_RISK_CLASS_UPGRADE].previous_score.risk_class == common_pb2.RISK_CLASS_D
    call.cancel()
