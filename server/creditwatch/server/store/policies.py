"""Which override policy the replicas should run (`override_policy_changes`).

Every stored score carries the tag of the policy it was made with
(`OverridePolicy.tag`), as it carries its model version, and the scheduled
re-score redoes the watched companies' scores made with any policy but the
current one. The current policy is the newest recorded: a replica that starts
with a policy never recorded before records it, so in a rolling deploy the
new file's replicas make their policy current, and replicas still on the old
one (or an old one restarting) do not take it back. Returning to an earlier
policy takes a new `version` in its file (the version is part of the
fingerprint).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.domain.overrides import TAG_LENGTH, OverridePolicy
from creditwatch.server.store.models import OverridePolicyChange


@dataclass(frozen=True)
class CurrentPolicy:
    """The newest recorded override policy."""

    version: str
    fingerprint: str
    since: datetime
    """When a replica first started with it."""

    @property
    def tag(self) -> str:
        """What its scores store (OverridePolicy.tag)."""
        return self.fingerprint[:TAG_LENGTH]

    def matches(self, policy: OverridePolicy) -> bool:
        """Whether `policy` is this one."""
        return policy.fingerprint == self.fingerprint


async def record(
    sessions: async_sessionmaker[AsyncSession], policy: OverridePolicy
) -> CurrentPolicy:
    """Record `policy` if it was never recorded (it becomes the current one);
    returns the current policy, `policy` or not."""
    async with sessions.begin() as session:
        # Replicas starting together add one row, not one each.
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext('override_policy_changes'))")
        )
        seen = await session.scalar(
            select(OverridePolicyChange.id).where(
                OverridePolicyChange.fingerprint == policy.fingerprint
            )
        )
        if seen is None:
            await session.execute(
                insert(OverridePolicyChange).values(
                    fingerprint=policy.fingerprint,
                    version=policy.version,
                    policy=policy.describe(),
                )
            )
        found = await _current(session)
    assert found is not None
    return found


async def current(sessions: async_sessionmaker[AsyncSession]) -> CurrentPolicy | None:
    """The current policy; None before any replica has recorded one."""
    async with sessions() as session:
        return await _current(session)


async def _current(session: AsyncSession) -> CurrentPolicy | None:
    row = (
        await session.execute(
            select(
                OverridePolicyChange.version,
                OverridePolicyChange.fingerprint,
                OverridePolicyChange.apply_time,
            )
            .order_by(OverridePolicyChange.id.desc())
            .limit(1)
        )
    ).first()
    return None if row is None else CurrentPolicy(row.version, row.fingerprint, row.apply_time)
