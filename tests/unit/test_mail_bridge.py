"""The alert mail bridge's own logic (`creditwatch.client.mail`), over a
stand-in alert stream and SMTP server that record what the bridge does:
digests are bounded, a stop during a send still acknowledges what the SMTP
server took, and named bridges keep positions of their own."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from email.message import EmailMessage
from typing import Any

import pytest
from click.testing import CliRunner

from creditwatch.client.cli import alerts as alerts_cli
from creditwatch.client.mail import SmtpSettings, consumer_name, mail_watch_list
from creditwatch.v1 import alerts_pb2

WATCH_LIST = "watchLists/0b0e8e4e-63a4-4f7e-9d58-6d2f3f3c9a11"


class Stream:
    """Alerts as an AlertStream yields them; then silence."""

    def __init__(self, count: int) -> None:
        self.alerts = [
            alerts_pb2.Alert(name=f"alerts/{i}", cursor=f"c{i}", summary=f"alert {i}")
            for i in range(count)
        ]
        self.pulled = 0
        self.acknowledged: list[str] = []
        self.cursor: str | None = None

    def __aiter__(self) -> AsyncIterator[alerts_pb2.Alert]:
        return self._alerts()

    async def _alerts(self) -> AsyncIterator[alerts_pb2.Alert]:
        for alert in self.alerts:
            self.pulled += 1
            self.cursor = alert.cursor
            yield alert
            await asyncio.sleep(0)
        await asyncio.Event().wait()

    async def acknowledge(self, cursor: str | None = None) -> bool:
        self.acknowledged.append(cursor or "")
        return True

    async def close(self) -> None:
        pass


class Client:
    """What the bridge uses of CreditwatchClient: `alerts.subscribe`."""

    def __init__(self, stream: Stream) -> None:
        self.alerts = self
        self.stream = stream
        self.subscribed: dict[str, Any] = {}

    def subscribe(self, **kwargs: Any) -> Stream:
        self.subscribed = kwargs
        return self.stream


class Smtp(SmtpSettings):
    """An SMTP server that keeps what it is sent (optionally holding each send)."""

    def __init__(self, stream: Stream, hold: threading.Event | None = None) -> None:
        super().__init__("smtp.test")
        object.__setattr__(self, "_stream", stream)
        object.__setattr__(self, "_hold", hold)
        object.__setattr__(self, "sent", [])
        object.__setattr__(self, "pulled_at_send", [])
        object.__setattr__(self, "sending", threading.Event())

    def send(self, message: EmailMessage) -> None:
        self.sending.set()  # type: ignore[attr-defined]
        if self._hold is not None:  # type: ignore[attr-defined]
            self._hold.wait(10)  # type: ignore[attr-defined]
        self.pulled_at_send.append(self._stream.pulled)  # type: ignore[attr-defined]
        self.sent.append(message)  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_a_large_backlog_goes_out_in_bounded_digests_held_back_while_one_is_full() -> None:
    stream = Stream(2_500)
    smtp = Smtp(stream)
    client = Client(stream)
    sent = await mail_watch_list(
        client,  # type: ignore[arg-type]
        WATCH_LIST,
        smtp,
        ["risk@bank.test"],
        digest_seconds=3_600,
        count=2_500,
        digest_max=1_000,
    )
    assert sent == 3
    counts = [int(m["Subject"].split()[1]) for m in smtp.sent]  # type: ignore[attr-defined]
    assert counts == [1_000, 1_000, 500]
    # The reader waited while a full digest was being mailed.
    assert smtp.pulled_at_send[0] <= 1_001  # type: ignore[attr-defined]
    # Each digest acknowledged once mailed; between digests the stream's
    # position, which is the last mailed alert's then.
    assert list(dict.fromkeys(stream.acknowledged)) == ["c999", "c1999", "c2499"]
    assert client.subscribed["consumer"] == consumer_name(WATCH_LIST)


@pytest.mark.asyncio
async def test_a_stop_during_a_send_waits_for_it_and_acknowledges_it() -> None:
    stream = Stream(3)
    hold = threading.Event()
    smtp = Smtp(stream, hold)
    client = Client(stream)
    bridge = asyncio.create_task(
        mail_watch_list(
            client,  # type: ignore[arg-type]
            WATCH_LIST,
            smtp,
            ["risk@bank.test"],
            bridge="sales",
        )
    )
    await asyncio.to_thread(smtp.sending.wait, 5)  # type: ignore[attr-defined]
    bridge.cancel()  # Ctrl-C while the SMTP server takes the first alert
    await asyncio.sleep(0.05)
    assert not bridge.done()  # it waits for the send...
    hold.set()
    with pytest.raises(asyncio.CancelledError):
        await bridge
    assert len(smtp.sent) == 1  # type: ignore[attr-defined]
    assert stream.acknowledged == ["c0"]  # ...and stores that it was mailed
    assert client.subscribed["consumer"] == f"mail-sales-{WATCH_LIST.removeprefix('watchLists/')}"


def test_the_command_refuses_a_list_given_twice_and_a_bad_bridge_name() -> None:
    runner = CliRunner()
    env = {"CREDITWATCH_API_KEY": "cw_x", "CREDITWATCH_SMTP_HOST": "smtp.test"}
    base = ["mail", "--to", "risk@bank.test"]
    twice = runner.invoke(
        alerts_cli, [*base, "--watchlist", WATCH_LIST, "--watchlist", WATCH_LIST], env=env
    )
    assert twice.exit_code == 2 and "given twice" in twice.output
    named = runner.invoke(
        alerts_cli, [*base, "--watchlist", WATCH_LIST, "--bridge", "Sales!"], env=env
    )
    assert named.exit_code == 2 and "--bridge" in named.output


class Trickle(Stream):
    """Alerts arriving one every `gap` seconds."""

    def __init__(self, count: int, gap: float) -> None:
        super().__init__(count)
        self.gap = gap

    async def _alerts(self) -> AsyncIterator[alerts_pb2.Alert]:
        for alert in self.alerts:
            await asyncio.sleep(self.gap)
            self.pulled += 1
            self.cursor = alert.cursor
            yield alert
        await asyncio.Event().wait()


class SlowSmtp(Smtp):
    def send(self, message: EmailMessage) -> None:
        time.sleep(0.05)
        super().send(message)


@pytest.mark.asyncio
async def test_alerts_arriving_while_a_digest_is_sent_wait_for_the_next_digest() -> None:
    stream = Trickle(200, 0.01)
    smtp = SlowSmtp(stream)
    started = time.monotonic()
    sent = await mail_watch_list(
        Client(stream),  # type: ignore[arg-type]
        WATCH_LIST,
        smtp,
        ["risk@bank.test"],
        digest_seconds=0.5,
        count=200,
    )
    # About one digest per half second (and the last when the reader ends),
    # not one small mail per send: ~40 over the same time.
    most = (time.monotonic() - started) / 0.5 + 2
    assert sent <= most, [m["Subject"] for m in smtp.sent]  # type: ignore[attr-defined]
    counts = [int(m["Subject"].split()[1]) for m in smtp.sent]  # type: ignore[attr-defined]
    assert sum(counts) == 200


def test_a_line_break_in_a_company_name_is_no_header_s() -> None:
    """A data feed's legal name with a line break: the e-mail is still made
    (the library refuses a header with one, which stopped the bridge at that
    alert for good)."""
    from creditwatch.client.mail import instant_message

    alert = alerts_pb2.Alert(
        name="alerts/1", company_legal_name="Fjord\r\nAS\n", summary="payment\nremark"
    )
    message = instant_message(alert, "bridge@example.com", ["risk@example.com"])
    assert message["Subject"].endswith("Fjord AS: payment remark")
    message.as_bytes()  # serialisable, as smtplib sends it
