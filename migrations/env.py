"""Alembic environment: runs migrations over asyncpg, one replica at a time."""

from __future__ import annotations

import asyncio
import logging
import time

from alembic import context
from sqlalchemy import exc, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from creditwatch.server.store.migrate import LockPatience, MigrationLocked
from creditwatch.server.store.models import Base

log = logging.getLogger("creditwatch.migrations")

target_metadata = Base.metadata

# Replicas starting together must not run the same migration twice; a
# session-level advisory lock serialises them (the key is arbitrary but fixed).
MIGRATION_LOCK_KEY = 0x63776D6967  # "cwmig"


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


# lock_not_available: a statement waited longer than lock_timeout for a lock.
_LOCK_NOT_AVAILABLE = "55P03"
# Pauses between attempts: doubling from the first, at most the last.
_FIRST_PAUSE, _LONGEST_PAUSE = 0.5, 15.0


def _lock_not_available(error: exc.DBAPIError) -> bool:
    return getattr(error.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE


async def _migrate(connection: AsyncConnection, patience: LockPatience) -> None:
    """Run the migrations in one transaction, each attempt waiting at most
    `patience.lock_timeout` for a lock, again after a pause until
    `patience.wait` is spent (see migrate.LockPatience)."""
    deadline = time.monotonic() + patience.wait
    pause = _FIRST_PAUSE
    attempt = 1
    timeout_ms = max(1, round(patience.lock_timeout * 1000))
    await connection.execute(text(f"SET lock_timeout = {timeout_ms}"))
    await connection.commit()
    while True:
        try:
            await connection.run_sync(_run)
            await connection.commit()
            return
        except exc.DBAPIError as error:
            await connection.rollback()
            if not _lock_not_available(error):
                raise
            if time.monotonic() + pause > deadline:
                raise MigrationLocked(
                    f"the migrations could not take a table lock in {attempt} attempts over "
                    f"{patience.wait:g} s (each waiting {patience.lock_timeout:g} s): other "
                    "transactions hold the tables; nothing was migrated. Find them in "
                    f"pg_stat_activity and retry ({error.orig})"
                ) from error
            log.warning(
                "migrations waiting for a table lock: other transactions hold it; "
                "rolled back, trying again",
                extra={"attempt": attempt, "pause_seconds": pause, "error": str(error.orig)},
            )
        await asyncio.sleep(pause)
        pause = min(pause * 2, _LONGEST_PAUSE)
        attempt += 1


async def _run_async() -> None:
    engine = create_async_engine(context.config.get_main_option("sqlalchemy.url") or "")
    patience = context.config.attributes.get("lock_patience") or LockPatience()
    try:
        async with engine.connect() as connection:
            await connection.execute(text(f"SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
            await connection.commit()
            try:
                await _migrate(connection, patience)
            finally:
                await connection.execute(text(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))
                await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
