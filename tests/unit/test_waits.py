"""A wait with a deadline never loses a cancellation: on Python 3.11,
`asyncio.wait_for` dropped one that landed as what it waited for finished,
and a loop waiting that way (the alert hub, woken by a notification as the
server stopped it) ran on for ever, so the server never stopped."""

from __future__ import annotations

import asyncio

import pytest

from creditwatch.server.waits import wait_set

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("ticks", range(6))
async def test_a_loop_waiting_for_an_event_ends_when_cancelled_as_the_event_is_set(
    ticks: int,
) -> None:
    event = asyncio.Event()

    async def tail() -> None:  # as AlertHub._session waits between polls
        while True:
            event.clear()
            await wait_set(event, 10)

    task = asyncio.create_task(tail())
    for _ in range(ticks):
        await asyncio.sleep(0)
    event.set()
    task.cancel()  # in the same loop iteration as the wake-up
    done, _ = await asyncio.wait({task}, timeout=2)
    assert done == {task} and task.cancelled()


async def test_it_tells_set_from_timed_out() -> None:
    event = asyncio.Event()
    assert await wait_set(event, 0.01) is False
    event.set()
    assert await wait_set(event, 0.01) is True
