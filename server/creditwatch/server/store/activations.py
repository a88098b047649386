"""Model activations in PostgreSQL: the newest row names the active model version."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.store.models import ModelActivation


async def activated_version(session: AsyncSession) -> str | None:
    """The newest activation's version (None: none recorded), read in the
    caller's transaction. A statement of its own, so under READ COMMITTED it
    sees every activation committed before it starts: a re-score chunk reads
    it after locking its companies, so any score an intake made with a newly
    activated model before that lock comes with the activation in view."""
    version: str | None = await session.scalar(
        select(ModelActivation.version).order_by(ModelActivation.id.desc()).limit(1)
    )
    return version


class ActivationStore:
    """Records and reads which model version is active for all replicas."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def record(self, version: str, by: uuid.UUID | None) -> datetime:
        """Make `version` the active one from now on; returns the activation time."""
        async with self._sessions.begin() as session:
            when = await session.scalar(
                insert(ModelActivation)
                .values(version=version, activated_by=by)
                .returning(ModelActivation.activate_time)
            )
        assert isinstance(when, datetime)
        return when

    async def current(self) -> tuple[str, datetime] | None:
        """(version, activation time) of the newest activation, if any."""
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(ModelActivation.version, ModelActivation.activate_time)
                    .order_by(ModelActivation.id.desc())
                    .limit(1)
                )
            ).first()
        return None if row is None else (row.version, row.activate_time)
