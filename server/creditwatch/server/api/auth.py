"""API-key authentication: `authorization: Bearer <key>` metadata to a tenant id."""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any

import grpc

from creditwatch.server.domain.errors import Unauthenticated
from creditwatch.server.domain.tenants import Caller, parse_key
from creditwatch.server.store.tenants import TenantStore

# A verified key is trusted for this long without asking the database again, so
# hot paths (scoring) pay no query per call. A revoked key therefore keeps
# working for at most this many seconds on a replica that saw it recently.
CACHE_SECONDS = 30.0
_CACHE_LIMIT = 10_000


class Authenticator:
    """Resolves the calling tenant from request metadata, with a short cache."""

    def __init__(self, tenants: TenantStore) -> None:
        self._tenants = tenants
        self._cache: dict[bytes, tuple[Caller, float]] = {}

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
        if hit is not None and hit[1] > now:
            return hit[0]
        caller = await self._tenants.authenticate(parse_key(token))
        if caller is None:
            raise Unauthenticated("unknown or revoked API key")
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[digest] = (caller, now + CACHE_SECONDS)
        return caller
