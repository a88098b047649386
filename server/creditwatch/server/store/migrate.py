"""Applying the Alembic migrations shipped in `creditwatch.migrations`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

if TYPE_CHECKING:
    from creditwatch.server.config import Settings


LOCK_TIMEOUT_SECONDS = 5.0
"""How long one attempt at the migrations waits for a table lock."""
WAIT_SECONDS = 300.0
"""How long the attempts go on, pausing between them, before giving up."""


@dataclass(frozen=True)
class LockPatience:
    """How migrations wait for their table locks.

    The migrations run in one transaction. A statement such as ALTER TABLE
    needs its table's exclusive lock, which waits for every transaction that
    has touched the table to end; while it waits, every later query of the
    table queues behind it, so one long report or idle-in-transaction
    session would stall all replicas' traffic on that table. Each attempt
    therefore waits at most `lock_timeout` seconds for a lock (PostgreSQL's
    lock_timeout), then rolls back, so the queued queries go on, and tries
    again after a pause, for up to `wait` seconds in all (MigrationLocked
    after that, the schema as it was)."""

    lock_timeout: float = LOCK_TIMEOUT_SECONDS
    wait: float = WAIT_SECONDS


def lock_patience(settings: Settings) -> LockPatience:
    """The migrations' lock patience a server's settings ask for."""
    return LockPatience(settings.migration_lock_timeout_seconds, settings.migration_wait_seconds)


class MigrationLocked(RuntimeError):
    """The migrations could not take their table locks in the time allowed:
    other transactions held the tables (nothing was migrated)."""


def alembic_config(url: str, patience: LockPatience | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations and at `url`."""
    location = resources.files("creditwatch.migrations")
    config = Config()
    config.set_main_option("script_location", str(location))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["lock_patience"] = patience or LockPatience()
    return config


def upgrade(url: str, revision: str = "head", patience: LockPatience | None = None) -> None:
    """Migrate the database at `url` up to `revision` (blocking; MigrationLocked
    if other transactions hold the tables longer than `patience` allows)."""
    command.upgrade(alembic_config(url, patience), revision)


def downgrade(url: str, revision: str, patience: LockPatience | None = None) -> None:
    """Migrate the database at `url` down to `revision` (blocking)."""
    command.downgrade(alembic_config(url, patience), revision)


async def upgrade_async(
    url: str, revision: str = "head", patience: LockPatience | None = None
) -> None:
    """`upgrade` from async code: Alembic runs its own event loop, so use a thread."""
    await asyncio.to_thread(upgrade, url, revision, patience)


class SchemaBehind(RuntimeError):
    """The database's schema is older than this release's, and migrating it
    was not asked for (CREDITWATCH_MIGRATE_ON_START=false)."""


async def current_revision(url: str) -> str | None:
    """The revision the database at `url` is at (None: never migrated)."""
    engine = create_async_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:
            exists = await connection.scalar(text("SELECT to_regclass('alembic_version')"))
            if exists is None:
                return None
            found = await connection.scalar(text("SELECT version_num FROM alembic_version"))
            return str(found) if found is not None else None
    finally:
        await engine.dispose()


async def prepare(url: str, migrate: bool, patience: LockPatience | None = None) -> None:
    """Bring the schema to this release's head, as a server does at start-up
    when `migrate` (CREDITWATCH_MIGRATE_ON_START) is on; when it is off, only
    check it is there already (SchemaBehind if not): an operator who keeps
    migrations for a maintenance window must not have one run by an admin
    command of the new release."""
    if migrate:
        await upgrade_async(url, patience=patience)
        return
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    current = await current_revision(url)
    if current != head:
        raise SchemaBehind(
            f"the database is at revision {current or 'none'}, this release needs {head}; "
            "CREDITWATCH_MIGRATE_ON_START is false, so run `creditwatch db upgrade` first"
        )
