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

import logging
import uuid
from collections.abc import Callable

from creditwatch.server.store.listen import ChannelListener

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


class RevocationListener(ChannelListener):
    """LISTENs on `CHANNEL` on a dedicated connection and calls
    `on_revoked(key)` per notice (`None`: every key), and `on_revoked(None)`
    whenever it (re)connects, since notices sent while it was away are lost."""

    def __init__(self, url: str, on_revoked: Callable[[KeyRef | None], None]) -> None:
        super().__init__(
            url,
            CHANNEL,
            on_notice=lambda payload: on_revoked(parse_notice(payload)),
            on_connect=lambda: on_revoked(None),  # what was revoked while nobody listened
            name="key-revocations",
            label="API key revocations:",
            log=log,
        )
