"""The override policy in effect, and since when (`override_policy_changes`)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.domain.overrides import OverridePolicy
from creditwatch.server.store.models import OverridePolicyChange

# The first policy ever recorded is taken to have been in force all along.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def fingerprint(policy: OverridePolicy) -> str:
    """sha256 of the policy's canonical JSON."""
    canonical = json.dumps(policy.describe(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def record(sessions: async_sessionmaker[AsyncSession], policy: OverridePolicy) -> datetime:
    """Record that this replica scores with `policy`; returns since when that
    policy has been in effect: the newest row's time when it is this policy,
    else that of a row added now (the epoch for the first row ever)."""
    mine = fingerprint(policy)
    async with sessions.begin() as session:
        # Replicas starting together add one row, not one each.
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext('override_policy_changes'))")
        )
        newest = (
            await session.execute(
                select(OverridePolicyChange.fingerprint, OverridePolicyChange.apply_time)
                .order_by(OverridePolicyChange.id.desc())
                .limit(1)
            )
        ).first()
        if newest is not None and newest.fingerprint == mine:
            applied: datetime = newest.apply_time
            return applied
        values: dict[str, object] = {
            "fingerprint": mine,
            "version": policy.version,
            "policy": policy.describe(),
        }
        if newest is None:
            values["apply_time"] = _EPOCH
        since = await session.scalar(
            insert(OverridePolicyChange).values(**values).returning(OverridePolicyChange.apply_time)
        )
    assert isinstance(since, datetime)
    return since
