"""The Authenticator's key cache under revocation notices, and how keys are named."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from creditwatch.server.api.auth import Authenticator
from creditwatch.server.domain.errors import Unauthenticated
from creditwatch.server.domain.tenants import (
    Caller,
    ParsedKey,
    key_prefix,
    mint_key,
    parse_key,
    parse_key_reference,
)
from creditwatch.server.store.tenants_revocations import notice, parse_notice


class _Store:
    """A TenantStore stand-in: counts look-ups, can hold one back or fail."""

    def __init__(self) -> None:
        self.revoked: set[str] = set()
        self.lookups = 0
        self.hold: asyncio.Event | None = None
        self.error: Exception | None = None

    async def authenticate(self, key: ParsedKey) -> Caller | None:
        self.lookups += 1
        if self.hold is not None:
            await self.hold.wait()
        if self.error is not None:
            raise self.error
        return None if key.key_id in self.revoked else Caller(key.tenant_id)


class _Context:
    def __init__(self, token: str) -> None:
        self._token = token

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self._token}"),)


def _auth(store: _Store) -> Authenticator:
    return Authenticator(store)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_a_notice_drops_only_the_revoked_key_from_the_cache() -> None:
    store = _Store()
    auth = _auth(store)
    tenant = uuid.uuid4()
    revoked, kept = mint_key(tenant), mint_key(tenant)
    for key in (revoked, kept, revoked, kept):
        assert (await auth.caller(_Context(key.token))).tenant_id == tenant  # type: ignore[arg-type]
    assert store.lookups == 2  # cached

    store.revoked.add(revoked.key_id)
    auth.revoked(parse_notice(notice(tenant, revoked.key_id)))
    with pytest.raises(Unauthenticated):
        await auth.caller(_Context(revoked.token))  # type: ignore[arg-type]
    await auth.caller(_Context(kept.token))  # type: ignore[arg-type]
    assert store.lookups == 3  # the kept key is still cached


@pytest.mark.asyncio
async def test_a_reset_drops_every_key() -> None:
    store = _Store()
    auth = _auth(store)
    keys = [mint_key(uuid.uuid4()) for _ in range(3)]
    for key in keys:
        await auth.caller(_Context(key.token))  # type: ignore[arg-type]
    auth.revoked(None)  # '*', or the listener (re)connected
    for key in keys:
        await auth.caller(_Context(key.token))  # type: ignore[arg-type]
    assert store.lookups == 6


@pytest.mark.asyncio
async def test_a_look_up_that_raced_a_notice_is_not_cached() -> None:
    store = _Store()
    auth = _auth(store)
    key = mint_key(uuid.uuid4())
    store.hold = asyncio.Event()
    looking = asyncio.create_task(auth.caller(_Context(key.token)))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    # The look-up may have read the key before it was revoked...
    auth.revoked((key.tenant_id, key.key_id))
    store.hold.set()
    await looking
    store.hold = None
    # ...so the next call asks the database again and sees the revocation.
    store.revoked.add(key.key_id)
    with pytest.raises(Unauthenticated):
        await auth.caller(_Context(key.token))  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_a_stream_check_says_revoked_and_survives_a_lost_database() -> None:
    store = _Store()
    auth = _auth(store)
    key = mint_key(uuid.uuid4())
    context = _Context(key.token)
    await auth.check_still_valid(context)  # type: ignore[arg-type]

    auth.revoked(None)
    store.error = ConnectionRefusedError("database down")
    await auth.check_still_valid(context)  # type: ignore[arg-type]  # not the key's fault

    store.error = None
    store.revoked.add(key.key_id)
    with pytest.raises(Unauthenticated, match="API key revoked"):
        await auth.check_still_valid(context)  # type: ignore[arg-type]


def test_notices_name_a_key_and_anything_else_means_every_key() -> None:
    tenant = uuid.uuid4()
    assert parse_notice(notice(tenant, "0123456789ab")) == (tenant, "0123456789ab")
    assert parse_notice("*") is None
    assert parse_notice("garbage_x") is None
    assert parse_notice("") is None


def test_a_key_is_named_by_its_id_its_prefix_or_itself() -> None:
    key = mint_key(uuid.uuid4())
    prefix = key_prefix(key.tenant_id, key.key_id)
    assert key.token.startswith(prefix)
    assert parse_key_reference(key.key_id) == (None, key.key_id)
    assert parse_key_reference(prefix) == (key.tenant_id, key.key_id)
    assert parse_key_reference(prefix.rstrip("_")) == (key.tenant_id, key.key_id)
    assert parse_key_reference(key.token) == (key.tenant_id, key.key_id)
    assert parse_key(key.token).key_id == key.key_id
    for bad in ("", "xyz", "0123456789a", "cw_123_0123456789ab"):
        with pytest.raises(ValueError, match="is not a key id"):
            parse_key_reference(bad)


@pytest.mark.asyncio
async def test_a_refused_key_is_refused_from_memory_for_a_few_seconds() -> None:
    store = _Store()
    auth = _auth(store)
    key = mint_key(uuid.uuid4())
    store.revoked.add(key.key_id)
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            await auth.caller(_Context(key.token))  # type: ignore[arg-type]
    assert store.lookups == 1  # a client retrying with it costs one query, not three


@pytest.mark.asyncio
async def test_uncached_keys_are_looked_up_a_few_at_a_time() -> None:
    from creditwatch.server.api.auth import LOOKUPS_AT_ONCE

    store = _Store()
    store.hold = asyncio.Event()
    auth = _auth(store)
    # A flood of made-up keys: only a few reach the database at once, so the
    # rest of the pool stays free for the calls of known keys.
    calls = [
        asyncio.create_task(auth.caller(_Context(mint_key(uuid.uuid4()).token)))  # type: ignore[arg-type]
        for _ in range(LOOKUPS_AT_ONCE * 5)
    ]
    await asyncio.sleep(0.05)
    assert store.lookups == LOOKUPS_AT_ONCE
    store.hold.set()
    await asyncio.gather(*calls)
    assert store.lookups == LOOKUPS_AT_ONCE * 5
