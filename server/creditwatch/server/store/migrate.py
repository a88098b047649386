"""Applying the Alembic migrations shipped in `creditwatch.migrations`."""

from __future__ import annotations

import asyncio
from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at the packaged migrations and at `url`."""
    location = resources.files("creditwatch.migrations")
    config = Config()
    config.set_main_option("script_location", str(location))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` up to `revision` (blocking)."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at `url` down to `revision` (blocking)."""
    command.downgrade(alembic_config(url), revision)


async def upgrade_async(url: str, revision: str = "head") -> None:
    """`upgrade` from async code: Alembic runs its own event loop, so use a thread."""
    await asyncio.to_thread(upgrade, url, revision)


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


async def prepare(url: str, migrate: bool) -> None:
    """Bring the schema to this release's head, as a server does at start-up
    when `migrate` (CREDITWATCH_MIGRATE_ON_START) is on; when it is off, only
    check it is there already (SchemaBehind if not): an operator who keeps
    migrations for a maintenance window must not have one run by an admin
    command of the new release."""
    if migrate:
        await upgrade_async(url)
        return
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    current = await current_revision(url)
    if current != head:
        raise SchemaBehind(
            f"the database is at revision {current or 'none'}, this release needs {head}; "
            "CREDITWATCH_MIGRATE_ON_START is false, so run `creditwatch db upgrade` first"
        )
