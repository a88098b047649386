"""StreamScores over gRPC while the server's chunk-scoring processes are killed:
every item is still answered, in order, by the server itself until a pause
has passed (tests/unit/test_stream_processes.py has the pool's restart)."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from creditwatch.client.testing import ServerProcess
from creditwatch.v1 import scoring_pb2, scoring_pb2_grpc
from tests.conftest import TenantKey
from tests.e2e.test_scoring import healthy
from tests.unit.test_stream_processes import _killed, _workers

pytestmark = pytest.mark.asyncio

CHUNKS = 40
ITEMS = 100  # above INLINE_ITEMS: scored by the worker processes


async def test_killed_workers_lose_no_answer(
    server: ServerProcess, channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    assert server.process is not None
    pid = server.process.pid
    statements = [healthy(net_profit=1_000_000 + i) for i in range(ITEMS)]

    async def requests():  # type: ignore[no-untyped-def]
        for c in range(CHUNKS):
            yield scoring_pb2.StreamScoresRequest(
                items=[
                    scoring_pb2.ScoreItem(correlation_id=f"{c}-{i}", financial_statement=s)
                    for i, s in enumerate(statements)
                ]
            )

    stub = scoring_pb2_grpc.ScoringServiceStub(channel)
    # A first stream starts the workers, which take a moment to load the
    # models (its chunks are scored by the server meanwhile).
    async for _ in stub.StreamScores(requests(), metadata=tenant.metadata):
        pass
    await asyncio.sleep(3)
    results: list[scoring_pb2.ScoreItemResult] = []
    killed: list[int] = []
    async for response in stub.StreamScores(requests(), metadata=tenant.metadata):
        results.extend(response.results)
        if not killed:
            killed = _workers(pid)  # started by the first chunk
            assert killed
            _killed(killed)
    assert [r.correlation_id for r in results] == [
        f"{c}-{i}" for c in range(CHUNKS) for i in range(ITEMS)
    ]
    assert all(r.HasField("score") for r in results)
    pds = {r.correlation_id: r.score.probability_of_default for r in results}
    for i in range(ITEMS):  # whoever scored a chunk (a worker, old or new, or the server)
        assert len({pds[f"{c}-{i}"] for c in range(CHUNKS)}) == 1
    assert not set(_workers(pid)) & set(killed)
