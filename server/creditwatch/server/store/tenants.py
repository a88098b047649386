"""Tenants and API keys in PostgreSQL."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.domain.errors import NotFound
from creditwatch.server.domain.tenants import (
    SCOPES,
    Caller,
    NewKey,
    ParsedKey,
    Tenant,
    key_matches,
    mint_key,
)
from creditwatch.server.store import models


class TenantStore:
    """Creating tenants and keys, and resolving a presented key to its tenant."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def create_tenant(self, display_name: str) -> Tenant:
        """Create a tenant with a new id."""
        tenant = Tenant(uuid.uuid4(), display_name)
        async with self._sessions.begin() as session:
            session.add(models.Tenant(id=tenant.id, display_name=display_name))
        return tenant

    async def list_tenants(self) -> list[Tenant]:
        """All tenants, oldest first (an operator command, not an RPC)."""
        async with self._sessions() as session:
            rows = await session.scalars(select(models.Tenant).order_by(models.Tenant.create_time))
            return [Tenant(r.id, r.display_name) for r in rows]

    async def create_api_key(
        self, tenant_id: uuid.UUID, display_name: str = "", scopes: tuple[str, ...] = ()
    ) -> NewKey:
        """Mint a key for an existing tenant; the returned token is the only copy."""
        unknown = set(scopes) - set(SCOPES)
        if unknown:
            raise ValueError(f"unknown scopes {sorted(unknown)}; known: {', '.join(SCOPES)}")
        key = mint_key(tenant_id)
        async with self._sessions.begin() as session:
            if await session.get(models.Tenant, tenant_id) is None:
                raise NotFound(f"tenants/{tenant_id}")
            session.add(
                models.ApiKey(
                    tenant_id=tenant_id,
                    id=key.key_id,
                    secret_sha256=key.secret_sha256,
                    display_name=display_name,
                    scopes=list(scopes),
                )
            )
        return key

    async def authenticate(self, key: ParsedKey) -> Caller | None:
        """The caller `key` identifies, or None if it is unknown, revoked or wrong."""
        async with self._sessions() as session:
            row = await session.get(models.ApiKey, (key.tenant_id, key.key_id))
        if row is None or row.revoke_time is not None:
            return None
        if not key_matches(key, row.secret_sha256):
            return None
        return Caller(key.tenant_id, frozenset(row.scopes))
