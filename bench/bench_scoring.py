"""Scoring latency and throughput against raw onnxruntime and a bare gRPC echo.

One run measures, on this machine:
  * raw onnxruntime: one row, and a batch of 1,000 rows (the model's own cost);
  * a bare grpc.aio echo round trip on loopback (transport cost), same client;
  * ScoreCompany (stored-score lookup) and ScoreFinancials (model on the spot,
    with reason codes) at concurrency 1, 8 and 64: p50, p99, requests/s;
  * StreamScores: statement rows/s over one bidirectional stream;
and prints ratios to the baselines. Goals (issue #4): ScoreCompany p50 <= 1.2x
echo, ScoreFinancials p50 <= 1.5x echo, StreamScores >= 50 % of raw batch rows/s.

Run: make bench   (or .venv/bin/python bench/bench_scoring.py)
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    create_tenant_key,
    fresh_database,
    percentile,
    print_table,
    server_url,
)
from creditwatch.client.testing import ServerProcess
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.scores import RiskClass, StoredScore
from creditwatch.server.scoring.model import OnnxModel
from creditwatch.server.scoring.registry import manifest_paths
from creditwatch.server.store import database
from creditwatch.server.store.scores import ScoreStore
from creditwatch.v1 import common_pb2, scoring_pb2, scoring_pb2_grpc
from tests.e2e.test_scoring import healthy
from tests.identifiers import norwegian_numbers

DURATION = 3.0  # seconds per latency measurement
STREAM_ROWS = 20_000
STREAM_CHUNK = 1_000


def raw_onnxruntime() -> tuple[float, float]:
    """(single-row seconds, batch-of-1000 rows/s) of the shipped model."""
    model = OnnxModel(manifest_paths(None)[-1])
    rng = np.random.default_rng(7)
    one = rng.normal(size=(1, 64)).astype(np.float32)
    batch = rng.normal(size=(1000, 64)).astype(np.float32)
    for _ in range(200):
        model.run(one)
    started = time.perf_counter()
    n = 5000
    for _ in range(n):
        model.run(one)
    single = (time.perf_counter() - started) / n
    started = time.perf_counter()
    m = 50
    for _ in range(m):
        model.run(batch)
    return single, 1000 * m / (time.perf_counter() - started)


async def closed_loop(call: Callable[[], Awaitable[object]], concurrency: int) -> dict[str, float]:
    """`concurrency` workers calling back to back for DURATION seconds."""
    latencies: list[float] = []
    deadline = time.perf_counter() + DURATION

    async def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    for _ in range(50):
        await call()  # warm-up
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "rps": len(latencies) / elapsed,
    }


async def measure(scoring: str, echo: str, key: str, company: str) -> dict[str, dict[str, float]]:
    metadata = (("authorization", f"Bearer {key}"),)
    results: dict[str, dict[str, float]] = {}
    async with (
        grpc.aio.insecure_channel(echo) as echo_channel,
        grpc.aio.insecure_channel(scoring) as channel,
    ):
        stub = scoring_pb2_grpc.ScoringServiceStub(channel)
        echo_call = echo_channel.unary_unary("/bench.Echo/Echo")
        company_request = scoring_pb2.ScoreCompanyRequest(
            company=common_pb2.CompanyRef(country="NO", register_number=company)
        )
        financials_request = scoring_pb2.ScoreFinancialsRequest(financial_statement=healthy())
        payload = financials_request.SerializeToString()
        for concurrency in (1, 8, 64):
            results[f"echo c={concurrency}"] = await closed_loop(
                lambda: echo_call(payload), concurrency
            )
            results[f"ScoreCompany c={concurrency}"] = await closed_loop(
                lambda: stub.ScoreCompany(company_request, metadata=metadata), concurrency
            )
            results[f"ScoreFinancials c={concurrency}"] = await closed_loop(
                lambda: stub.ScoreFinancials(financials_request, metadata=metadata), concurrency
            )

        statements = [healthy(net_profit=1_000_000 + i) for i in range(STREAM_CHUNK)]
        chunk = scoring_pb2.StreamScoresRequest(
            items=[
                scoring_pb2.ScoreItem(correlation_id=str(i), financial_statement=s)
                for i, s in enumerate(statements)
            ]
        )

        async def chunks():  # type: ignore[no-untyped-def]
            for _ in range(STREAM_ROWS // STREAM_CHUNK):
                yield chunk

        started = time.perf_counter()
        rows = 0
        async for response in stub.StreamScores(chunks(), metadata=metadata):
            rows += len(response.results)
        results["StreamScores"] = {"rows_per_s": rows / (time.perf_counter() - started)}
    return results


async def seed_score(db_url: str) -> str:
    number = norwegian_numbers(1, start=90_100_000)[0]
    engine = database.create_engine(database.async_url(db_url), 1)
    try:
        await ScoreStore(database.session_factory(engine)).record(
            CompanyId("NO", number),
            StoredScore(0.02, RiskClass.B, RiskClass.B, (), "seed", None, datetime.now(UTC)),
        )
    finally:
        await engine.dispose()
    return number


def main() -> None:
    single, batch_rate = raw_onnxruntime()
    url, _embedded = server_url()
    with fresh_database(url) as db_url, tempfile.TemporaryDirectory() as scratch:
        key = asyncio.run(create_tenant_key(db_url))
        company = asyncio.run(seed_score(db_url))
        port_file = Path(scratch) / "echo.port"
        echo = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("echo_server.py")), str(port_file)]
        )
        try:
            while not port_file.exists() or not port_file.read_text():
                time.sleep(0.05)
            echo_address = f"127.0.0.1:{port_file.read_text()}"
            with ServerProcess(db_url, env={"CREDITWATCH_LOG_LEVEL": "WARNING"}) as server:
                results = asyncio.run(measure(server.address, echo_address, key, company))
        finally:
            echo.kill()

    print_table(
        "Raw onnxruntime (shipped model, one thread)",
        ("measure", "value"),
        [
            ("single row", f"{single * 1e6:.1f} µs"),
            ("batch of 1,000", f"{batch_rate:,.0f} rows/s"),
        ],
    )
    rows = []
    for concurrency in (1, 8, 64):
        base = results[f"echo c={concurrency}"]
        for name in ("echo", "ScoreCompany", "ScoreFinancials"):
            r = results[f"{name} c={concurrency}"]
            rows.append(
                (
                    f"{name} c={concurrency}",
                    f"{r['p50'] * 1e3:.3f}",
                    f"{r['p99'] * 1e3:.3f}",
                    f"{r['rps']:,.0f}",
                    f"{r['p50'] / base['p50']:.2f}x",
                )
            )
    print_table(
        "Unary RPCs over loopback gRPC (closed loop, one client process)",
        ("call", "p50 ms", "p99 ms", "req/s", "p50 vs echo"),
        rows,
    )
    stream_rate = results["StreamScores"]["rows_per_s"]
    print_table(
        f"StreamScores ({STREAM_ROWS:,} statements in chunks of {STREAM_CHUNK:,})",
        ("measure", "rows/s", "vs raw batch"),
        [("StreamScores", f"{stream_rate:,.0f}", f"{stream_rate / batch_rate:.0%}")],
    )
    c1 = results["echo c=1"]["p50"]
    print(
        "\ngoals: ScoreCompany p50 <= 1.2x echo: "
        f"{results['ScoreCompany c=1']['p50'] / c1:.2f}x; "
        f"ScoreFinancials p50 <= 1.5x echo: {results['ScoreFinancials c=1']['p50'] / c1:.2f}x; "
        f"StreamScores >= 50 % of raw batch: {stream_rate / batch_rate:.0%}"
    )


if __name__ == "__main__":
    main()
