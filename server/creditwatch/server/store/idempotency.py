"""Idempotency keys: the first result of a request with a client `request_id`."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from creditwatch.server.store import models

_K = models.IdempotencyKey


async def claim(
    session: AsyncSession, tenant_id: uuid.UUID, method: str, request_id: str
) -> dict[str, Any] | None:
    """Claim `request_id` inside the caller's transaction.

    Returns None when this call is the first (the caller then does the work and
    calls `remember`), or the stored result of the earlier call. A concurrent
    duplicate blocks on the uncommitted claim row until the first transaction
    ends, so two racing retries never both do the work.
    """
    claimed = await session.scalar(
        insert(_K)
        .values(tenant_id=tenant_id, method=method, request_id=request_id, result={})
        .on_conflict_do_nothing()
        .returning(_K.request_id)
    )
    if claimed is not None:
        return None
    result = await session.scalar(
        select(_K.result).where(
            _K.tenant_id == tenant_id, _K.method == method, _K.request_id == request_id
        )
    )
    return dict(result or {})


async def remember(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    method: str,
    request_id: str,
    result: dict[str, Any],
) -> None:
    """Store the result of the call that claimed `request_id`."""
    await session.execute(
        update(_K)
        .where(_K.tenant_id == tenant_id, _K.method == method, _K.request_id == request_id)
        .values(result=result)
    )
