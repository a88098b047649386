"""Tenants and API keys in PostgreSQL."""

from __future__ import annotations

import dataclasses
import uuid

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.domain.errors import InvalidArgument, NotFound
from creditwatch.server.domain.tenants import (
    ApiKeyInfo,
    Caller,
    NewKey,
    ParsedKey,
    Revocation,
    Tenant,
    check_scopes,
    key_matches,
    mint_key,
)
from creditwatch.server.store import models
from creditwatch.server.store.tenants_revocations import CHANNEL, notice


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
        """Mint a key for an existing tenant; the returned token is the only copy.
        ValueError for grants `check_scopes` refuses (unknown, or a write grant
        on a read-only key)."""
        scopes = check_scopes(scopes)
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

    async def list_api_keys(self, tenant_id: uuid.UUID) -> list[ApiKeyInfo]:
        """A tenant's keys, revoked ones included, oldest first; never their secrets."""
        async with self._sessions() as session:
            if await session.get(models.Tenant, tenant_id) is None:
                raise NotFound(f"tenants/{tenant_id}")
            rows = await session.scalars(
                select(models.ApiKey)
                .where(models.ApiKey.tenant_id == tenant_id)
                .order_by(models.ApiKey.create_time, models.ApiKey.id)
            )
            return [_key_info(row) for row in rows]

    async def revoke_api_key(self, key_id: str, tenant_id: uuid.UUID | None = None) -> Revocation:
        """Revoke a key (idempotent: a revoked key keeps its revoke time) and tell
        every replica, whose caches drop it (`tenants_revocations`).

        The notice goes in the revoking transaction, so it arrives once the
        revocation is visible; it is sent again for a key already revoked, so
        repeating the command also reaches replicas that missed the first one
        (or a key revoked with plain SQL). Key ids are random per tenant:
        `tenant_id` tells apart the rare keys of two tenants that share one."""
        async with self._sessions.begin() as session:
            query = select(models.ApiKey).where(models.ApiKey.id == key_id).with_for_update()
            if tenant_id is not None:
                query = query.where(models.ApiKey.tenant_id == tenant_id)
            rows = list(await session.scalars(query))
            if not rows:
                name = f"apiKeys/{key_id}"
                raise NotFound(name if tenant_id is None else f"tenants/{tenant_id}/{name}")
            if len(rows) > 1:
                raise InvalidArgument.single(
                    "key_id",
                    f"{len(rows)} tenants have a key {key_id}: name the tenant too",
                )
            key = _key_info(rows[0])
            already_revoked = key.revoke_time is not None
            if not already_revoked:
                stamp = await session.scalar(
                    update(models.ApiKey)
                    .where(models.ApiKey.tenant_id == key.tenant_id, models.ApiKey.id == key.key_id)
                    .values(revoke_time=func.now())
                    .returning(models.ApiKey.revoke_time)
                )
                key = dataclasses.replace(key, revoke_time=stamp)
            await session.execute(
                select(func.pg_notify(CHANNEL, notice(key.tenant_id, key.key_id)))
            )
        return Revocation(key, already_revoked)

    async def authenticate(self, key: ParsedKey) -> Caller | None:
        """The caller `key` identifies, or None if it is unknown, revoked or wrong."""
        async with self._sessions() as session:
            row = await session.get(models.ApiKey, (key.tenant_id, key.key_id))
        if row is None or row.revoke_time is not None:
            return None
        if not key_matches(key, row.secret_sha256):
            return None
        return Caller(key.tenant_id, frozenset(row.scopes))


def _key_info(row: models.ApiKey) -> ApiKeyInfo:
    return ApiKeyInfo(
        tenant_id=row.tenant_id,
        key_id=row.id,
        display_name=row.display_name,
        scopes=tuple(row.scopes),
        create_time=row.create_time,
        revoke_time=row.revoke_time,
    )
