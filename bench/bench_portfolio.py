"""Portfolio view at scale, against baselines measured in the same run.

One run measures, on this machine:
  * GetPortfolioSummary and ListSegments on a watch list of 100,000 entries
    (every company scored): p50 and p90 over repeated calls over gRPC, beside
    the bare SQL read of the same rows (entries joined with each company's
    latest score);
  * the daily snapshot job over 1,000,000 watch list entries (ten lists of
    100,000), beside a bare INSERT ... SELECT copy of the entries table;
  * GetMigrationMatrix and GetRiskTrend over two such days of one list, beside
    the bare SQL read of the two days' snapshot rows.
Data is bulk-loaded with COPY. Run: .venv/bin/python bench/bench_portfolio.py
[--entries 100000] [--snapshot-entries 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from google.type import date_pb2

from bench.common import (
    connect_kwargs,
    copy_companies_and_scores,
    fresh_database,
    print_table,
    server_url,
)
from creditwatch.client.testing import ServerProcess
from creditwatch.server.jobs.scheduler import take_snapshots
from creditwatch.server.store import database
from creditwatch.server.store.tenants import TenantStore
from creditwatch.v1 import portfolio_pb2, portfolio_pb2_grpc
from tests.identifiers import norwegian_numbers


async def seed(db_url: str, tenant: uuid.UUID, lists: int, per_list: int) -> list[uuid.UUID]:
    """`lists` watch lists of `per_list` entries over distinct scored companies (COPY)."""
    numbers = norwegian_numbers(per_list, start=80_000_000)
    rng = random.Random(5)
    now = datetime.now(UTC)
    conn = await asyncpg.connect(**connect_kwargs(db_url))
    ids = [uuid.uuid4() for _ in range(lists)]
    try:
        await copy_companies_and_scores(
            conn,
            numbers,
            [
                ("NO", n, pd, c, c, "[]", "bench", now)
                for n in numbers
                for pd in [rng.betavariate(0.6, 25)]
                for c in [1 if pd < 0.0083 else 2 if pd < 0.0335 else 3 if pd < 0.1646 else 4]
            ],
        )
        await conn.copy_records_to_table(
            "watch_lists",
            columns=[
                "tenant_id",
                "id",
                "display_name",
                "description",
                "pd_threshold",
                "alert_rules",
                "labels",
                "entry_count",
                "create_time",
                "update_time",
            ],
            records=[
                (tenant, i, f"bench {k}", "", 0.0, "{}", "{}", per_list, now, now)
                for k, i in enumerate(ids)
            ],
        )
        for watch_list in ids:
            await conn.copy_records_to_table(
                "watch_list_entries",
                columns=[
                    "tenant_id",
                    "watch_list_id",
                    "country",
                    "register_number",
                    "exposure_currency",
                    "exposure_amount",
                    "external_reference",
                    "labels",
                    "create_time",
                    "update_time",
                ],
                records=[
                    (
                        tenant,
                        watch_list,
                        "NO",
                        n,
                        "NOK",
                        Decimal(rng.randint(1, 5_000) * 1_000),
                        f"c-{n}",
                        "{}",
                        now,
                        now,
                    )
                    for n in numbers
                ],
            )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return ids


async def bare_read(db_url: str, tenant: uuid.UUID, watch_list: uuid.UUID) -> float:
    """Seconds for the bare SQL read of the summary's rows."""
    # Without JIT, as the service's connections run (store.database).
    conn = await asyncpg.connect(**connect_kwargs(db_url), server_settings={"jit": "off"})
    try:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            await conn.fetch(
                """
                SELECT e.country, e.register_number, e.exposure_currency, e.exposure_amount,
                       s.probability_of_default, s.risk_class
                FROM watch_list_entries e
                LEFT JOIN LATERAL (
                    SELECT probability_of_default, risk_class FROM scores
                    WHERE scores.country = e.country
                      AND scores.register_number = e.register_number
                    ORDER BY id DESC LIMIT 1
                ) s ON true
                WHERE e.tenant_id = $1 AND e.watch_list_id = $2
                """,
                tenant,
                watch_list,
            )
            times.append(time.perf_counter() - started)
        return statistics.median(times)
    finally:
        await conn.close()


async def _latencies(calls: dict[str, Callable[[], Awaitable[object]]]) -> dict[str, list[float]]:
    """Seconds per call of each, nine calls after a warm-up."""
    out: dict[str, list[float]] = {}
    for label, call in calls.items():
        await call()  # warm-up
        times = []
        for _ in range(9):
            started = time.perf_counter()
            await call()
            times.append(time.perf_counter() - started)
        out[label] = times
    return out


async def current_latency(address: str, key: str, watch_list: uuid.UUID) -> dict[str, list[float]]:
    """Seconds per GetPortfolioSummary and ListSegments call (current scores)."""
    name = f"watchLists/{watch_list}"
    async with grpc.aio.insecure_channel(address) as channel:
        stub = portfolio_pb2_grpc.PortfolioServiceStub(channel)
        metadata = (("authorization", f"Bearer {key}"),)
        calls = {
            "GetPortfolioSummary": lambda: stub.GetPortfolioSummary(
                portfolio_pb2.GetPortfolioSummaryRequest(watch_list=name, reporting_currency="NOK"),
                metadata=metadata,
            ),
            "ListSegments": lambda: stub.ListSegments(
                portfolio_pb2.ListSegmentsRequest(watch_list=name, reporting_currency="NOK"),
                metadata=metadata,
            ),
        }
        return await _latencies(calls)


FIRST_DAY, SECOND_DAY = date(2026, 1, 1), date(2026, 1, 2)


def _day(day: date) -> date_pb2.Date:
    return date_pb2.Date(year=day.year, month=day.month, day=day.day)


async def history_latency(address: str, key: str, watch_list: uuid.UUID) -> dict[str, list[float]]:
    """Seconds per GetMigrationMatrix and GetRiskTrend call over FIRST_DAY and
    SECOND_DAY's snapshots."""
    name = f"watchLists/{watch_list}"
    async with grpc.aio.insecure_channel(address) as channel:
        stub = portfolio_pb2_grpc.PortfolioServiceStub(channel)
        metadata = (("authorization", f"Bearer {key}"),)
        calls = {
            "GetMigrationMatrix": lambda: stub.GetMigrationMatrix(
                portfolio_pb2.GetMigrationMatrixRequest(
                    watch_list=name,
                    reporting_currency="NOK",
                    from_date=_day(FIRST_DAY),
                    to_date=_day(SECOND_DAY),
                ),
                metadata=metadata,
            ),
            "GetRiskTrend": lambda: stub.GetRiskTrend(
                portfolio_pb2.GetRiskTrendRequest(
                    watch_list=name,
                    reporting_currency="NOK",
                    start_date=_day(FIRST_DAY),
                    end_date=_day(SECOND_DAY),
                ),
                metadata=metadata,
            ),
        }
        return await _latencies(calls)


async def bare_history_read(db_url: str, tenant: uuid.UUID, watch_list: uuid.UUID) -> float:
    """Seconds for the bare SQL read of the two days' snapshot rows."""
    conn = await asyncpg.connect(**connect_kwargs(db_url), server_settings={"jit": "off"})
    try:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            await conn.fetch(
                "SELECT * FROM portfolio_snapshots WHERE tenant_id = $1 AND watch_list_id = $2 "
                "AND snapshot_date BETWEEN $3 AND $4",
                tenant,
                watch_list,
                FIRST_DAY,
                SECOND_DAY,
            )
            times.append(time.perf_counter() - started)
        return statistics.median(times)
    finally:
        await conn.close()


async def bare_copy(db_url: str) -> float:
    conn = await asyncpg.connect(**connect_kwargs(db_url), server_settings={"jit": "off"})
    try:
        started = time.perf_counter()
        await conn.execute("CREATE TABLE bench_copy AS SELECT * FROM watch_list_entries")
        return time.perf_counter() - started
    finally:
        await conn.close()


async def snapshot_seconds(db_url: str) -> tuple[float, int]:
    engine = database.create_engine(database.async_url(db_url), 2)
    try:
        started = time.perf_counter()
        written = await take_snapshots(database.session_factory(engine), FIRST_DAY)
        return time.perf_counter() - started, written
    finally:
        await engine.dispose()


async def second_day(db_url: str) -> None:
    """SECOND_DAY's snapshots, after a tenth of the companies moved a class."""
    conn = await asyncpg.connect(**connect_kwargs(db_url))
    try:
        await conn.execute("UPDATE scores SET risk_class = 1 + risk_class % 4 WHERE id % 10 = 0")
    finally:
        await conn.close()
    engine = database.create_engine(database.async_url(db_url), 2)
    try:
        await take_snapshots(database.session_factory(engine), SECOND_DAY)
    finally:
        await engine.dispose()


async def tenant_key(db_url: str) -> tuple[uuid.UUID, str]:
    engine = database.create_engine(database.async_url(db_url), 2)
    try:
        store = TenantStore(database.session_factory(engine))
        tenant = await store.create_tenant("bench")
        return tenant.id, (await store.create_api_key(tenant.id)).token
    finally:
        await engine.dispose()


def latency_table(
    title: str, baseline_label: str, baseline: float, results: dict[str, list[float]]
) -> None:
    """p50 and p90 of each call beside a baseline (seconds), and their ratio."""
    print_table(
        title,
        ("call", "p50 (ms)", "p90 (ms)", baseline_label, "ratio"),
        [
            (
                label,
                f"{statistics.median(times) * 1000:.0f}",
                f"{sorted(times)[int(len(times) * 0.9)] * 1000:.0f}",
                f"{baseline * 1000:.0f}",
                f"{statistics.median(times) / baseline:.1f}x",
            )
            for label, times in results.items()
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--snapshot-entries", type=int, default=1_000_000)
    args = parser.parse_args()
    url, embedded = server_url()
    lists = max(1, args.snapshot_entries // args.entries)
    with fresh_database(url) as db_url:
        tenant, key = asyncio.run(tenant_key(db_url))
        print(f"Seeding {lists} watch lists of {args.entries:,} scored entries (COPY)...")
        ids = asyncio.run(seed(db_url, tenant, lists, args.entries))
        env = {"CREDITWATCH_LOG_LEVEL": "WARNING", "CREDITWATCH_JOBS_ENABLED": "false"}
        with ServerProcess(db_url, env=env) as server:
            current = asyncio.run(current_latency(server.address, key, ids[0]))
        bare = asyncio.run(bare_read(db_url, tenant, ids[0]))
        latency_table(
            f"Portfolio of {args.entries:,} entries, current scores",
            "bare SQL read (ms)",
            bare,
            current,
        )
        seconds, written = asyncio.run(snapshot_seconds(db_url))
        copy = asyncio.run(bare_copy(db_url))
        print_table(
            f"Daily snapshot job, {lists * args.entries:,} entries",
            ("seconds", "entries/s", "bare copy of entries (s)", "ratio"),
            [
                (
                    f"{seconds:.1f}",
                    f"{written / seconds:,.0f}",
                    f"{copy:.1f}",
                    f"{seconds / copy:.1f}x",
                )
            ],
        )
        asyncio.run(second_day(db_url))
        with ServerProcess(db_url, env=env) as server:
            history = asyncio.run(history_latency(server.address, key, ids[0]))
        bare_history = asyncio.run(bare_history_read(db_url, tenant, ids[0]))
        latency_table(
            f"Snapshot history of {args.entries:,} entries over two days",
            "bare read of both days (ms)",
            bare_history,
            history,
        )
    del embedded


if __name__ == "__main__":
    main()
