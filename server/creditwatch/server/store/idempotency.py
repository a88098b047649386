"""Idempotency keys: the first result of a request with a client `request_id`.

The contracts promise a replay for "a repeat within 24 hours": a key older
than `REPLAY_WINDOW` counts as absent, so reusing it (an order number a
client recycles, say) decides again instead of returning a stale result.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from creditwatch.server.domain.errors import InvalidArgument
from creditwatch.server.store import models

_K = models.IdempotencyKey
REPLAY_WINDOW = timedelta(hours=24)


async def claim(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    method: str,
    request_id: str,
    fingerprint: str | None = None,
) -> dict[str, Any] | None:
    """Claim `request_id` inside the caller's transaction.

    Returns None when this call is the first within the replay window (the
    caller then does the work and calls `remember`), or the stored result of
    the earlier call. A concurrent duplicate blocks on the uncommitted claim
    row until the first transaction ends, so two racing retries never both do
    the work; an expired key is taken over the same way.

    `fingerprint` is what the call asks (its request but `request_id`), kept
    with the key: a repeat that asks something else is InvalidArgument on
    `request_id`, with nothing written. Keys stored without one (NULL: before
    migration 0018, or by a replica of an earlier release) replay whatever a
    repeat asks, as they always did.
    """
    claimed = await session.scalar(
        insert(_K)
        .values(
            tenant_id=tenant_id,
            method=method,
            request_id=request_id,
            result={},
            fingerprint=fingerprint,
        )
        .on_conflict_do_update(
            index_elements=[_K.tenant_id, _K.method, _K.request_id],
            set_={"result": {}, "fingerprint": fingerprint, "create_time": func.now()},
            where=_K.create_time < func.now() - REPLAY_WINDOW,
        )
        .returning(_K.request_id)
    )
    if claimed is not None:
        return None
    # ON CONFLICT locked the earlier key even where it did not update it, so
    # it is still there to read.
    earlier = (
        await session.execute(
            select(_K.result, _K.fingerprint).where(
                _K.tenant_id == tenant_id, _K.method == method, _K.request_id == request_id
            )
        )
    ).one()
    if fingerprint is not None and earlier.fingerprint not in (None, fingerprint):
        raise _reused()
    return dict(earlier.result or {})


async def peek(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    method: str,
    request_id: str,
    fingerprint: str | None = None,
) -> dict[str, Any] | None:
    """The stored result of an earlier call with `request_id` within the
    replay window, if one committed, without claiming anything: for a call
    that has work to do before its transaction (which then `claim`s), so a
    replay, or a repeat that asks something else (InvalidArgument on
    `request_id`, as `claim` refuses it), does none of it. None: no such
    call yet, or one still running (uncommitted, so unseen here): the caller
    then does its work and `claim` waits for that call and decides, so a
    repeat racing the first call may still do the work before it, which a
    repeat of a call that has ended never does."""
    earlier = (
        await session.execute(
            select(_K.result, _K.fingerprint).where(
                _K.tenant_id == tenant_id,
                _K.method == method,
                _K.request_id == request_id,
                _K.create_time >= func.now() - REPLAY_WINDOW,
            )
        )
    ).first()
    if earlier is None or not earlier.result:
        return None
    if fingerprint is not None and earlier.fingerprint not in (None, fingerprint):
        raise _reused()
    return dict(earlier.result)


def _reused() -> InvalidArgument:
    return InvalidArgument.single(
        "request_id",
        "already used within 24 hours for a different request; "
        "a retry must repeat the request unchanged, a new request needs a new request_id",
    )


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


async def purge(session: AsyncSession, batch: int = 10_000) -> int:
    """Delete up to `batch` keys past the replay window; returns how many.

    `claim` already ignores such keys; this only keeps the table from growing.
    """
    expired = (
        select(_K.tenant_id, _K.method, _K.request_id)
        .where(_K.create_time < func.now() - REPLAY_WINDOW)
        .limit(batch)
    )
    deleted = await session.execute(
        delete(_K)
        .where(tuple_(_K.tenant_id, _K.method, _K.request_id).in_(expired))
        .returning(_K.request_id)
    )
    return len(deleted.all())
