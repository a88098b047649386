"""`creditwatch alerts mail` against a real SMTP server on loopback (aiosmtpd)."""

from __future__ import annotations

import asyncio
import contextlib
import email
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from email.message import Message

import grpc
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.client.testing import ServerProcess
from creditwatch.server.domain.tenants import SCOPE_COMPANIES_WRITE
from creditwatch.server.jobs.scheduler import purge_alerts
from tests.conftest import TenantKey, new_tenant
from tests.e2e.alerting import record, remark, watch
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio


class Inbox:
    """An SMTP handler that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.on_message: Callable[[], None] | None = None
        """Called as a message is accepted (in the SMTP server's thread)."""

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))  # type: ignore[attr-defined]
        if self.on_message is not None:
            self.on_message()
        return "250 OK"


@contextlib.contextmanager
def _serving(inbox: Inbox) -> Iterator[tuple[Controller, int]]:
    """A real SMTP server on a free loopback port, handing mails to `inbox`."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield controller, port
    finally:
        controller.stop()


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    """A real SMTP server on a free loopback port."""
    inbox = Inbox()
    with _serving(inbox) as (_, port):
        yield inbox, port


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


class _SlowForOneRefusingAnother(Inbox):
    """Takes a while over mails about `slow` (a bridge mid-send), refuses
    those about `refused` (550: that bridge fails)."""

    def __init__(self, slow: str, refused: str) -> None:
        super().__init__()
        self.slow, self.refused = slow, refused
        self.sending_slow = asyncio.Event()
        self.refusing = asyncio.Event()

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        content = envelope.content.decode()  # type: ignore[attr-defined]
        if f"NO-{self.refused}" in content:
            self.refusing.set()
            return "550 refused"
        if f"NO-{self.slow}" in content:
            self.sending_slow.set()
            # Still sending when the other bridge's mail is refused, and a
            # while after, as that bridge's failure stops the command.
            await asyncio.wait_for(self.refusing.wait(), 60)
            await asyncio.sleep(1)
        return await super().handle_DATA(server, session, envelope)


async def test_a_failing_bridge_lets_the_others_finish_the_mail_they_are_sending(
    server: ServerProcess,
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    tenant: TenantKey,
) -> None:
    feed = await new_tenant(sessions, "mail feed 3", scopes=(SCOPE_COMPANIES_WRITE,))
    slow, refused = norwegian_numbers(2, start=85_760_000)
    list_slow = await watch(channel, tenant, [slow])
    list_refused = await watch(channel, tenant, [refused])
    inbox = _SlowForOneRefusingAnother(slow, refused)
    with _serving(inbox) as (_, port):
        both = await _mail(
            server, tenant, port, "--watchlist", list_slow, "--watchlist", list_refused,
            "--to", "risk@bank.test",
        )  # fmt: skip
        await asyncio.sleep(3)  # the consumers are created at "now"
        await record(channel, feed, remark(slow, "mail-slow-1"))
        # While the slow list's mail is with the SMTP server, the other
        # list's mail is refused: its bridge fails, and the command with it.
        await asyncio.wait_for(asyncio.to_thread(_wait_for, inbox.sending_slow), 60)
        await record(channel, feed, remark(refused, "mail-refused-1"))
        _, err = await asyncio.wait_for(both.communicate(), 60)
        assert both.returncode == 1
        assert "550" in err.decode() and "Traceback" not in err.decode()
        assert [f"NO-{slow}" in m.get_payload() for m in inbox.messages] == [True]

        # The slow list's mail was acknowledged before the command ended: its
        # next run mails the next alert, not that one again.
        await record(channel, feed, remark(slow, "mail-slow-2"))
        again = await _mail(
            server, tenant, port, "--watchlist", list_slow, "--to", "risk@bank.test",
            "--count", "1",
        )  # fmt: skip
        _, err = await asyncio.wait_for(again.communicate(), 60)
        assert again.returncode == 0, err.decode()
        assert len(inbox.messages) == 2
        first, second = (m["X-Creditwatch-Alert"] for m in inbox.messages)
        assert second != first


class _Slow(Inbox):
    """Takes a few seconds over every mail (a bridge mid-send)."""

    def __init__(self) -> None:
        super().__init__()
        self.sending = asyncio.Event()

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.sending.set()
        await asyncio.sleep(2)
        return await super().handle_DATA(server, session, envelope)


async def test_sigterm_during_a_send_finishes_and_acknowledges_that_mail(
    server: ServerProcess,
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    tenant: TenantKey,
) -> None:
    feed = await new_tenant(sessions, "mail feed 4", scopes=(SCOPE_COMPANIES_WRITE,))
    number = norwegian_numbers(1, start=85_770_000)[0]
    watch_list = await watch(channel, tenant, [number])
    inbox = _Slow()
    with _serving(inbox) as (_, port):
        bridge = await _mail(server, tenant, port, "--watchlist", watch_list, "--to", "r@bank.test")
        await asyncio.sleep(3)  # the consumer is created at "now"
        await record(channel, feed, remark(number, "mail-term-1"))
        await asyncio.wait_for(asyncio.to_thread(_wait_for, inbox.sending), 60)
        bridge.send_signal(signal.SIGTERM)  # systemd or docker stop, mid-send
        _, err = await asyncio.wait_for(bridge.communicate(), 60)
        assert bridge.returncode == 0, err.decode()
        assert "stopped (SIGTERM)" in err.decode()
        assert len(inbox.messages) == 1

        # It was acknowledged: the next run mails the next alert, not it again.
        await record(channel, feed, remark(number, "mail-term-2"))
        again = await _mail(
            server, tenant, port, "--watchlist", watch_list, "--to", "r@bank.test",
            "--count", "1",
        )  # fmt: skip
        _, err = await asyncio.wait_for(again.communicate(), 60)
        assert again.returncode == 0, err.decode()
        first, second = (m["X-Creditwatch-Alert"] for m in inbox.messages)
        assert second != first


def _wait_for(flag: asyncio.Event) -> None:
    """Wait (in a thread) until `flag`, set in the SMTP server's loop, is set."""
    for _ in range(600):
        if flag.is_set():
            return
        threading.Event().wait(0.1)
    raise TimeoutError("the slow mail never reached the SMTP server")


# `mail_watch_list` with 5-second heartbeats, in its own process (as the
# `alerts mail` command runs it): argv is address, key, watch list, SMTP port,
# digest seconds ("" for instant) and count ("" for no limit).
BRIDGE = """
import asyncio, sys
from creditwatch.client import CreditwatchClient
from creditwatch.client.mail import SmtpSettings, mail_watch_list

address, key, watch_list, port, digest, count = sys.argv[1:]

async def main() -> None:
    async with CreditwatchClient(address, key) as client:
        sent = await mail_watch_list(
            client, watch_list, SmtpSettings("127.0.0.1", int(port), starttls=False),
            ["risk@bank.test"], digest_seconds=float(digest) if digest else None,
            count=int(count) if count else None, heartbeat_interval=5,
        )
    print(sent)

asyncio.run(main())
"""


async def _bridge(
    address: str,
    key: TenantKey,
    watch_list: str,
    port: int,
    digest: float | None,
    count: int | None,
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", BRIDGE, address, key.api_key, watch_list, str(port),
        "" if digest is None else str(digest), "" if count is None else str(count),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


@pytest.mark.parametrize("digest_seconds", [None, 2.0], ids=["instant", "digest"])
async def test_a_quiet_watch_lists_bridge_starts_again_after_retention(
    server: ServerProcess,
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    tenant: TenantKey,
    smtp: tuple[Inbox, int],
    digest_seconds: float | None,
) -> None:
    inbox, port = smtp
    feed = await new_tenant(sessions, "mail feed 3", scopes=(SCOPE_COMPANIES_WRITE,))
    quiet_number, busy_number = norwegian_numbers(2, start=94_200_000)
    quiet = await watch(channel, tenant, [quiet_number])
    await watch(channel, tenant, [busy_number])

    running = await _bridge(server.address, tenant, quiet, port, digest_seconds, None)
    await asyncio.sleep(2)
    # Alerts go on elsewhere; the quiet list's stream sees only heartbeats.
    await record(channel, feed, remark(busy_number, f"quiet-{busy_number}-{digest_seconds}"))
    await asyncio.sleep(7)  # a heartbeat after that alert
    running.kill()  # the bridge's machine goes down
    await running.wait()

    # Meanwhile retention removes the other list's alert.
    async with sessions.begin() as session:
        await session.execute(
            text(
                "UPDATE alerts SET create_time = now() - interval '400 days' WHERE tenant_id = :t"
            ),
            {"t": tenant.tenant_id},
        )
    assert await purge_alerts(sessions, retention_days=90) >= 1

    restarted = await _bridge(server.address, tenant, quiet, port, digest_seconds, 1)
    await asyncio.sleep(2)
    await record(channel, feed, remark(quiet_number, f"quiet-{quiet_number}-{digest_seconds}"))
    out, err = await asyncio.wait_for(restarted.communicate(), 60)
    assert restarted.returncode == 0, err.decode()
    assert out.decode().split() == ["1"]
    assert [f"NO-{quiet_number}" in m.get_payload() for m in inbox.messages] == [True]


async def test_an_acknowledgement_that_meets_a_restart_does_not_stop_the_bridge(
    database_url: str,
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    tenant: TenantKey,
    smtp: tuple[Inbox, int],
) -> None:
    inbox, port = smtp
    feed = await new_tenant(sessions, "mail feed 4", scopes=(SCOPE_COMPANIES_WRITE,))
    numbers = norwegian_numbers(2, start=94_300_000)
    watch_list = await watch(channel, tenant, numbers)
    replica = ServerProcess(database_url).start()
    # The replica dies while the SMTP server takes the first e-mail, so the
    # bridge's acknowledgement of it meets the outage.
    inbox.on_message = lambda: replica.kill() if len(inbox.messages) == 1 else None
    try:
        bridge = await _bridge(replica.address, tenant, watch_list, port, None, 2)
        await asyncio.sleep(2)
        await record(channel, feed, remark(numbers[0], "ack-outage-0"))
        await asyncio.sleep(4)  # longer than the acknowledgement's retries
        assert bridge.returncode is None, "the bridge should wait for the server"
        await asyncio.to_thread(replica.start)
        await record(channel, feed, remark(numbers[1], "ack-outage-1"))
        out, err = await asyncio.wait_for(bridge.communicate(), 60)
    finally:
        replica.stop()
    assert bridge.returncode == 0, err.decode()
    assert out.decode().split() == ["2"]
    bodies = [m.get_payload() for m in inbox.messages]
    assert [sum(f"NO-{n}" in b for b in bodies) for n in numbers] == [1, 1]
