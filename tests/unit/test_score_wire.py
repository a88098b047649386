"""Scores written straight in wire format (StreamScores) parse to the very
messages the protobuf classes build for the same scores."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from creditwatch.server.api import converters as cv
from creditwatch.server.api import score_wire
from creditwatch.server.domain.scores import (
    FeatureTexts,
    Reason,
    ReasonKind,
    RiskClass,
    StoredScore,
)
from creditwatch.server.scoring.engine import COLUMNS_FROM, PIPELINE_CHUNK, ScoreBlock, Scorer
from creditwatch.v1 import common_pb2, scoring_pb2
from tests.unit.test_scorer import columns_of, mixed_batch, pool, scorer, varied_statements

__all__ = ["pool", "scorer"]  # fixtures


@pytest.mark.parametrize("count", [1, COLUMNS_FROM - 1, COLUMNS_FROM + 3, PIPELINE_CHUNK + 7])
async def test_wire_scores_parse_to_the_messages_of_the_same_scores(
    scorer: Scorer, count: int
) -> None:
    statements, states = mixed_batch(count, seed=11)
    columns = columns_of(statements)
    expected = await scorer.score_columns(columns, states)
    blocks = await scorer.score_columns_block(columns, states)
    wire = score_wire.ScoreWire(scorer.texts)
    written = [score for block in blocks for score in wire.scores(block)]
    assert len(written) == count
    checked_overrides = checked_missing = 0
    for encoded, want, block_time in zip(
        written, expected, [b.score_time for b in blocks for _ in range(len(b))], strict=True
    ):
        got = common_pb2.Score.FromString(encoded)
        assert got == cv.score_message(want._replace(score_time=block_time), None)
        assert got.reasons, "every score here has reasons"
        checked_overrides += any(r.kind == common_pb2.REASON_KIND_OVERRIDE for r in got.reasons)
        checked_missing += any("not reported" in r.description for r in got.reasons)
    assert checked_overrides and (checked_missing or count < COLUMNS_FROM)


async def test_a_response_of_wire_results_parses_with_ids_long_and_empty(scorer: Scorer) -> None:
    statements = varied_statements(3, seed=2)
    (block,) = await scorer.score_columns_block(columns_of(statements))
    scores = score_wire.ScoreWire(scorer.texts).scores(block)
    ids = ["", "x" * 300, "ø-1"]  # no field, a two-byte length, UTF-8
    answer = scoring_pb2.StreamScoresResponse.FromString(
        score_wire.response([score_wire.result(i, s) for i, s in zip(ids, scores, strict=True)])
    )
    assert [r.correlation_id for r in answer.results] == ids
    assert [r.score for r in answer.results] == [common_pb2.Score.FromString(s) for s in scores]
    assert all(r.WhichOneof("result") == "score" for r in answer.results)


async def test_a_block_of_another_model_version_is_refused(scorer: Scorer) -> None:
    (block,) = await scorer.score_columns_block(columns_of(varied_statements(2)))
    with pytest.raises(ValueError, match="other"):
        score_wire.ScoreWire(
            FeatureTexts("other", scorer.texts.codes, scorer.texts.templates)
        ).scores(block)


def test_lengths_past_one_byte_are_varints() -> None:
    for size in (0, 127, 128, 300, 16_383, 16_384, 2**21):
        encoded = score_wire._length(size)
        value = sum((b & 0x7F) << (7 * i) for i, b in enumerate(encoded))
        assert value == size and all(b & 0x80 for b in encoded[:-1]) and encoded[-1] < 0x80


def test_rows_without_model_reasons_and_shared_times_are_written_whole(scorer: Scorer) -> None:
    """A row with overrides only, one with no reasons at all, a score made at
    the very time of its data (the two times must not be confused), and a PD
    of -0.0 (upb writes it; so must this)."""
    when = datetime(2025, 12, 31, tzinfo=UTC)
    override = Reason("OVERRIDE_BANKRUPTCY", "bankruptcy opened", ReasonKind.OVERRIDE, 0.0)
    block = ScoreBlock(
        model_version=scorer.version,
        pds=[0.4, -0.0],
        risk_classes=[4, 1],
        model_risk_classes=[3, 1],
        overrides=[(override,), ()],
        data_as_of=[when, when + timedelta(days=1)],
        score_time=when,
        reason_features=np.array([], dtype=np.intp),
        reason_values=np.array([], dtype=np.float32),
        reason_contributions=np.array([], dtype=np.float64),
        reason_ends=[0, 0],
    )
    first, second = score_wire.ScoreWire(scorer.texts).scores(block)
    expected = StoredScore(0.4, RiskClass.D, RiskClass.C, (override,), scorer.version, when, when)
    assert common_pb2.Score.FromString(first) == cv.score_message(expected, None)
    got = common_pb2.Score.FromString(second)
    assert got == cv.score_message(
        StoredScore(-0.0, RiskClass.A, RiskClass.A, (), scorer.version, when + timedelta(1), when),
        None,
    )
    assert math.copysign(1.0, got.probability_of_default) == -1.0
    assert scorer._model_reasons_json(*scorer._strongest(np.zeros((2, 64)), np.zeros((2, 64)))) == [
        "",
        "",
    ]


def test_lengths_in_bulk_are_the_varints_of_each_even_past_two_bytes() -> None:
    sizes = np.array([0, 1, 127, 128, 300, 16_383, 16_384, 2_097_151, 2_097_152])
    expected = [score_wire._varint(size) for size in sizes.tolist()]
    assert score_wire._lengths(sizes).tolist() == expected
    assert score_wire._lengths(sizes[:6]).tolist() == expected[:6]  # the table's path
    assert score_wire._varint_sizes(sizes).tolist() == [len(v) for v in expected]
