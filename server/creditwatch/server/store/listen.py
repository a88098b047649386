"""A PostgreSQL LISTEN on a dedicated connection that reconnects by itself.

Replicas keep caches (scores, verified API keys) that other replicas'
writes invalidate by NOTIFY. PostgreSQL does not queue notices for a session
that is gone, so whatever is sent while the listener is disconnected is lost:
the owner is told of every (re)connection (`on_connect`) and must treat it as
"anything may have changed", and `live` says whether notices are arriving now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from creditwatch.server.store import database

# Back-off between connection attempts, in seconds: first, and at most.
_FIRST_DELAY = 0.5
_MAX_DELAY = 10.0
# A quiet socket can be dead for a long time unnoticed; probe it this often.
_PROBE_SECONDS = 1.0
_PROBE_TIMEOUT = 5.0  # an answer to the probe later than this: the connection is lost


class ChannelListener:
    """LISTENs on `channel` and calls `on_notice(payload)` per notice.

    `on_connect()` runs on every (re)connection, once the LISTEN is in place
    and before any notice is delivered; `on_disconnect()`, if given, after
    every connection attempt that ended (failed or lost), and at `stop`.
    The connection reuses the pool's URL, host and TLS mode
    (`database.connect_kwargs`). Attempts back off from 0.5 s to 10 s and
    start again from 0.5 s after a connection succeeds.
    """

    def __init__(
        self,
        url: str,
        channel: str,
        *,
        on_notice: Callable[[str], None],
        on_connect: Callable[[], None],
        on_disconnect: Callable[[], None] | None = None,
        name: str,
        label: str,
        log: logging.Logger,
    ) -> None:
        """`name` names the background task; log lines read "`label` listening"
        and "`label` listener down" on `log`."""
        self._connect = database.connect_kwargs(url)
        self._channel = channel
        self._on_notice = on_notice
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._name = name
        self._label = label
        self._log = log
        self._connection: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def live(self) -> bool:
        """Whether notices are being received."""
        return self._connection is not None and not self._connection.is_closed()

    def _on_notify(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        self._on_notice(payload)

    async def _listen_forever(self) -> None:
        delay = _FIRST_DELAY
        while True:
            connection: asyncpg.Connection | None = None
            try:
                connection = await asyncpg.connect(**self._connect)
                await connection.add_listener(self._channel, self._on_notify)
                self._connection = connection
                self._on_connect()
                delay = _FIRST_DELAY
                self._log.info("%s listening", self._label)
                while not connection.is_closed():
                    await asyncio.sleep(_PROBE_SECONDS)
                    # Notice a dead socket, and a silent one (a firewall that
                    # drops packets): no answer in time is a lost connection.
                    async with asyncio.timeout(_PROBE_TIMEOUT):  # not wait_for: see waits.py
                        await connection.execute("SELECT 1")
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._log.warning("%s listener down", self._label, extra={"error": str(error)})
            finally:
                self._drop(connection)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY)

    def _drop(self, connection: asyncpg.Connection | None) -> None:
        self._connection = None
        if self._on_disconnect is not None:
            self._on_disconnect()
        if connection is not None and not connection.is_closed():
            connection.terminate()

    def start(self) -> None:
        """Begin listening in the background."""
        self._task = asyncio.create_task(self._listen_forever(), name=self._name)

    async def stop(self) -> None:
        """Stop listening and close the connection; `start` may be called again."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._drop(self._connection)
