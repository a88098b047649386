"""E-mail delivery of alerts: a durable consumer per watch list, over SMTP.

`creditwatch alerts mail` follows each watch list with a durable consumer
("mail-<watch list id>", or "mail-<bridge>-<watch list id>" for a named
bridge: two bridges on one watch list, mailing other people or in another
mode, each need a name, or they would share one position) and sends either
one e-mail per alert (instant) or one digest of everything since the last
one, at most DIGEST_MAX_ALERTS alerts per e-mail. An alert is acknowledged
only after its e-mail was accepted by the SMTP server, so a restart resumes
with the first alert not yet mailed: nothing is lost, nothing is mailed twice
(except an alert whose e-mail was sent just before a crash, before its
acknowledgement; a stop asked for while an e-mail is being sent waits for it
and its acknowledgement).
"""

from __future__ import annotations

import asyncio
import re
import smtplib
import ssl
from collections.abc import Awaitable
from dataclasses import dataclass, field
from email.message import EmailMessage

from creditwatch.client._alerts import AlertStream, alert_filter
from creditwatch.client._client import CreditwatchClient
from creditwatch.v1 import alerts_pb2, common_pb2


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to send."""

    host: str
    port: int = 587
    starttls: bool = True
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a traceback
    sender: str = "creditwatch@localhost"
    timeout: float = 30.0

    def send(self, message: EmailMessage) -> None:
        """Deliver one message (blocking; call in a thread)."""
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.username:
                smtp.login(self.username, self.password or "")
            smtp.send_message(message)


DIGEST_MAX_ALERTS = 1_000
"""Alerts in one digest e-mail; more go out in further e-mails at once."""

BRIDGE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,15}")
"""A bridge's name, part of its consumers' names."""


def consumer_name(watch_list: str, bridge: str = "") -> str:
    """The durable consumer of a watch list's mail bridge (named `bridge`, if given)."""
    named = f"{bridge}-" if bridge else ""
    return f"mail-{named}{watch_list.removeprefix('watchLists/')}"[:63]


async def _delivered(send: Awaitable[None]) -> None:
    """Await `send` (an e-mail and its acknowledgement) to its end even when
    the bridge is stopped meanwhile: a mail the SMTP server took must be
    acknowledged, or the next run would mail it again."""
    task = asyncio.ensure_future(send)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


def _line(alert: alerts_pb2.Alert) -> str:
    severity = common_pb2.Severity.Name(alert.severity).removeprefix("SEVERITY_")
    kind = common_pb2.AlertType.Name(alert.type).removeprefix("ALERT_TYPE_")
    company = f"{alert.company.country}-{alert.company.register_number}"
    return (
        f"[{severity}] {kind} {company} {alert.company_legal_name or ''}: {alert.summary} "
        f"(customer {alert.external_reference or '-'}, priority {alert.priority:,.0f})"
    )


def instant_message(alert: alerts_pb2.Alert, sender: str, to: list[str]) -> EmailMessage:
    """One alert as an e-mail."""
    message = EmailMessage()
    severity = common_pb2.Severity.Name(alert.severity).removeprefix("SEVERITY_")
    who = alert.company_legal_name or alert.company.register_number
    # One line: a line break in a company's name or a summary is no header's
    # (the e-mail library refuses it, and the bridge would stop at that alert).
    who, summary = (" ".join(text.split()) for text in (who, alert.summary))
    message["Subject"] = f"[creditwatch {severity}] {who}: {summary}"[:200]
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["X-Creditwatch-Alert"] = alert.name
    message.set_content(f"{_line(alert)}\n\nalert {alert.name}\nwatch list {alert.watch_list}\n")
    return message


def digest_message(
    batch: list[alerts_pb2.Alert], watch_list: str, sender: str, to: list[str]
) -> EmailMessage:
    """Many alerts as one e-mail, most severe first."""
    message = EmailMessage()
    message["Subject"] = f"[creditwatch] {len(batch)} alerts on {watch_list}"
    message["From"] = sender
    message["To"] = ", ".join(to)
    ordered = sorted(batch, key=lambda a: (-a.severity, -a.priority))
    message.set_content("\n".join(_line(a) for a in ordered) + "\n")
    return message


async def mail_watch_list(
    client: CreditwatchClient,
    watch_list: str,
    smtp: SmtpSettings,
    to: list[str],
    *,
    digest_seconds: float | None = None,
    count: int | None = None,
    heartbeat_interval: int = 30,
    bridge: str = "",
    digest_max: int = DIGEST_MAX_ALERTS,
) -> int:
    """Run the bridge for one watch list; returns the e-mails sent (stops after
    `count` alerts when given).

    The consumer's position also moves with the stream's heartbeats once
    every alert before them was mailed, so a quiet watch list's bridge does
    not fall behind alert retention (which would refuse its next start with
    CURSOR_EXPIRED). A position the server cannot take now (a restart) is sent
    again later and does not stop the bridge.
    """
    consumer = consumer_name(watch_list, bridge)
    wanted = alert_filter(watch_lists=[watch_list])
    sent = handled = 0
    if digest_seconds is None:
        # Instant: an alert is mailed before the loop asks for the next one, so
        # auto-acknowledging stores only mailed alerts, and heartbeats too.
        stream: AlertStream = client.alerts.subscribe(
            filter=wanted,
            consumer=consumer,
            auto_acknowledge=True,
            heartbeat_interval=heartbeat_interval,
        )
        try:
            async for alert in stream:

                async def mail_one(alert: alerts_pb2.Alert = alert) -> None:
                    await asyncio.to_thread(smtp.send, instant_message(alert, smtp.sender, to))
                    await stream.acknowledge(alert.cursor)  # only once the SMTP server took it

                await _delivered(mail_one())
                sent += 1
                handled += 1
                if count is not None and handled >= count:
                    break
            return sent
        finally:
            await stream.close()

    # Digest: a reader task collects alerts; every `digest_seconds` what it
    # collected goes out as one e-mail and is acknowledged. In between, while
    # nothing waits to be mailed, the stream's position (its last heartbeat)
    # is stored.
    stream = client.alerts.subscribe(
        filter=wanted, consumer=consumer, heartbeat_interval=heartbeat_interval
    )
    batch: list[alerts_pb2.Alert] = []
    full = asyncio.Event()  # a digest's worth is waiting: mail it now
    room = asyncio.Event()  # the reader may take more
    room.set()

    async def read() -> None:
        nonlocal handled
        async for alert in stream:
            batch.append(alert)  # no await between the yield and here: `stream.cursor` agrees
            handled += 1
            if count is not None and handled >= count:
                return
            if len(batch) >= digest_max:
                full.set()
                room.clear()
                await room.wait()

    async def mail_digest(taken: list[alerts_pb2.Alert]) -> None:
        await asyncio.to_thread(smtp.send, digest_message(taken, watch_list, smtp.sender, to))
        await stream.acknowledge(taken[-1].cursor)

    loop = asyncio.get_running_loop()
    reader = asyncio.create_task(read())
    try:
        due = loop.time() + digest_seconds
        while True:
            wake = min(due, loop.time() + heartbeat_interval)
            filled = asyncio.create_task(full.wait())
            try:
                await asyncio.wait(
                    {reader, filled},
                    timeout=max(0.0, wake - loop.time()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                filled.cancel()
            # Due (or the reader is done): everything collected by now goes,
            # in mails of at most `digest_max`; what arrives while they are
            # sent waits for the next digest, unless it fills one.
            owed = len(batch) if reader.done() or loop.time() >= due else 0
            if loop.time() >= due:
                due = loop.time() + digest_seconds
            while batch and (owed > 0 or len(batch) >= digest_max):
                taken = batch[:digest_max]
                del batch[: len(taken)]
                owed -= len(taken)
                await _delivered(mail_digest(taken))
                sent += 1
            full.clear()
            room.set()
            if not batch and stream.cursor is not None:
                # Every alert up to the stream's position was mailed.
                await stream.acknowledge(stream.cursor)
            if reader.done() and not batch:  # else what came during the last send goes too
                reader.result()
                return sent
    finally:
        reader.cancel()
        await stream.close()
