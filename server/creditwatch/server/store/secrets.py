"""Secrets every replica of a deployment shares, kept in PostgreSQL.

A secret is made by the first replica that asks for it (random bytes, never
from configuration or the code) and read by every other: the one insert that
wins is the secret. Anyone who can read the database can read the secrets,
as they can read the data the secrets protect.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import cast

from sqlalchemy import Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.domain.cursors import SECRET_BYTES
from creditwatch.server.store import models

_S = cast(Table, models.ServerSecret.__table__)
ALERT_CURSORS = "alert_cursors"


async def shared_secret(
    sessions: async_sessionmaker[AsyncSession], name: str, size: int = SECRET_BYTES
) -> tuple[bytes, datetime]:
    """The deployment's secret called `name`, made now if no replica has made
    it, and when it was made."""
    async with sessions.begin() as session:
        await session.execute(
            pg_insert(_S)
            .values(name=name, secret=secrets.token_bytes(size))
            .on_conflict_do_nothing(index_elements=["name"])
        )
        row = (
            await session.execute(select(_S.c.secret, _S.c.create_time).where(_S.c.name == name))
        ).one()
    return bytes(row.secret), row.create_time
