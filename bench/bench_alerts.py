"""Alert delivery and re-scoring throughput, against baselines measured in the same run.

One run measures, on this machine:
  * intake → subscriber latency, p50/p99, with 1, 100 and 1,000 concurrent
    SubscribeAlerts streams: from the start of the RecordEvents call to the
    alert arriving at each subscriber (so it includes the intake RPC itself,
    whose own latency is printed beside it); the baseline is the same fan-out
    from a bare grpc.aio server (bench/echo_server.py: one message of an
    alert's size to every stream, from the publish call's start);
  * sustained alerts/s: concurrent RecordEvents bursts, counted at a subscriber;
  * server memory (RSS) with 1,000 idle streams open, per stream;
  * a full re-score of 100,000 watched companies (facts read from PostgreSQL,
    scores and alerts written back) in companies/s, beside raw onnxruntime
    batch rows/s of the same model in the same run; three times: first from
    old scores whose classes mostly differ (an alert for ~90 % of companies,
    the worst case), then as after a model activation that moves 10 % of the
    companies to another class, and one that moves none; then the 10 % run
    again shared by --replicas replicas (server processes claiming its
    chunks beside this process, as replicas share a run).
Goals (issue #5): p99 <= 50 ms at 1,000 subscribers; <= 50 KB per idle stream;
full re-score >= 25 % of the raw onnxruntime batch rate.

The subscribers run in this (one) Python process, so at 1,000 streams the
client's own CPU and queueing are part of the figure; the intake rate is paced
so the client keeps up. 1,000 subscribers are therefore measured a second time
spread over CLIENT_PROCESSES client processes (bench/subscribers.py), on the
same two cores as the server.
Run: .venv/bin/python bench/bench_alerts.py [--companies 100000] [--rescore-only]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
import numpy as np
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    bare_server,
    connect_kwargs,
    copy_companies_and_scores,
    fresh_database,
    percentile,
    print_table,
    server_url,
)
from creditwatch.client.testing import ServerProcess
from creditwatch.server.app import tune_garbage_collector
from creditwatch.server.config import Settings
from creditwatch.server.domain.financials import LINE_ITEMS
from creditwatch.server.domain.overrides import OverridePolicy
from creditwatch.server.domain.tenants import SCOPE_COMPANIES_WRITE
from creditwatch.server.jobs.rescoring import Rescorer, RescoreResult
from creditwatch.server.scoring.engine import StatementColumns
from creditwatch.server.scoring.model import OnnxModel
from creditwatch.server.scoring.registry import ModelRegistry, manifest_paths
from creditwatch.server.store import database
from creditwatch.server.store.tenants import TenantStore
from creditwatch.v1 import (
    alerts_pb2,
    alerts_pb2_grpc,
    common_pb2,
    companies_pb2,
    companies_pb2_grpc,
    watchlists_pb2,
    watchlists_pb2_grpc,
)
from tests.e2e.test_scoring import healthy
from tests.identifiers import norwegian_numbers

CHANNELS = 10  # subscriber streams are spread over this many connections
CLIENT_PROCESSES = 4  # for the second 1,000-subscriber measurement


def raw_batch_rows_per_second() -> float:
    """onnxruntime on the shipped model, batches of 1,000 rows."""
    model = OnnxModel(manifest_paths(None)[-1])
    batch = np.random.default_rng(7).normal(size=(1000, 64)).astype(np.float32)
    for _ in range(5):
        model.run(batch)
    started = time.perf_counter()
    runs = 50
    for _ in range(runs):
        model.run(batch)
    return 1000 * runs / (time.perf_counter() - started)


async def keys(db_url: str) -> tuple[str, str]:
    """(subscriber tenant key, feed key with companies:write)."""
    engine = database.create_engine(database.async_url(db_url), 2)
    try:
        store = TenantStore(database.session_factory(engine))
        bank = await store.create_tenant("bench bank")
        feed = await store.create_tenant("bench feed")
        return (
            (await store.create_api_key(bank.id)).token,
            (await store.create_api_key(feed.id, scopes=(SCOPE_COMPANIES_WRITE,))).token,
        )
    finally:
        await engine.dispose()


def meta(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def ref(number: str) -> common_pb2.CompanyRef:
    return common_pb2.CompanyRef(country="NO", register_number=number)


async def watch_all(channel: grpc.aio.Channel, key: str, numbers: list[str]) -> None:
    stub = watchlists_pb2_grpc.WatchListServiceStub(channel)
    created = await stub.CreateWatchList(
        watchlists_pb2.CreateWatchListRequest(
            watch_list=watchlists_pb2.WatchList(display_name="bench")
        ),
        metadata=meta(key),
    )
    for i in range(0, len(numbers), 10_000):
        await stub.AddEntries(
            watchlists_pb2.AddEntriesRequest(
                parent=created.watch_list.name,
                entries=[
                    watchlists_pb2.WatchListEntry(company=ref(n)) for n in numbers[i : i + 10_000]
                ],
            ),
            metadata=meta(key),
        )


def remark(number: str) -> companies_pb2.CompanyEvent:
    event = companies_pb2.CompanyEvent(
        event_id=uuid.uuid4().hex,
        company=ref(number),
        source="bench",
        payment_remark_registered=companies_pb2.PaymentRemarkRegistered(remark_id="r"),
    )
    event.occurred_time.FromDatetime(datetime(2026, 5, 1, tzinfo=UTC))
    return event


class Subscriber:
    """One stream, recording when each alert (by company) arrived."""

    def __init__(self, channel: grpc.aio.Channel, key: str) -> None:
        self.call = alerts_pb2_grpc.AlertServiceStub(channel).SubscribeAlerts(
            alerts_pb2.SubscribeAlertsRequest(heartbeat_interval_seconds=300), metadata=meta(key)
        )
        self.arrivals: dict[str, float] = {}
        self.ready = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self.call:
                if message.WhichOneof("payload") == "heartbeat":
                    self.ready.set()
                else:
                    self.arrivals[message.alert.company.register_number] = time.perf_counter()
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass

    def close(self) -> None:
        self.call.cancel()


async def latency(
    channels: list[grpc.aio.Channel],
    key: str,
    feed: str,
    numbers: list[str],
    subscribers: int,
    server_pid: int,
) -> dict[str, float]:
    """Open `subscribers` streams, send one alert at a time, measure arrival delays."""
    streams = [Subscriber(channels[i % len(channels)], key) for i in range(subscribers)]
    await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in streams)), 120)
    intake = companies_pb2_grpc.CompanyDataServiceStub(channels[0])
    alerts = min(len(numbers), 100)
    cpu_before = cpu_seconds(server_pid)
    pace = max(0.02, subscribers / 20_000)  # the client must keep up with the fan-out
    started: dict[str, float] = {}
    calls: list[float] = []
    for number in numbers[:alerts]:
        started[number] = time.perf_counter()
        await intake.RecordEvents(
            companies_pb2.RecordEventsRequest(events=[remark(number)]), metadata=meta(feed)
        )
        calls.append((time.perf_counter() - started[number]) * 1000)
        await asyncio.sleep(pace)
    for _ in range(1200):  # up to a minute for the last deliveries
        if all(len(s.arrivals) >= alerts for s in streams):
            break
        await asyncio.sleep(0.05)
    cpu = cpu_seconds(server_pid) - cpu_before
    from_call = [
        (s.arrivals[n] - started[n]) * 1000 for s in streams for n in started if n in s.arrivals
    ]
    missing = alerts * subscribers - len(from_call)
    for s in streams:
        s.close()
    await asyncio.gather(*(s.task for s in streams))
    return {
        "intake_p50": percentile(calls, 50),
        "p50": percentile(from_call, 50),
        "p99": percentile(from_call, 99),
        "deliveries": len(from_call),
        "missing": missing,
        "server_cpu_ms": cpu / alerts * 1000,
    }


async def sustained(
    channels: list[grpc.aio.Channel], key: str, feed: str, numbers: list[str]
) -> tuple[float, float, int]:
    """(alerts/s written, alerts/s delivered to one subscriber, alerts) for
    concurrent bursts of 500-event RecordEvents calls."""
    stream = Subscriber(channels[1], key)
    await stream.ready.wait()
    intake = companies_pb2_grpc.CompanyDataServiceStub(channels[0])
    batches = [numbers[i : i + 500] for i in range(0, len(numbers), 500)]
    started = time.perf_counter()

    async def send(batch: list[str]) -> None:
        await intake.RecordEvents(
            companies_pb2.RecordEventsRequest(events=[remark(n) for n in batch]),
            metadata=meta(feed),
        )

    for group in range(0, len(batches), 4):  # four concurrent writers
        await asyncio.gather(*(send(b) for b in batches[group : group + 4]))
    written = time.perf_counter() - started
    for _ in range(12_000):  # up to two minutes
        if len(stream.arrivals) >= len(numbers):
            break
        await asyncio.sleep(0.01)
    delivered = max(stream.arrivals.values()) - started if stream.arrivals else float("nan")
    stream.close()
    await stream.task
    return len(numbers) / written, len(stream.arrivals) / delivered, len(stream.arrivals)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def idle_memory(
    channels: list[grpc.aio.Channel], key: str, pid: int, count: int
) -> tuple[int, int]:
    """(RSS before, RSS after) `count` idle streams are open, in KB."""
    await asyncio.sleep(1)
    before = rss_kb(pid)
    streams = [Subscriber(channels[i % len(channels)], key) for i in range(count)]
    await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in streams)), 120)
    await asyncio.sleep(2)
    after = rss_kb(pid)
    for s in streams:
        s.close()
    await asyncio.gather(*(s.task for s in streams))
    return before, after


async def seed_for_rescore(db_url: str, key: str, address: str, count: int) -> None:
    """`count` watched companies with a statement and an old score of another
    model version, bulk-loaded (COPY), so all are due for re-scoring."""
    numbers = norwegian_numbers(count, start=81_000_000)
    base = {k: v for k, v in json_format_items().items()}
    rng = random.Random(11)
    now = datetime.now(UTC)
    conn = await asyncpg.connect(**connect_kwargs(db_url))
    try:
        await copy_companies_and_scores(
            conn,
            numbers,
            [("NO", n, 0.001, 1, 1, "[]", "retired", now - timedelta(days=2)) for n in numbers],
        )
        statements = []
        for n in numbers:
            items = {k: v * rng.uniform(0.5, 1.5) for k, v in base.items()}
            statements.append(
                ("NO", n, date(2025, 12, 31), date(2025, 1, 1), "NOK", json.dumps(items), "bench")
            )
        await conn.copy_records_to_table(
            "financial_statements",
            columns=[
                "country",
                "register_number",
                "period_end",
                "period_start",
                "currency",
                "items",
                "source",
            ],
            records=statements,
        )
    finally:
        await conn.close()
    async with grpc.aio.insecure_channel(address) as channel:
        await watch_all(channel, key, numbers)


async def retire_scores(db_url: str, changed_every: int = 0) -> None:
    """Mark every current score as made by a retired model version; with
    `changed_every` = n, every n-th company's score also had another class
    (as if the new model moved it), so its re-score raises an alert."""
    conn = await asyncpg.connect(**connect_kwargs(db_url))
    try:
        await conn.execute(
            """
            UPDATE scores SET model_version = 'retired',
                   risk_class = CASE WHEN $1 > 0 AND abs(hashtext(register_number)) % $1 = 0
                                     THEN risk_class % 4 + 1 ELSE risk_class END
            """,
            changed_every,
        )
    finally:
        await conn.close()


async def settle(db_url: str) -> None:
    """VACUUM ANALYZE after a bulk load or update, as autovacuum would have done
    in a running system by the time a scheduled re-score comes round (without
    it the first chunks are planned on the statistics of empty tables), and a
    CHECKPOINT, so that a run does not pay for writing out the previous run's
    pages (the worst-case run leaves ~400 MB of WAL behind it)."""
    conn = await asyncpg.connect(**connect_kwargs(db_url))
    try:
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


def json_format_items() -> dict[str, float]:
    statement = healthy()
    return {
        field.name: value for field, value in statement.ListFields() if isinstance(value, float)
    }


async def rescore(db_url: str, workers: int, chunk: int) -> RescoreResult:
    """The re-scoring job in this process, as the leading replica runs it: warm,
    as in a running server (pooled connections open, the model run once)."""
    engine = database.create_engine(database.async_url(db_url), workers + 2)
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="onnx") as executor:
            registry = ModelRegistry.load(executor, OverridePolicy())
            sessions = database.session_factory(engine)
            rescorer = Rescorer(sessions, registry, chunk=chunk, workers=workers)

            async def connect() -> None:
                async with sessions() as session:
                    await session.execute(text("SELECT 1"))

            await asyncio.gather(*(connect() for _ in range(workers + 2)))
            await registry.active.score_columns_stored(
                StatementColumns(
                    np.full((len(LINE_ITEMS), 1), 1_000.0), ["NOK"], [date(2025, 12, 31)]
                )
            )

            def progress(result: RescoreResult) -> None:
                print(
                    f"\r  re-scored {result.companies:,} companies, {result.alerts:,} alerts "
                    f"({result.rate:,.0f}/s)",
                    end="",
                    flush=True,
                )

            result = await rescorer.run(stale_after_seconds=3600, progress=progress)
            print()
            return result
    finally:
        await engine.dispose()


async def measure(db_url: str, server: ServerProcess, args: argparse.Namespace) -> None:
    key, feed = await keys(db_url)
    if not args.rescore_only:
        await delivery(server, key, feed)
    if not args.delivery_only:
        await full_rescore(db_url, server, key, args)


async def latency_in_processes(
    address: str,
    key: str,
    feed: str,
    numbers: list[str],
    subscribers: int,
    processes: int,
    server_pid: int,
) -> dict[str, float]:
    """`latency` with the subscribers spread over `processes` client processes
    (bench/subscribers.py), so that one client's own queueing is not measured."""
    share = [subscribers // processes + (i < subscribers % processes) for i in range(processes)]
    script = Path(__file__).with_name("subscribers.py")
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable, str(script), address, key, str(n), str(max(1, CHANNELS // processes)),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=1 << 26,  # the arrivals come back as one JSON line
        )
        for n in share
    ]  # fmt: skip

    async def ask(child: asyncio.subprocess.Process, command: str) -> bytes:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(command.encode() + b"\n")
        await child.stdin.drain()
        return await child.stdout.readline()

    try:
        for child in children:
            assert child.stdout is not None
            assert (await asyncio.wait_for(child.stdout.readline(), 180)).strip() == b"ready"
        async with grpc.aio.insecure_channel(address) as channel:
            intake = companies_pb2_grpc.CompanyDataServiceStub(channel)
            alerts = min(len(numbers), 100)
            cpu_before = cpu_seconds(server_pid)
            started: dict[str, float] = {}
            calls: list[float] = []
            for number in numbers[:alerts]:
                started[number] = time.perf_counter()
                await intake.RecordEvents(
                    companies_pb2.RecordEventsRequest(events=[remark(number)]),
                    metadata=meta(feed),
                )
                calls.append((time.perf_counter() - started[number]) * 1000)
                await asyncio.sleep(0.05)
        for _ in range(600):  # up to a minute for the last deliveries
            counts = [int(await ask(child, "count")) for child in children]
            if sum(counts) >= alerts * subscribers:
                break
            await asyncio.sleep(0.1)
        cpu = cpu_seconds(server_pid) - cpu_before
        from_call = []
        for child in children:
            for number, arrived in json.loads(await ask(child, "stop"))["arrivals"]:
                if number in started:
                    from_call.append((arrived - started[number]) * 1000)
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()
            await child.wait()
    return {
        "intake_p50": percentile(calls, 50),
        "p50": percentile(from_call, 50),
        "p99": percentile(from_call, 99),
        "deliveries": len(from_call),
        "missing": alerts * subscribers - len(from_call),
        "server_cpu_ms": cpu / alerts * 1000,
    }


async def bare_fanout(address: str, pid: int, subscribers: int, size: int) -> dict[str, float]:
    """The same fan-out with nothing of creditwatch's: bench/echo_server.py's
    Publish hands a payload of `size` bytes to every open Subscribe stream
    (same client set-up and pace as `latency`). Publish call start → arrival."""
    channels = [grpc.aio.insecure_channel(address) for _ in range(CHANNELS)]
    arrivals: list[tuple[int, float]] = []
    ready = [asyncio.Event() for _ in range(subscribers)]

    async def read(i: int) -> None:
        call = channels[i % CHANNELS].unary_stream("/bench.Fanout/Subscribe")(b"")
        try:
            async for message in call:
                if message:
                    arrivals.append((int.from_bytes(message[:4], "big"), time.perf_counter()))
                else:
                    ready[i].set()
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass

    readers = [asyncio.create_task(read(i)) for i in range(subscribers)]
    try:
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 120)
        publish = channels[0].unary_unary("/bench.Fanout/Publish")
        rounds = 100
        pace = max(0.02, subscribers / 20_000)  # as `latency`
        cpu_before = cpu_seconds(pid)
        started: list[float] = []
        for n in range(rounds):
            started.append(time.perf_counter())
            await publish(n.to_bytes(4, "big") + b"x" * (size - 4))
            await asyncio.sleep(pace)
        for _ in range(1200):
            if len(arrivals) >= rounds * subscribers:
                break
            await asyncio.sleep(0.05)
        cpu = cpu_seconds(pid) - cpu_before
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for channel in channels:
            await channel.close()
    delays = [(at - started[n]) * 1000 for n, at in arrivals]
    return {
        "p50": percentile(delays, 50),
        "p99": percentile(delays, 99),
        "deliveries": len(delays),
        "missing": rounds * subscribers - len(delays),
        "server_cpu_ms": cpu / rounds * 1000,
    }


async def alert_size(channel: grpc.aio.Channel, key: str) -> int:
    """Bytes of the newest alert as a stream sends it (a payment remark with both scores)."""
    found = await alerts_pb2_grpc.AlertServiceStub(channel).ListAlerts(
        alerts_pb2.ListAlertsRequest(page_size=1), metadata=meta(key)
    )
    return alerts_pb2.SubscribeAlertsResponse(alert=found.alerts[0]).ByteSize()


async def delivery(server: ServerProcess, key: str, feed: str) -> None:
    numbers = norwegian_numbers(12_000, start=80_100_000)
    channels = [grpc.aio.insecure_channel(server.address) for _ in range(CHANNELS)]
    try:
        await watch_all(channels[0], key, numbers)
        rows = []
        offset = 0
        pid = server.process.pid  # type: ignore[union-attr]
        for subscribers, processes in ((1, 0), (100, 0), (1000, 0), (1000, CLIENT_PROCESSES)):
            chosen = numbers[offset : offset + 100]
            if processes:
                figures = await latency_in_processes(
                    server.address, key, feed, chosen, subscribers, processes, pid
                )
            else:
                figures = await latency(channels, key, feed, chosen, subscribers, pid)
            offset += 100
            rows.append(
                (
                    f"{subscribers:,} ({processes or 1} client processes)",
                    f"{figures['intake_p50']:.1f}",
                    f"{figures['p50']:.1f}",
                    f"{figures['p99']:.1f}",
                    int(figures["deliveries"]),
                    int(figures["missing"]),
                    f"{figures['server_cpu_ms']:.1f}",
                )
            )
        # The floor: the same fan-out from a bare grpc.aio server, one message
        # of a live alert's size to every stream, measured from the publish.
        size = await alert_size(channels[0], key)
        with bare_server() as (address, bare_pid):
            for subscribers in (100, 1000):
                figures = await bare_fanout(address, bare_pid, subscribers, size)
                rows.append(
                    (
                        f"{subscribers:,}: bare grpc.aio fan-out of {size:,} B",
                        "-",
                        f"{figures['p50']:.1f}",
                        f"{figures['p99']:.1f}",
                        int(figures["deliveries"]),
                        int(figures["missing"]),
                        f"{figures['server_cpu_ms']:.1f}",
                    )
                )
        print_table(
            "Intake call start → alert at subscriber (ms; 100 alerts, one at a time); "
            "baseline: publish call start → message at subscriber",
            (
                "subscribers",
                "intake RPC p50",
                "p50",
                "p99",
                "deliveries",
                "missing",
                "server CPU ms/alert",
            ),
            rows,
        )
        written, delivered, count = await sustained(channels, key, feed, numbers[1_000:11_000])
        print_table(
            "Sustained alerts (10,000 alerts, 500 per RecordEvents, 4 concurrent writers)",
            ("written alerts/s", "delivered alerts/s", "delivered"),
            [(f"{written:,.0f}", f"{delivered:,.0f}", count)],
        )
        before, after = await idle_memory(channels, key, server.process.pid, 1000)  # type: ignore[union-attr]
        print_table(
            "Server memory with 1,000 idle streams",
            ("RSS before (MB)", "RSS after (MB)", "per stream (KB)", "goal (KB)"),
            [(f"{before / 1024:.1f}", f"{after / 1024:.1f}", f"{(after - before) / 1000:.1f}", 50)],
        )
    finally:
        for channel in channels:
            await channel.close()


async def full_rescore(
    db_url: str, server: ServerProcess, key: str, args: argparse.Namespace
) -> None:
    companies = args.companies
    # The job runs in this process as it runs in a server: with the server's
    # garbage collector settings (without them the collector took a sixth
    # of the worst case's time).
    tune_garbage_collector()
    print(f"\nSeeding {companies:,} watched companies for the re-score (COPY)...")
    await seed_for_rescore(db_url, key, server.address, companies)
    raw = raw_batch_rows_per_second()
    runs = []
    # First from the seeded old scores, whose classes mostly differ; then as
    # after a model activation that moves 10 % of companies to another
    # class, and one that moves none.
    for label, changed_every in (
        ("classes mostly change (worst case)", None),
        ("model change, 10 % change class", 10),
        ("model change, classes kept", 0),
    ):
        if changed_every is not None:
            await retire_scores(db_url, changed_every)
        await settle(db_url)
        cpu = time.process_time()
        result = await rescore(db_url, args.workers, args.chunk)
        runs.append((label, result, (time.process_time() - cpu) / result.companies * 1e6))
    # Once more, with the run shared: more replicas (server processes with
    # their jobs on) claim the run's chunks beside this process's workers.
    # Their CPU is not in this process's, so that column says "-".
    if args.replicas > 1:
        env = {
            "CREDITWATCH_LOG_LEVEL": "WARNING",
            "CREDITWATCH_RESCORE_WORKERS": str(args.workers),
            "CREDITWATCH_BATCH_SHARE_INTERVAL_SECONDS": "0.1",
            "CREDITWATCH_RESCORE_INTERVAL_SECONDS": "86400",  # never leads a run itself
        }
        with ExitStack() as replicas:
            for _ in range(args.replicas - 1):
                replicas.enter_context(ServerProcess(db_url, env=env))
            await retire_scores(db_url, 10)
            await settle(db_url)
            result = await rescore(db_url, args.workers, args.chunk)
        runs.append(
            (f"model change, 10 % change class, {result.replicas} replicas", result, math.nan)
        )
    print_table(
        f"Full re-score of {companies:,} watched companies (raw onnxruntime: {raw:,.0f} rows/s; "
        f"{args.workers} workers, chunks of {args.chunk:,})",
        ("run", "companies/s", "alerts", "job CPU µs/company", "ratio to raw", "goal"),
        [
            (
                label,
                f"{result.rate:,.0f}",
                f"{result.alerts:,}",
                "-" if math.isnan(cpu) else f"{cpu:.0f}",
                f"{result.rate / raw:.1%}",
                ">= 25 %",
            )
            for label, result, cpu in runs
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--companies", type=int, default=100_000)
    parser.add_argument(
        "--rescore-only", action="store_true", help="measure only the full re-score"
    )
    parser.add_argument(
        "--delivery-only", action="store_true", help="measure only latency, rate and memory"
    )
    defaults = Settings.model_fields
    parser.add_argument("--workers", type=int, default=defaults["rescore_workers"].default)
    parser.add_argument("--chunk", type=int, default=defaults["rescore_chunk"].default)
    parser.add_argument(
        "--replicas",
        type=int,
        default=2,
        help="replicas sharing the last re-score run (this process and server processes)",
    )
    args = parser.parse_args()
    url, embedded = server_url()
    with fresh_database(url) as db_url:
        env = {
            "CREDITWATCH_LOG_LEVEL": "WARNING",
            "CREDITWATCH_JOBS_ENABLED": "false",
            # One tenant holds every subscriber here: past the default cap of
            # 200 alert streams per tenant on a replica.
            "CREDITWATCH_MAX_ALERT_STREAMS_PER_TENANT": "5000",
        }
        with ServerProcess(db_url, env=env) as server:
            asyncio.run(measure(db_url, server, args))
    del embedded


if __name__ == "__main__":
    main()
