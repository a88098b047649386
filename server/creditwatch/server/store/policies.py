"""Which override policy the replicas should run (`override_policy_changes`).

Every stored score carries the tag of the policy it was made with
(`OverridePolicy.tag`), as it carries its model version, and the scheduled
re-score redoes the watched companies' scores made with any policy but the
current one. The current policy is the newest recorded: a replica that starts
with a policy never recorded before records it, so in a rolling deploy the
new file's replicas make their policy current, and replicas still on the old
one (or an old one restarting) do not take it back. A replica whose policy
is not current leaves re-scoring and the register feeds to the replicas that
run the current one, for a rollout window (`settle`); past it, it takes over
and makes its own policy current: after a rollback to an earlier policy (a
policy is recorded once, so going back does not make it current by itself),
or a deploy that never finished, the jobs do not stop for ever. Giving an
earlier policy a new `version` makes it current at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, insert, select, text
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


async def settle(
    sessions: async_sessionmaker[AsyncSession], policy: OverridePolicy, rollout_seconds: float
) -> tuple[bool, CurrentPolicy | None]:
    """Whether a replica running `policy` may do the jobs that store scores
    (re-scoring, register feeds), and the current policy before this call.
    Yes if `policy` is current (or none is recorded); no while the current
    one was recorded less than `rollout_seconds` ago; else `policy` becomes
    the current one (its row the newest) and yes."""
    async with sessions.begin() as session:
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext('override_policy_changes'))")
        )
        found = await _current(session)
        if found is None or found.matches(policy):
            return True, found
        # The database's clock: the row's time is the database's now().
        settled = await session.scalar(
            text("SELECT now() - :since < make_interval(secs => :window)"),
            {"since": found.since, "window": rollout_seconds},
        )
        if settled:
            return False, found
        await session.execute(
            delete(OverridePolicyChange).where(
                OverridePolicyChange.fingerprint == policy.fingerprint
            )
        )
        await session.execute(
            insert(OverridePolicyChange).values(
                fingerprint=policy.fingerprint, version=policy.version, policy=policy.describe()
            )
        )
    return True, found


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
