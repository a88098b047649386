"""A stream's buffer in the alert hub: waking, timing out, and the two at once."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import pytest

from creditwatch.server.alerts.hub import Subscription
from creditwatch.server.domain.alerts import (
    AlertFilter,
    AlertType,
    Severity,
    StoredAlert,
    SuggestedAction,
)
from creditwatch.server.domain.cursors import Position
from creditwatch.server.domain.identifiers import CompanyId

pytestmark = pytest.mark.asyncio


def stored_alert(position: Position, tenant: uuid.UUID | None = None) -> StoredAlert:
    """A bare alert at `position` (of `tenant`, else of a new one)."""
    now = datetime.now(UTC)
    return StoredAlert(
        tenant_id=tenant or uuid.uuid4(),
        position=position,
        id=uuid.uuid4(),
        watch_list_id=uuid.uuid4(),
        company=CompanyId("NO", "923609016"),
        type=AlertType.PAYMENT_REMARK_REGISTERED,
        severity=Severity.LOW,
        priority=0.0,
        company_legal_name="",
        external_reference="",
        exposure_currency=None,
        exposure_amount=None,
        previous_score=None,
        score=None,
        trigger={},
        suggested_action=SuggestedAction.MONITOR,
        summary="",
        occurred_time=now,
        create_time=now,
    )


def _alert(seq: int) -> StoredAlert:
    return stored_alert(Position(10, seq))


def _subscription() -> Subscription:
    return Subscription(uuid.uuid4(), AlertFilter(), Position.settled_below(1), 10)


async def test_an_offer_wakes_the_stream_and_silence_times_out() -> None:
    subscription = _subscription()
    assert await subscription.wait(0.01) is False
    waiting = asyncio.create_task(subscription.wait(5))
    await asyncio.sleep(0)
    subscription.offer(_alert(1))
    assert await asyncio.wait_for(waiting, 1) is True


async def test_an_alert_offered_as_the_timer_fires_is_not_reported_as_silence() -> None:
    """Both fall due in one loop iteration: the timer resolves the wait first,
    the offer lands before the stream resumes. Reporting a timeout would make
    the stream send a heartbeat past the buffered alert and then drop it."""
    subscription = _subscription()
    loop = asyncio.get_running_loop()
    waiting = asyncio.create_task(subscription.wait(0.05))
    await asyncio.sleep(0)  # the wait arms its timer
    loop.call_later(0.06, subscription.offer, _alert(1))
    time.sleep(0.3)  # noqa: ASYNC251 - a busy iteration: timer and offer both due after it
    assert await waiting is True
    assert subscription.pop() is not None


async def test_a_stream_that_keeps_getting_alerts_keeps_one_timer() -> None:
    """Every alert sent starts a new wait with a later deadline: the armed
    timer stays (it re-arms itself when it fires early), rather than one timer
    being made and cancelled per alert."""
    subscription = _subscription()
    waiting = asyncio.create_task(subscription.wait(30))
    await asyncio.sleep(0)
    timer = subscription._timer
    assert timer is not None
    for seq in range(1, 4):
        subscription.offer(_alert(seq))
        assert await asyncio.wait_for(waiting, 1) is True
        assert subscription.pop() is not None
        waiting = asyncio.create_task(subscription.wait(30))
        await asyncio.sleep(0)
        assert subscription._timer is timer
    waiting.cancel()
    subscription.release()
    assert timer.cancelled()


async def test_a_timer_armed_for_an_earlier_wait_does_not_end_a_later_one_early() -> None:
    subscription = _subscription()
    loop = asyncio.get_running_loop()
    first = asyncio.create_task(subscription.wait(0.05))
    await asyncio.sleep(0)
    subscription.offer(_alert(1))
    assert await first is True and subscription.pop() is not None
    started = loop.time()
    # The timer armed for 0.05 s fires during this wait: it must re-arm, not
    # report silence before this wait's own 0.3 s are up.
    assert await subscription.wait(0.3) is False
    assert loop.time() - started >= 0.3 - 0.002


async def test_overflowing_during_the_first_catch_up_is_not_lagging() -> None:
    """A stream reading a backlog from the database buffers live alerts
    meanwhile; its buffer overflowing then is no sign of a slow client (which
    the stall guard cuts), so the lag clock that ends it RESOURCE_EXHAUSTED
    starts only for a stream that was once caught up."""
    subscription = Subscription(uuid.uuid4(), AlertFilter(), Position(10, 0), 2)
    for seq in range(1, 4):
        subscription.offer(_alert(seq))
    assert subscription.state == "lagging"
    assert subscription.lagging_since is None  # still in its first catch-up
    subscription.state = "open"  # rejoined after reading the gap
    subscription.caught_up()
    for seq in range(4, 7):
        subscription.offer(_alert(seq))
    assert subscription.state == "lagging"
    assert subscription.lagging_since is not None  # live once: now it lags


async def test_a_stream_behind_after_its_first_catch_up_lags_even_if_never_live() -> None:
    """A client reading slower than its alerts come overflows in every
    catch-up and never gets live: past the first catch-up its lag counts, so
    it is cut (RESOURCE_EXHAUSTED) instead of catching up for ever."""
    from creditwatch.server.alerts.hub import AlertHub

    hub = AlertHub("postgresql://nobody@127.0.0.1:1/none")
    hub._position = Position(10, 0)
    subscription = Subscription(uuid.uuid4(), AlertFilter(), Position(10, 0), 2)
    for seq in range(1, 4):
        subscription.offer(_alert(seq))
    assert subscription.lagging_since is None  # the first catch-up
    hub.rejoin(subscription)  # read its gap, still behind
    for seq in range(4, 7):
        subscription.offer(_alert(seq))
    assert subscription.state == "lagging" and subscription.lagging_since is not None


async def test_the_hub_waits_less_again_after_a_session_that_worked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reconnect waits double while sessions fail at once, and start over
    after one that read the table: a replica's fifth blip in a week is not
    waited out for five seconds with every stream's position frozen."""
    from creditwatch.server.alerts import hub as hub_module

    hub = hub_module.AlertHub("postgresql://nobody@127.0.0.1:1/none")
    outcomes = iter([False, False, False, False, True, False, False])

    async def session() -> None:
        if next(outcomes):
            hub._connected = True  # it read the table, then lost the connection
        raise ConnectionError("lost")

    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 7:
            raise asyncio.CancelledError

    monkeypatch.setattr(hub, "_session", session)
    monkeypatch.setattr(hub_module.asyncio, "sleep", sleep)
    with pytest.raises(asyncio.CancelledError):
        await hub._run()
    assert waits == [0.2, 0.4, 0.8, 1.6, 0.2, 0.4, 0.8]
