"""Waiting with a deadline without losing a cancellation.

On Python 3.11, `asyncio.wait_for` runs what it waits for as a task of its
own and, when that finishes in the same loop iteration as the waiting task is
cancelled, returns its result and drops the cancellation (cpython#86296,
fixed by 3.12's rewrite). A loop that waits that way (an alert hub woken by a
notification as the server stops it) then never ends, and shutdown hangs.
`asyncio.timeout` cancels the waiting task itself and tells its own
cancellation from another's, so every wait with a deadline here uses it.
"""

from __future__ import annotations

import asyncio


async def wait_set(event: asyncio.Event, seconds: float) -> bool:
    """`event.wait()` for at most `seconds`: True if it was set, False on
    timeout. A cancellation of the caller always propagates."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
