"""API-key authentication: `authorization: Bearer <key>` metadata to a tenant id."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import grpc

from creditwatch.server.domain.errors import Unauthenticated
from creditwatch.server.domain.tenants import Caller, parse_key
from creditwatch.server.store import database
from creditwatch.server.store.tenants import TenantStore
from creditwatch.server.store.tenants_revocations import KeyRef

log = logging.getLogger(__name__)

# A verified key is trusted for this long without asking the database again, so
# hot paths (scoring) pay no query per call. A revocation reaches every
# replica's cache at once by NOTIFY (`store.tenants_revocations`); this bound
# only matters when that notice is lost (a listener reconnecting).
CACHE_SECONDS = 30.0
_CACHE_LIMIT = 10_000
# A key the database refused is refused from memory for this long: a client
# retrying with a revoked or mistyped key costs a query every few seconds, not
# one per call.
REFUSED_SECONDS = 5.0
# At most this many look-ups of uncached keys run at once, so a flood of
# made-up keys cannot take every pooled connection from the calls of
# authenticated ones (a cached key needs none).
LOOKUPS_AT_ONCE = 4


@dataclass(frozen=True, slots=True)
class _Verified:
    caller: Caller
    key: KeyRef
    expires: float


class Authenticator:
    """Resolves the calling tenant from request metadata, with a short cache that
    revocation notices empty of the revoked key (`revoked`)."""

    def __init__(self, tenants: TenantStore) -> None:
        self._tenants = tenants
        self._cache: dict[bytes, _Verified] = {}
        self._refused: dict[bytes, float] = {}  # digest → until when
        self._lookups = asyncio.Semaphore(LOOKUPS_AT_ONCE)
        # Bumped by every notice: a database look-up that was under way when a
        # revocation arrived may have read the key before it was revoked, and
        # must not be cached.
        self._generation = 0

    async def tenant_of(self, context: grpc.aio.ServicerContext[Any, Any]) -> uuid.UUID:
        """The tenant whose key the call carries; Unauthenticated otherwise."""
        return (await self.caller(context)).tenant_id

    async def caller(self, context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
        """The tenant and grants of the call's key; Unauthenticated otherwise."""
        header = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                header = value if isinstance(value, str) else value.decode()
                break
        if not header:
            raise Unauthenticated("missing metadata 'authorization: Bearer <api key>'")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("authorization metadata must be 'Bearer <api key>'")
        digest = hashlib.sha256(token.strip().encode()).digest()
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit.expires > now:
            return hit.caller
        refused_until = self._refused.get(digest)
        if refused_until is not None and refused_until > now:
            raise Unauthenticated("unknown or revoked API key")
        parsed = parse_key(token)
        generation = self._generation
        async with self._lookups:
            caller = await self._tenants.authenticate(parsed)
        if caller is None:
            if len(self._refused) >= _CACHE_LIMIT:
                self._refused.clear()
            self._refused[digest] = time.monotonic() + REFUSED_SECONDS
            raise Unauthenticated("unknown or revoked API key")
        if generation == self._generation:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[digest] = _Verified(
                caller, (parsed.tenant_id, parsed.key_id), now + CACHE_SECONDS
            )
        return caller

    async def check_still_valid(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """For a long call (an alert stream) authenticated when it started:
        Unauthenticated("API key revoked") once its key no longer authenticates.
        Answered from the cache, so a check costs a database query only once per
        key and `CACHE_SECONDS`; with the database out of reach the call goes on
        (it is not the key's fault) and the next check asks again."""
        try:
            await self.caller(context)
        except Unauthenticated:
            raise Unauthenticated("API key revoked") from None
        except Exception as error:
            if not database.connection_lost(error):
                raise
            log.warning("could not re-check an API key", extra={"error": str(error)})

    def revoked(self, key: KeyRef | None) -> None:
        """Forget `key` (None: every key), so its next use asks the database.
        Called by the revocation listener, also when it (re)connects."""
        self._generation += 1
        if key is None:
            self._cache.clear()
            return
        for digest in [d for d, hit in self._cache.items() if hit.key == key]:
            del self._cache[digest]
