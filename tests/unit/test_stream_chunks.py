"""StreamScores' overlapping chunks: bounded, in order, and all stopped when the client leaves."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import pytest

from creditwatch.server.api import scoring_converters as sc
from creditwatch.server.api.scoring import CHUNKS_IN_FLIGHT, ScoringServicer
from creditwatch.server.domain.events import RiskState
from creditwatch.server.domain.financials import FinancialStatement
from creditwatch.server.scoring.engine import ScoreBlock, Scorer, StatementColumns
from creditwatch.v1 import scoring_pb2
from tests.unit.test_features import HEALTHY
from tests.unit.test_scorer import MANIFEST, _scorer

pytestmark = pytest.mark.asyncio


class SlowScorer:
    """The real scorer, with each chunk's scoring slowed down and counted."""

    def __init__(self, scorer: Scorer) -> None:
        self._scorer = scorer
        self.running = 0
        self.peak = 0
        self.started = 0

    async def score_columns_block(
        self, columns: StatementColumns, states: Sequence[RiskState] | None = None
    ) -> list[ScoreBlock]:
        self.running += 1
        self.started += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(0.03)
            return await self._scorer.score_columns_block(columns, states)
        finally:
            self.running -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._scorer, name)


def _chunks(count: int) -> AsyncIterator[scoring_pb2.StreamScoresRequest]:
    message = sc.statement_message(FinancialStatement(**HEALTHY))

    async def chunks() -> AsyncIterator[scoring_pb2.StreamScoresRequest]:
        for i in range(count):
            yield scoring_pb2.StreamScoresRequest(
                items=[
                    scoring_pb2.ScoreItem(correlation_id=f"{i}-{j}", financial_statement=message)
                    for j in range(5)
                ]
            )

    return chunks()


async def test_chunks_overlap_within_the_bound_and_all_stop_when_the_client_leaves() -> None:
    with ThreadPoolExecutor(1) as pool:
        slow = SlowScorer(_scorer(MANIFEST, pool))
        servicer = ScoringServicer(None, SimpleNamespace(active=slow), None, None)  # type: ignore[arg-type]
        stream = ScoringServicer.StreamScores.__wrapped__(  # type: ignore[attr-defined]
            servicer, _chunks(50), uuid.uuid4()
        )
        answers = [
            scoring_pb2.StreamScoresResponse.FromString(await anext(stream)) for _ in range(6)
        ]
        assert [a.results[0].correlation_id for a in answers] == [f"{i}-0" for i in range(6)]
        assert all(r.HasField("score") for a in answers for r in a.results)
        assert 1 < slow.peak <= CHUNKS_IN_FLIGHT  # overlapping, and bounded
        await stream.aclose()  # the client went away
        await asyncio.sleep(0.1)
        assert slow.running == 0  # nothing left scoring for nobody
        assert slow.started <= 6 + CHUNKS_IN_FLIGHT
