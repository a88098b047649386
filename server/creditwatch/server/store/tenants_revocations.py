"""Revoked API keys, told to every replica by PostgreSQL NOTIFY.

Replicas cache verified keys (`api.auth`), so a revocation must reach them:
`TenantStore.revoke_api_key` sends `NOTIFY creditwatch_api_keys,
'<tenant id hex>_<key id>'` in the revoking transaction, so the notice
arrives only once the revocation is visible, and each replica LISTENs and
drops that key. '*' drops every cached key: after revoking with plain SQL, run
`NOTIFY creditwatch_api_keys, '*'` (or `creditwatch admin keys revoke`, which
notifies again for a key already revoked). Notices are lost while a listener is
disconnected, so the listener reports every (re)connection as a reset too; the
cache's time-to-live bounds what a lost notice can cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg

from creditwatch.server.store import database

log = logging.getLogger(__name__)

CHANNEL = "creditwatch_api_keys"
EVERY_KEY = "*"

KeyRef = tuple[uuid.UUID, str]
"""(tenant id, key id): how a stored key is named."""


def notice(tenant_id: uuid.UUID, key_id: str) -> str:
    """The NOTIFY payload naming one key."""
    return f"{tenant_id.hex}_{key_id}"


def parse_notice(payload: str) -> KeyRef | None:
    """The key a payload names; None for every key ('*' or anything unexpected,
    which must not leave a revoked key cached)."""
    tenant, sep, key_id = payload.partition("_")
    if not sep or not key_id:
        return None
    try:
        return uuid.UUID(hex=tenant), key_id
    except ValueError:
        return None


class RevocationListener:
    """LISTENs on `CHANNEL` on a dedicated connection and calls
    `on_revoked(key)` per notice (`None`: every key), and `on_revoked(None)`
    whenever it (re)connects, since notices sent while it was away are lost."""

    def __init__(self, url: str, on_revoked: Callable[[KeyRef | None], None]) -> None:
        self._connect = database.connect_kwargs(url)
        self._on_revoked = on_revoked
        self._connection: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def live(self) -> bool:
        """Whether notices are being received."""
        return self._connection is not None and not self._connection.is_closed()

    def _on_notify(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        self._on_revoked(parse_notice(payload))

    async def _listen_forever(self) -> None:
        delay = 0.5
        while True:
            connection: asyncpg.Connection | None = None
            try:
                connection = await asyncpg.connect(**self._connect)
                await connection.add_listener(CHANNEL, self._on_notify)
                self._connection = connection
                self._on_revoked(None)  # what was revoked while nobody listened
                delay = 0.5
                log.info("API key revocations: listening")
                while not connection.is_closed():
                    await asyncio.sleep(1.0)
                    await connection.execute("SELECT 1")  # notice a dead socket
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("API key revocations: listener down", extra={"error": str(error)})
            finally:
                self._connection = None
                if connection is not None and not connection.is_closed():
                    connection.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    def start(self) -> None:
        """Begin listening in the background."""
        self._task = asyncio.create_task(self._listen_forever(), name="key-revocations")

    async def stop(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
