"""Scoring latency and throughput against raw onnxruntime and a bare gRPC echo.

One run measures, on this machine:
  * raw onnxruntime: one row, and a batch of 1,000 rows, of the PD-only graph
    (the shipped booster exported without contributions, as the model was
    shipped before: the model's own cost); and a batch of the shipped graph,
    which computes each feature's contribution in the same pass;
  * Scorer.score_many over 10,000 varied statements in-process (features,
    model, reason codes, overrides: a batch re-score without the database),
    set up as the service sets it up (one onnxruntime thread; the Python
    stages in a worker thread), companies/s, beside raw PD-only batch rows/s
    on random rows and on the same statements' features;
  * a bare grpc.aio echo round trip on loopback (transport cost), same client;
  * ScoreCompany (stored-score lookup) and ScoreFinancials (model on the spot,
    with reason codes) at concurrency 1, 8 and 64: p50, p99, requests/s;
  * StreamScores: statement rows/s over one bidirectional stream: a
    server's first stream (which starts its worker processes), then a long
    one; and a long one from a server scoring chunks in its own process;
and prints ratios to the baselines. Goals (issue #4): ScoreCompany p50 <= 1.2x
echo, ScoreFinancials p50 <= 1.5x echo, StreamScores >= 50 % of raw batch rows/s;
(scheduled re-score) Scorer.score_many >= 25 % of raw batch rows/s.

Run: make bench   (or .venv/bin/python bench/bench_scoring.py)
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import json
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import grpc
import lightgbm as lgb
import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    bare_server,
    create_tenant_key,
    fresh_database,
    percentile,
    print_table,
    server_url,
)
from creditwatch.client.testing import ServerProcess
from creditwatch.server.domain.events import RiskState
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.overrides import OverridePolicy
from creditwatch.server.domain.scores import RiskClass, StoredScore
from creditwatch.server.scoring.batcher import MicroBatcher
from creditwatch.server.scoring.engine import Scorer, ScoreRequest
from creditwatch.server.scoring.model import OnnxModel
from creditwatch.server.scoring.registry import manifest_paths
from creditwatch.server.store import database
from creditwatch.server.store.scores import ScoreStore
from creditwatch.v1 import common_pb2, scoring_pb2, scoring_pb2_grpc
from tests.e2e.test_scoring import healthy
from tests.identifiers import norwegian_numbers
from tests.unit.test_scorer import varied_statements

DURATION = 3.0  # seconds per latency measurement
FIRST_STREAM_ROWS = 20_000
STREAM_ROWS = 200_000
STREAM_CHUNK = 1_000
RESCORE_ROWS = 10_000
REPO = Path(__file__).resolve().parent.parent


def _session(model: bytes, threads: int = 1) -> ort.InferenceSession:
    """A session set up as OnnxModel sets up the service's (one thread), or
    with `threads` intra-op threads (0: onnxruntime's default, every core)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def pd_only_session(manifest: Path, threads: int = 1) -> ort.InferenceSession:
    """The shipped booster as a PD-only graph (scripts/train_model.py's to_onnx
    without contributions): what the model cost before it explained itself."""
    spec = importlib.util.spec_from_file_location(
        "train_model", REPO / "scripts" / "train_model.py"
    )
    assert spec is not None and spec.loader is not None
    train_model = importlib.util.module_from_spec(spec)
    sys.modules["train_model"] = train_model  # dataclasses look their module up
    spec.loader.exec_module(train_model)
    facts = json.loads(manifest.read_text())
    booster = lgb.Booster(model_file=str(manifest.parent / facts["files"]["booster"]))
    calibration = facts["calibration"]
    (recipe,) = [r for r in train_model.RECIPES.values() if r.version == facts["version"]]
    graph = train_model.to_onnx(
        booster, calibration["a"], calibration["b"], recipe=recipe, contributions=False
    )
    return _session(graph.SerializeToString(), threads)


def rows_per_second(run: Callable[[np.ndarray], object], batch: np.ndarray, repeat: int) -> float:
    """Best of three timings of `repeat` runs of `batch`."""
    run(batch)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(repeat):
            run(batch)
        best = min(best, time.perf_counter() - started)
    return len(batch) * repeat / best


def raw_onnxruntime(manifest: Path, pd_only: ort.InferenceSession) -> dict[str, float]:
    """Single-row seconds and batch rows/s of the PD-only and the shipped graph."""
    shipped = OnnxModel(manifest)
    rng = np.random.default_rng(7)
    one = rng.normal(size=(1, 64)).astype(np.float32)
    batch = rng.normal(size=(1000, 64)).astype(np.float32)

    def pd(rows: np.ndarray) -> object:
        return pd_only.run(["pd"], {"features": rows})

    return {
        "single": 1 / rows_per_second(pd, one, 5000),
        "batch": rows_per_second(pd, batch, 50),
        "shipped_single": 1 / rows_per_second(shipped.evaluate, one, 5000),
        "shipped_batch": rows_per_second(shipped.evaluate, batch, 50),
    }


def rescore(manifest: Path, pd_only: ort.InferenceSession) -> dict[str, float]:
    """Scorer.score_many over RESCORE_ROWS statements (companies/s, best of five
    calls), set up as the service sets it up; and raw PD-only batch rows/s on
    the same statements' features."""
    model = OnnxModel(manifest)
    requests = [ScoreRequest(s, RiskState()) for s in varied_statements(RESCORE_ROWS, seed=11)]

    async def timed() -> tuple[float, float]:
        with ThreadPoolExecutor(1, thread_name_prefix="onnx") as pool:
            scorer = Scorer(model, MicroBatcher(model.evaluate, pool), OverridePolicy())
            await scorer.score_many(requests)  # warm-up
            best = float("inf")
            for _ in range(5):
                # Garbage from the previous call is not this call's cost (the
                # collector stays on while timing, unlike timeit's default).
                scores: list[StoredScore | None] = []
                gc.collect()
                started = time.perf_counter()
                scores = await scorer.score_many(requests)
                best = min(best, time.perf_counter() - started)
            assert all(s is not None and s.reasons for s in scores)
            features = scorer.feature_matrix([r.statement for r in requests if r.statement])
        same_rows = rows_per_second(
            lambda rows: pd_only.run(["pd"], {"features": rows}), features, 5
        )
        return RESCORE_ROWS / best, same_rows

    rate, same_rows = asyncio.run(timed())
    return {"companies": rate, "same_rows": same_rows}


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
    return results


async def stream_rates(scoring: str, key: str) -> tuple[float, float]:
    """StreamScores rows/s of a server's first stream (which starts its worker
    processes, if any), then of a second, longer one."""
    metadata = (("authorization", f"Bearer {key}"),)
    statements = [healthy(net_profit=1_000_000 + i) for i in range(STREAM_CHUNK)]
    chunk = scoring_pb2.StreamScoresRequest(
        items=[
            scoring_pb2.ScoreItem(correlation_id=str(i), financial_statement=s)
            for i, s in enumerate(statements)
        ]
    )
    rates = []
    async with grpc.aio.insecure_channel(scoring) as channel:
        stub = scoring_pb2_grpc.ScoringServiceStub(channel)
        for count in (FIRST_STREAM_ROWS, STREAM_ROWS):

            async def chunks(count: int = count):  # type: ignore[no-untyped-def]
                for _ in range(count // STREAM_CHUNK):
                    yield chunk

            started = time.perf_counter()
            rows = 0
            async for response in stub.StreamScores(chunks(), metadata=metadata):
                rows += len(response.results)
            assert rows == count, f"{rows} answers to {count} statements"
            rates.append(rows / (time.perf_counter() - started))
    return rates[0], rates[1]


async def seed_score(db_url: str) -> str:
    number = norwegian_numbers(1, start=90_100_000)[0]
    engine = database.create_engine(database.async_url(db_url), 1)
    try:
        await ScoreStore(database.session_factory(engine)).record(
            CompanyId("NO", number),
            StoredScore(0.02, RiskClass.B, RiskClass.B, (), "seed", None, datetime.now(UTC)),
            OverridePolicy().tag,
        )
    finally:
        await engine.dispose()
    return number


def main() -> None:
    manifest = manifest_paths(None)[-1]
    pd_only = pd_only_session(manifest)
    raw = raw_onnxruntime(manifest, pd_only)
    every_core = pd_only_session(manifest, threads=0)
    rng = np.random.default_rng(7)
    all_cores_rate = rows_per_second(
        lambda rows: every_core.run(["pd"], {"features": rows}),
        rng.normal(size=(1000, 64)).astype(np.float32),
        50,
    )
    single, batch_rate = raw["single"], raw["batch"]
    scored = rescore(manifest, pd_only)
    url, _embedded = server_url()
    with fresh_database(url) as db_url, bare_server() as (echo_address, _):
        key = asyncio.run(create_tenant_key(db_url))
        company = asyncio.run(seed_score(db_url))
        quiet = {"CREDITWATCH_LOG_LEVEL": "WARNING"}
        with ServerProcess(db_url, env=quiet) as server:
            results = asyncio.run(measure(server.address, echo_address, key, company))
            first, stream_rate = asyncio.run(stream_rates(server.address, key))
        with ServerProcess(db_url, env=quiet | {"CREDITWATCH_STREAM_PROCESSES": "0"}) as server:
            _, in_process = asyncio.run(stream_rates(server.address, key))

    print_table(
        "Raw onnxruntime (one thread; batches of random rows)",
        ("measure", "PD only (baseline)", "shipped: PD + contributions"),
        [
            ("single row", f"{single * 1e6:.1f} µs", f"{raw['shipped_single'] * 1e6:.1f} µs"),
            (
                "batch of 1,000",
                f"{batch_rate:,.0f} rows/s",
                f"{raw['shipped_batch']:,.0f} rows/s",
            ),
        ],
    )
    companies = scored["companies"]
    print_table(
        f"Scorer.score_many ({RESCORE_ROWS:,} varied statements, in-process)",
        ("measure", "per second", "score_many vs it"),
        [
            ("Scorer.score_many", f"{companies:,.0f} companies", "-"),
            (
                "raw PD-only batch of 1,000",
                f"{batch_rate:,.0f} rows",
                f"{companies / batch_rate:.0%}",
            ),
            (
                f"raw PD-only, the same {RESCORE_ROWS:,} statements",
                f"{scored['same_rows']:,.0f} rows",
                f"{companies / scored['same_rows']:.0%}",
            ),
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
    print_table(
        f"StreamScores (statements in chunks of {STREAM_CHUNK:,}, one stream at a time)",
        ("measure", "rows/s", "vs raw batch", "vs raw, every core"),
        [
            (name, f"{rate:,.0f}", f"{rate / batch_rate:.0%}", f"{rate / all_cores_rate:.0%}")
            for name, rate in (
                (f"{STREAM_ROWS:,} statements, worker processes (the default)", stream_rate),
                (f"the server's first {FIRST_STREAM_ROWS:,} (starting its workers)", first),
                (
                    f"{STREAM_ROWS:,} statements, in the server process (STREAM_PROCESSES=0)",
                    in_process,
                ),
            )
        ],
    )
    print(
        f"raw batch: PD only, one onnxruntime thread as the service runs it, {batch_rate:,.0f} "
        f"rows/s; every core (onnxruntime's default threads): {all_cores_rate:,.0f} rows/s. "
        "The worker processes use every core too."
    )
    c1 = results["echo c=1"]["p50"]
    print(
        "\ngoals: ScoreCompany p50 <= 1.2x echo: "
        f"{results['ScoreCompany c=1']['p50'] / c1:.2f}x; "
        f"ScoreFinancials p50 <= 1.5x echo: {results['ScoreFinancials c=1']['p50'] / c1:.2f}x; "
        f"StreamScores >= 50 % of raw batch: {stream_rate / batch_rate:.0%}; "
        f"Scorer.score_many >= 25 % of raw batch: {companies / batch_rate:.0%}"
    )


if __name__ == "__main__":
    main()
