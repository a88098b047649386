"""StreamScores chunks scored in worker processes: the same answers as the
server's own path, every item a worker cannot answer left to the server, and a
dead worker costing nothing but a retry in the server process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY

from creditwatch.server.api import scoring_converters as sc
from creditwatch.server.api import stream_processes
from creditwatch.server.api.scoring import ScoringServicer
from creditwatch.server.api.stream_processes import ChunkProcesses, score_chunk
from creditwatch.server.domain.financials import FinancialStatement
from creditwatch.server.domain.overrides import OverridePolicy
from creditwatch.v1 import common_pb2, companies_pb2, scoring_pb2
from tests.unit.test_features import HEALTHY
from tests.unit.test_scorer import MANIFEST, _scorer
from tests.unit.test_scoring_converters import statement_variants

pytestmark = pytest.mark.asyncio


def _chunk(count: int) -> scoring_pb2.StreamScoresRequest:
    """`count` items cycling through every kind of statement, some with events."""
    remark = companies_pb2.CompanyEvent(
        event_id="e1",
        payment_remark_registered=companies_pb2.PaymentRemarkRegistered(remark_id="r"),
    )
    remark.occurred_time.FromSeconds(1_700_000_000)
    kinds = [(s, []) for s in statement_variants()] + [
        (sc.statement_message(FinancialStatement(**HEALTHY)), [remark])
    ]
    return scoring_pb2.StreamScoresRequest(
        items=[
            scoring_pb2.ScoreItem(
                correlation_id=f"c{i}",
                financial_statement=kinds[i % len(kinds)][0],
                events=kinds[i % len(kinds)][1],
            )
            for i in range(count)
        ]
    )


def _without_times(answer: bytes) -> scoring_pb2.ScoreItemResult:
    result = scoring_pb2.ScoreItemResult.FromString(answer)
    result.score.ClearField("score_time")  # the time each was scored
    return result


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """This process set up as a worker (its models loaded); the model version."""
    monkeypatch.setattr(stream_processes, "_scorers", {})
    stream_processes._load([str(MANIFEST)], OverridePolicy())
    (version,) = stream_processes._scorers
    yield version


async def test_a_worker_answers_each_good_statement_as_the_server_does(worker: str) -> None:
    chunk = _chunk(300)
    answered = score_chunk(worker, chunk)
    with ThreadPoolExecutor(1) as pool:
        scorer = _scorer(MANIFEST, pool)
        servicer = ScoringServicer(None, SimpleNamespace(active=scorer), None, None)  # type: ignore[arg-type]
        own = scoring_pb2.StreamScoresResponse.FromString(
            await servicer._score_chunk(chunk, scorer)
        )
    plain = stream_processes.plain_statements(chunk.items)
    _, chosen, refused = sc.statement_columns(
        [chunk.items[i].financial_statement for i in plain], stream_processes.SUPPORTED_CURRENCIES
    )
    good = {plain[at] for at in chosen}
    assert refused and len(good) < len(plain) < len(chunk.items)  # every path is exercised
    assert {i for i, a in enumerate(answered) if a is not None} == good
    for i in good:
        answer = answered[i]
        assert answer is not None
        expected = own.results[i]
        expected.score.ClearField("score_time")
        assert _without_times(answer) == expected


async def test_a_worker_leaves_companies_and_unknown_versions_to_the_server(worker: str) -> None:
    company = scoring_pb2.ScoreItem(
        correlation_id="company", company=common_pb2.CompanyRef(country="NO", register_number="1")
    )
    chunk = _chunk(3)
    chunk.items.append(company)
    answered = score_chunk(worker, chunk)
    assert answered[0] is not None and answered[3] is None
    assert score_chunk("no-such-version", chunk) == [None] * 4


def _workers(parent: int) -> list[int]:
    """The pids of `parent`'s pool workers (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    workers = []
    for pid in children:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:  # gone since the list was read
            continue
        if b"spawn_main" in command and _alive(int(pid)):
            workers.append(int(pid))
    return workers


def _alive(pid: int) -> bool:
    """Whether any thread of `pid` still runs (a killed process's main thread
    is a zombie while its other threads are still being torn down)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return False
    for task in tasks:
        try:
            if (task / "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                return True
        except (FileNotFoundError, ProcessLookupError):
            continue
    return False


def _killed(pids: Sequence[int]) -> None:
    """SIGKILL `pids` and wait until they are gone (or zombies)."""
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "workers still alive"
        time.sleep(0.01)


async def _when_ready(
    processes: ChunkProcesses, version: str, chunk: scoring_pb2.StreamScoresRequest
) -> list[bytes | None]:
    """A worker's answer, once one has loaded its models (until then the
    pool leaves chunks to the server: None)."""
    deadline = time.monotonic() + 30
    while (answered := await processes.score(version, chunk)) is None:
        assert time.monotonic() < deadline, "no worker became ready"
        await asyncio.sleep(0.05)
    return answered


async def test_a_dead_worker_costs_its_chunk_and_after_a_pause_new_ones_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stream_processes, "RESTART_PAUSE_SECONDS", 1.0)
    chunk = _chunk(100)
    processes = ChunkProcesses([MANIFEST], workers=1, policy=OverridePolicy())
    try:
        version = json.loads(MANIFEST.read_text())["version"]
        assert await processes.score(version, chunk) is None  # the worker is loading
        first = await _when_ready(processes, version, chunk)
        assert None in first and any(first)
        (pid,) = _workers(os.getpid())
        _killed([pid])
        assert await processes.score(version, chunk) is None  # the server scores it
        assert await processes.score(version, chunk) is None  # and the next, for a pause
        assert _workers(os.getpid()) == []
        await asyncio.sleep(1.0)
        again = await _when_ready(processes, version, chunk)
        assert [a is None for a in again] == [a is None for a in first]
        assert [_without_times(a) for a in again if a] == [_without_times(a) for a in first if a]
        assert _workers(os.getpid()) not in ([], [pid])
    finally:
        processes.close()
    assert await processes.score(version, chunk) is None  # closed for good
    deadline = time.monotonic() + 10
    while _workers(os.getpid()):  # closing stops them
        assert time.monotonic() < deadline, "workers outlive their pool"
        await asyncio.sleep(0.05)


async def test_a_worker_killed_while_it_scores_costs_only_that_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A warm worker killed at points spread over a chunk's time (reading it,
    scoring, writing the answer): the call ends with None, or with the
    answer if it was in, and never hangs; the next chunk gets a new worker."""
    monkeypatch.setattr(stream_processes, "RESTART_PAUSE_SECONDS", 0.0)
    chunk = _chunk(1000)
    version = json.loads(MANIFEST.read_text())["version"]
    processes = ChunkProcesses([MANIFEST], workers=1, policy=OverridePolicy())
    outcomes = []
    try:
        for fraction in (0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 0.97, 1.0):
            await _when_ready(processes, version, chunk)  # a warm worker
            started = time.perf_counter()
            assert await processes.score(version, chunk) is not None
            took = time.perf_counter() - started
            call = asyncio.create_task(processes.score(version, chunk))
            await asyncio.sleep(took * fraction)
            _killed(_workers(os.getpid()))
            outcomes.append(await asyncio.wait_for(call, 20))
        assert outcomes[0] is None  # killed before it could answer
        await _when_ready(processes, version, chunk)
    finally:
        processes.close()


async def test_a_stuck_worker_is_killed_even_if_its_stream_has_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stream_processes, "RESTART_PAUSE_SECONDS", 0.0)
    monkeypatch.setattr(stream_processes, "CHUNK_TIMEOUT_SECONDS", 1.0)
    chunk = _chunk(100)
    version = json.loads(MANIFEST.read_text())["version"]
    processes = ChunkProcesses([MANIFEST], workers=1, policy=OverridePolicy())
    try:
        await _when_ready(processes, version, chunk)  # warm
        (stuck,) = _workers(os.getpid())
        os.kill(stuck, signal.SIGSTOP)
        call = asyncio.create_task(processes.score(version, chunk))
        await asyncio.sleep(0.2)
        call.cancel()  # the client gave up
        deadline = time.monotonic() + 10
        while _alive(stuck):
            assert time.monotonic() < deadline, "the stuck worker was not killed"
            await asyncio.sleep(0.05)
        await _when_ready(processes, version, chunk)  # a new worker
    finally:
        processes.close()


async def test_a_worker_leaves_a_model_whose_files_changed_to_the_server(
    tmp_path: Path,
) -> None:
    copy = tmp_path / MANIFEST.name
    copy.write_bytes(MANIFEST.read_bytes())
    copy.with_suffix(".onnx").write_bytes(MANIFEST.with_suffix(".onnx").read_bytes())
    # The server loads these files.
    processes = ChunkProcesses([copy], workers=1, policy=OverridePolicy())
    try:
        manifest = json.loads(copy.read_text())
        version = manifest["version"]
        manifest["created"] = "2099-01-01"  # replaced in place before a worker starts
        copy.write_text(json.dumps(manifest))
        assert await _when_ready(processes, version, _chunk(10)) == [None] * 10
    finally:
        processes.close()


@pytest.mark.parametrize(
    ("membership", "files", "expected"),
    [
        ("0::/\n", {}, 4),  # no quota
        ("0::/\n", {"cpu.max": "max 100000\n"}, 4),
        ("0::/\n", {"cpu.max": "200000 100000\n"}, 2),  # a container's limit
        ("0::/a/b\n", {"a/b/cpu.max": "max 100000", "a/cpu.max": "150000 100000"}, 2),
        ("0::/a\n", {"a/cpu.max": "50000 100000"}, 1),  # half a core: one
        ("0::/a\n", {"a/cpu.max": "garbage"}, 4),
        (
            "4:cpu,cpuacct:/x\n1:memory:/x\n",
            {
                "cpu,cpuacct/x/cpu.cfs_quota_us": "300000",
                "cpu,cpuacct/x/cpu.cfs_period_us": "100000",
            },
            3,
        ),
        ("4:cpu,cpuacct:/x\n", {"cpu,cpuacct/x/cpu.cfs_quota_us": "-1"}, 4),  # v1, no quota
    ],
)
async def test_the_worker_count_respects_cpu_quotas(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    membership: str,
    files: dict[str, str],
    expected: int,
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3})
    groups = tmp_path / "cgroup"
    for name, content in files.items():
        (groups / name).parent.mkdir(parents=True, exist_ok=True)
        (groups / name).write_text(content)
    (tmp_path / "membership").write_text(membership)
    assert stream_processes.usable_cores(groups, tmp_path / "membership") == expected


async def test_one_core_gets_no_worker_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_processes, "usable_cores", lambda: 1)
    assert stream_processes.default_workers() == 0
    monkeypatch.setattr(stream_processes, "usable_cores", lambda: 3)
    assert stream_processes.default_workers() == 3


async def test_a_servicer_counts_where_its_chunks_were_scored() -> None:
    def counted(where: str) -> float:
        value = REGISTRY.get_sample_value("creditwatch_stream_chunks_total", {"scored_in": where})
        return value or 0.0

    chunk = _chunk(100)
    processes = ChunkProcesses([MANIFEST], workers=1, policy=OverridePolicy())
    with ThreadPoolExecutor(1) as pool:
        scorer = _scorer(MANIFEST, pool)
        servicer = ScoringServicer(
            None,  # type: ignore[arg-type]
            SimpleNamespace(active=scorer),  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            processes,
        )
        await _when_ready(processes, scorer.version, chunk)
        before = counted("worker"), counted("server")
        by_worker = await servicer._score_chunk(chunk, scorer)
        processes.close()  # no worker left: the server scores the next one
        by_server = await servicer._score_chunk(chunk, scorer)
    assert (counted("worker") - before[0], counted("server") - before[1]) == (1, 1)
    first, second = (scoring_pb2.StreamScoresResponse.FromString(b) for b in (by_worker, by_server))
    for ours, theirs in zip(first.results, second.results, strict=True):
        ours.score.ClearField("score_time")
        theirs.score.ClearField("score_time")
    assert first == second
