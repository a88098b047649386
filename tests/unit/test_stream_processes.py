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

from creditwatch.server.api import scoring_converters as sc
from creditwatch.server.api import stream_processes
from creditwatch.server.api.scoring import ScoringServicer
from creditwatch.server.api.stream_processes import ChunkProcesses, score_chunk
from creditwatch.server.domain.financials import FinancialStatement
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
    stream_processes._load([str(MANIFEST)])
    (version,) = stream_processes._scorers
    yield version


async def test_a_worker_answers_each_good_statement_as_the_server_does(worker: str) -> None:
    chunk = _chunk(300)
    answered = score_chunk(worker, chunk.SerializeToString())
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
    answered = score_chunk(worker, chunk.SerializeToString())
    assert answered[0] is not None and answered[3] is None
    assert score_chunk("no-such-version", chunk.SerializeToString()) == [None] * 4


def _workers(parent: int) -> list[int]:
    """The pids of `parent`'s pool workers (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [
        int(pid)
        for pid in children
        if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes() and _alive(int(pid))
    ]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _killed(pids: Sequence[int]) -> None:
    """SIGKILL `pids` and wait until they are gone (or zombies)."""
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "workers still alive"
        time.sleep(0.01)


async def test_a_dead_worker_costs_its_chunk_and_the_next_chunk_gets_new_ones() -> None:
    chunk = _chunk(100).SerializeToString()
    processes = ChunkProcesses([MANIFEST], workers=1)
    try:
        version = json.loads(MANIFEST.read_text())["version"]
        first = await processes.score(version, chunk)
        assert first is not None and None in first and any(first)
        (pid,) = _workers(os.getpid())
        _killed([pid])
        assert await processes.score(version, chunk) is None  # the server scores it
        again = await processes.score(version, chunk)
        assert again is not None
        assert [a is None for a in again] == [a is None for a in first]
        assert [_without_times(a) for a in again if a] == [_without_times(a) for a in first if a]
        assert _workers(os.getpid()) not in ([], [pid])
    finally:
        processes.close()
    deadline = time.monotonic() + 10
    while _workers(os.getpid()):  # closing stops them
        assert time.monotonic() < deadline, "workers outlive their pool"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("max 100000\n", 2), ("100000 100000\n", 1), ("150000 100000\n", 2), ("garbage", 2)],
)
async def test_the_default_worker_count_respects_a_container_cpu_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpu_max: str, expected: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1})
    limit = tmp_path / "cpu.max"
    limit.write_text(cpu_max)
    assert stream_processes.usable_cores(limit) == expected
    assert stream_processes.usable_cores(tmp_path / "absent") == 2
