"""Database URLs as operators write them: schemes and TLS modes reach every connection."""

from __future__ import annotations

import pytest

from creditwatch.server.store.database import async_url, connect_kwargs


@pytest.mark.parametrize(
    ("written", "used"),
    [
        ("postgres://u:p@db:5432/cw", "postgresql+asyncpg://u:p@db:5432/cw"),
        ("postgresql://u:p@db/cw", "postgresql+asyncpg://u:p@db/cw"),
        ("postgresql+psycopg://u@db/cw", "postgresql+asyncpg://u@db/cw"),
        ("postgres://u@db/cw?sslmode=verify-full", "postgresql+asyncpg://u@db/cw?ssl=verify-full"),
        ("postgresql://u@db/cw?ssl=require", "postgresql+asyncpg://u@db/cw?ssl=require"),
    ],
)
def test_every_postgres_spelling_gets_the_asyncpg_driver(written: str, used: str) -> None:
    assert async_url(written) == used


def test_other_databases_are_refused() -> None:
    with pytest.raises(ValueError, match="needs PostgreSQL"):
        async_url("mysql://u@db/cw")


@pytest.mark.parametrize(
    "url",
    [
        "postgres://u:p@db:5433/cw?sslmode=verify-full",
        "postgresql+asyncpg://u:p@db:5433/cw?ssl=verify-full",
    ],
)
def test_dedicated_connections_keep_the_tls_mode(url: str) -> None:
    assert connect_kwargs(url) == {
        "user": "u",
        "password": "p",
        "database": "cw",
        "host": "db",
        "port": 5433,
        "ssl": "verify-full",
    }


def test_no_tls_mode_leaves_asyncpg_s_default() -> None:
    assert "ssl" not in connect_kwargs("postgresql://u@db/cw")
