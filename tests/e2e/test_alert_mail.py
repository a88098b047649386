"""`creditwatch alerts mail` against a real SMTP server on loopback (aiosmtpd)."""

from __future__ import annotations

import asyncio
import email
import os
import socket
import sys
from collections.abc import Iterator
from email.message import Message

import grpc
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.client.testing import ServerProcess
from creditwatch.server.domain.tenants import SCOPE_COMPANIES_WRITE
from tests.conftest import TenantKey, new_tenant
from tests.e2e.alerting import record, remark, watch
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio


class Inbox:
    """An SMTP handler that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))  # type: ignore[attr-defined]
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    """A real SMTP server on a free loopback port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


async def _mail(
    server: ServerProcess, key: TenantKey, port: int, *args: str
) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "CREDITWATCH_ADDRESS": server.address,
        "CREDITWATCH_API_KEY": key.api_key,
        "CREDITWATCH_SMTP_HOST": "127.0.0.1",
        "CREDITWATCH_SMTP_PORT": str(port),
        "CREDITWATCH_SMTP_STARTTLS": "false",
        "CREDITWATCH_SMTP_FROM": "alerts@bank.test",
    }
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "creditwatch.server", "alerts", "mail", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_instant_mails_resume_where_acknowledged_and_digests_bundle(
    server: ServerProcess,
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    tenant: TenantKey,
    smtp: tuple[Inbox, int],
) -> None:
    inbox, port = smtp
    feed = await new_tenant(sessions, "mail feed", scopes=(SCOPE_COMPANIES_WRITE,))
    numbers = norwegian_numbers(6, start=85_600_000)
    watch_list = await watch(channel, tenant, numbers)

    first = await _mail(
        server, tenant, port, "--watchlist", watch_list, "--to", "risk@bank.test", "--count", "2"
    )
    await asyncio.sleep(3)  # the consumer is created at "now"
    await record(channel, feed, *(remark(n, f"mail-{n}") for n in numbers[:2]))
    _, err = await asyncio.wait_for(first.communicate(), 60)
    assert first.returncode == 0, err.decode()
    assert len(inbox.messages) == 2
    assert all(m["To"] == "risk@bank.test" for m in inbox.messages)
    assert all("[creditwatch LOW]" in m["Subject"] for m in inbox.messages)
    assert len({m["X-Creditwatch-Alert"] for m in inbox.messages}) == 2

    # While no bridge runs, two more alerts; the next run mails exactly those.
    await record(channel, feed, *(remark(n, f"mail-{n}") for n in numbers[2:4]))
    second = await _mail(
        server, tenant, port, "--watchlist", watch_list, "--to", "risk@bank.test", "--count", "2"
    )
    _, err = await asyncio.wait_for(second.communicate(), 60)
    assert second.returncode == 0, err.decode()
    assert len(inbox.messages) == 4
    bodies = [m.get_payload() for m in inbox.messages]
    for i, number in enumerate(numbers[:4]):
        assert sum(f"NO-{number}" in body for body in bodies) == 1, (i, number)

    # A digest: two alerts, one e-mail.
    third = await _mail(
        server, tenant, port, "--watchlist", watch_list, "--to", "risk@bank.test",
        "--digest-seconds", "2", "--count", "2",
    )  # fmt: skip
    await record(channel, feed, *(remark(n, f"mail-{n}") for n in numbers[4:]))
    _, err = await asyncio.wait_for(third.communicate(), 60)
    assert third.returncode == 0, err.decode()
    assert len(inbox.messages) == 5
    digest = inbox.messages[-1]
    assert " ".join(digest["Subject"].split()) == f"[creditwatch] 2 alerts on {watch_list}"
    assert all(f"NO-{n}" in digest.get_payload() for n in numbers[4:])


async def test_an_alert_whose_mail_failed_is_mailed_by_the_next_run(
    server: ServerProcess,
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    tenant: TenantKey,
    smtp: tuple[Inbox, int],
) -> None:
    inbox, port = smtp
    feed = await new_tenant(sessions, "mail feed 2", scopes=(SCOPE_COMPANIES_WRITE,))
    number = norwegian_numbers(1, start=85_700_000)[0]
    watch_list = await watch(channel, tenant, [number])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = int(probe.getsockname()[1])  # nothing listens here
    failing = await _mail(server, tenant, dead, "--watchlist", watch_list, "--to", "x@bank.test")
    await asyncio.sleep(3)
    await record(channel, feed, remark(number, "mail-fail-1"))
    _, err = await asyncio.wait_for(failing.communicate(), 60)
    assert failing.returncode == 1
    assert "error: ConnectionRefusedError" in err.decode()
    assert "Traceback" not in err.decode()

    retry = await _mail(
        server, tenant, port, "--watchlist", watch_list, "--to", "x@bank.test", "--count", "1"
    )
    _, err = await asyncio.wait_for(retry.communicate(), 60)
    assert retry.returncode == 0, err.decode()
    assert [f"NO-{number}" in m.get_payload() for m in inbox.messages] == [True]
