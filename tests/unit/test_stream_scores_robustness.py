"""A StreamScores stream holds the answers of the chunks in flight only, not
of every chunk it answered (each ~1 MB for 1,000 items), and an item that
fails unexpectedly gets its own status while the stream goes on."""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from creditwatch.server.api import scoring_converters as sc
from creditwatch.server.api.scoring import CHUNKS_IN_FLIGHT, ScoringServicer
from creditwatch.v1 import common_pb2, scoring_pb2
from tests.unit.test_scorer import MANIFEST, _scorer, varied_statements

pytestmark = pytest.mark.asyncio


def _finished_chunk_tasks() -> int:
    return sum(
        1
        for thing in gc.get_objects()
        if isinstance(thing, asyncio.Task)
        and thing.done()
        and "_score_chunk" in getattr(thing.get_coro(), "__qualname__", "")
    )


async def test_answered_chunks_are_not_kept_for_the_rest_of_the_stream() -> None:
    statements = varied_statements(50)
    chunk = scoring_pb2.StreamScoresRequest(
        items=[
            scoring_pb2.ScoreItem(
                correlation_id=str(i), financial_statement=sc.statement_message(s)
            )
            for i, s in enumerate(statements)
        ]
    )
    count = 40

    async def chunks() -> AsyncIterator[scoring_pb2.StreamScoresRequest]:
        for _ in range(count):
            yield chunk

    with ThreadPoolExecutor(1) as pool:
        scorer = _scorer(MANIFEST, pool)
        servicer = ScoringServicer(None, SimpleNamespace(active=scorer), None, None)  # type: ignore[arg-type]
        stream = ScoringServicer.StreamScores.__wrapped__(servicer, chunks(), uuid.uuid4())  # type: ignore[attr-defined]
        answered = 0
        held = []
        async for answer in stream:
            answered += 1
            assert scoring_pb2.StreamScoresResponse.FromString(answer).results
            if answered == count - 1:
                gc.collect()
                held.append(_finished_chunk_tasks())
    assert answered == count
    assert held[0] <= CHUNKS_IN_FLIGHT  # not one per chunk answered (39)


class _FailingIntake:
    """An intake whose company look-ups fail as given (fault injection)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def score_company(self, company: object) -> object:
        raise self.error


async def _answers(
    items: list[scoring_pb2.ScoreItem], intake: object
) -> list[scoring_pb2.StreamScoresResponse]:
    async def chunks() -> AsyncIterator[scoring_pb2.StreamScoresRequest]:
        yield scoring_pb2.StreamScoresRequest(items=items)
        yield scoring_pb2.StreamScoresRequest(items=items[:1])

    with ThreadPoolExecutor(1) as pool:
        scorer = _scorer(MANIFEST, pool)
        servicer = ScoringServicer(None, SimpleNamespace(active=scorer), intake, None)  # type: ignore[arg-type]
        stream = ScoringServicer.StreamScores.__wrapped__(servicer, chunks(), uuid.uuid4())  # type: ignore[attr-defined]
        return [scoring_pb2.StreamScoresResponse.FromString(a) async for a in stream]


@pytest.mark.parametrize(
    ("error", "code"),
    [(ConnectionResetError("the database went away"), 14), (KeyError("a bug"), 13)],
    ids=["lost connection: UNAVAILABLE", "a fault: INTERNAL"],
)
async def test_an_item_that_fails_unexpectedly_gets_its_own_status_and_the_stream_goes_on(
    error: Exception, code: int
) -> None:
    statement = sc.statement_message(varied_statements(1)[0])
    items = [
        scoring_pb2.ScoreItem(correlation_id="s1", financial_statement=statement),
        scoring_pb2.ScoreItem(
            correlation_id="c1",
            company=common_pb2.CompanyRef(country="NO", register_number="923609016"),
        ),
    ]
    first, second = await _answers(items, _FailingIntake(error))
    scored, failed = first.results
    assert scored.correlation_id == "s1" and scored.HasField("score")
    assert failed.correlation_id == "c1" and failed.error.code == code
    if code == 13:
        assert "quote reference" in failed.error.message  # finds the traceback in the log
    assert [r.correlation_id for r in second.results] == ["s1"]  # the next chunk too
