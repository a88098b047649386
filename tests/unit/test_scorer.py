"""The Scorer on the shipped model: PD, classes and reason codes, one by one and in batches."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import orjson
import pytest

from creditwatch.server.domain.currency import UnsupportedCurrency
from creditwatch.server.domain.events import RiskState
from creditwatch.server.domain.financials import LINE_ITEMS, REQUIRED_ITEMS, FinancialStatement
from creditwatch.server.domain.overrides import OverridePolicy
from creditwatch.server.domain.scores import (
    Reason,
    ReasonKind,
    RiskClass,
    StoredScore,
    reasons_as_json,
    reasons_from_json,
)
from creditwatch.server.scoring.batcher import MicroBatcher
from creditwatch.server.scoring.engine import (
    COLUMNS_FROM,
    INLINE_STATEMENTS,
    MAX_MODEL_REASONS,
    PIPELINE_CHUNK,
    Scorer,
    ScoreRequest,
    ScoreRows,
    StatementColumns,
    pd_contributions,
)
from creditwatch.server.scoring.model import OnnxModel
from creditwatch.server.store import facts
from tests.unit.test_features import HEALTHY

MODELS = Path(__file__).resolve().parents[2] / "models"
MANIFEST = MODELS / "default-pd-v2.json"  # the default model
OPTIONAL_ITEMS = [name for name in LINE_ITEMS if name not in REQUIRED_ITEMS]


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def varied_statements(count: int, seed: int = 3) -> list[FinancialStatement]:
    """Healthy to distressed manufacturers in three currencies, some items missing."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        items: dict[str, Any] = {
            name: value * rng.uniform(0.3, 3.0) if isinstance(value, float) else value
            for name, value in HEALTHY.items()
        }
        if rng.random() < 0.3:  # losses
            for name in ("net_profit", "gross_profit", "operating_profit", "ebit"):
                items[name] = -abs(items[name]) * rng.uniform(0.5, 4.0)
        for name in rng.sample(OPTIONAL_ITEMS, rng.randrange(4)):
            items[name] = None
        items["currency"] = rng.choice(["PLN", "NOK", "EUR"])
        out.append(FinancialStatement(**items))
    return out


def _scorer(manifest: Path, pool: ThreadPoolExecutor) -> Scorer:
    model = OnnxModel(manifest)
    return Scorer(model, MicroBatcher(model.evaluate, pool), OverridePolicy())


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(1) as executor:
        yield executor


@pytest.fixture(scope="module")
def scorer(pool: ThreadPoolExecutor) -> Scorer:
    return _scorer(MANIFEST, pool)


async def test_shipped_model_explains_itself(scorer: Scorer) -> None:
    assert scorer.model.explains
    outputs = scorer.model.evaluate(scorer.features(varied_statements(1)[0])[np.newaxis, :])
    assert outputs.shape == (1, 1 + 65)


@pytest.mark.parametrize(
    "count", [1, COLUMNS_FROM + 1, INLINE_STATEMENTS + 50, 2 * PIPELINE_CHUNK + 7]
)
async def test_a_batch_scores_each_request_as_if_alone(scorer: Scorer, count: int) -> None:
    statements = varied_statements(count)
    requests = [ScoreRequest(s, RiskState()) for s in statements]
    # Events-only requests sit between statements: D for a bankruptcy, None without one.
    requests[::7] = [ScoreRequest(None, RiskState(bankruptcy_opened=True))] * len(requests[::7])
    requests[3::11] = [ScoreRequest(None, RiskState())] * len(requests[3::11])
    batch = await scorer.score_many(requests)
    assert len(batch) == len(requests)
    for request, together in zip(requests, batch, strict=True):
        alone = await scorer.score(request)
        if request.statement is None and not request.state.bankruptcy_opened:
            assert together is None and alone is None
            continue
        assert together is not None and alone is not None
        assert together.probability_of_default == pytest.approx(
            alone.probability_of_default, abs=1e-7
        )
        assert (together.risk_class, together.model_risk_class) == (
            alone.risk_class,
            alone.model_risk_class,
        )
        assert [r.code for r in together.reasons] == [r.code for r in alone.reasons]
        for a, b in zip(together.reasons, alone.reasons, strict=True):
            assert a.pd_contribution == pytest.approx(b.pd_contribution, abs=1e-7)


def columns_of(statements: list[FinancialStatement]) -> StatementColumns:
    """The statements as the column form bulk callers hold."""
    items = np.array(
        [[math.nan if (v := getattr(s, n)) is None else v for s in statements] for n in LINE_ITEMS]
    )
    return StatementColumns(
        items.reshape(len(LINE_ITEMS), len(statements)),
        [s.currency for s in statements],
        [s.period_end for s in statements],
    )


@pytest.mark.parametrize("count", [1, INLINE_STATEMENTS + 50, 2 * PIPELINE_CHUNK + 7])
async def test_statements_in_columns_score_as_statement_objects_do(
    scorer: Scorer, count: int
) -> None:
    statements = varied_statements(count, seed=5)
    statements[::3] = [replace(s, currency="EUR") for s in statements[::3]]
    states = [
        RiskState(open_payment_remarks=1) if i % 5 == 0 else RiskState() for i in range(count)
    ]
    expected = await scorer.score_many(
        [ScoreRequest(s, state) for s, state in zip(statements, states, strict=True)]
    )
    got = await scorer.score_columns(columns_of(statements), states)
    assert len(got) == count
    for a, b in zip(got, expected, strict=True):
        assert b is not None
        assert a.probability_of_default == pytest.approx(b.probability_of_default, abs=1e-7)
        assert (a.risk_class, a.model_risk_class) == (b.risk_class, b.model_risk_class)
        assert [(r.code, r.description) for r in a.reasons] == [
            (r.code, r.description) for r in b.reasons
        ]
        assert a.data_as_of == b.data_as_of and a.model_version == b.model_version
    with pytest.raises(ValueError, match="states"):
        await scorer.score_columns(columns_of(statements), states[:-1])
    odd = columns_of(statements)
    with pytest.raises(UnsupportedCurrency, match="XAU"):
        await scorer.score_columns(
            StatementColumns(odd.items, [*odd.currencies[:-1], "XAU"], odd.period_ends)
        )


def mixed_batch(count: int, seed: int) -> tuple[list[FinancialStatement], list[RiskState]]:
    """Statements in two currencies with risk states of every kind: one open
    payment remark (every fifth), bankruptcy opened (some), none (the rest)."""
    statements = varied_statements(count, seed=seed)
    statements[1::4] = [replace(s, currency="EUR") for s in statements[1::4]]
    states = [
        RiskState(open_payment_remarks=1)
        if i % 5 == 0
        else RiskState(bankruptcy_opened=True)
        if i % 7 == 3
        else RiskState()
        for i in range(count)
    ]
    return statements, states


@pytest.mark.parametrize("count", [1, 7, INLINE_STATEMENTS + 50, PIPELINE_CHUNK + 7])
async def test_stored_form_is_the_same_scores_reasons_text_and_all(
    scorer: Scorer, count: int
) -> None:
    """ScoreRows (a re-score's form) hold exactly what `score_columns` gives;
    model reasons are stored as [feature index, value, contribution] and
    overrides as `reasons_as_json` objects."""
    statements, states = mixed_batch(count, seed=9)
    columns = columns_of(statements)
    expected = await scorer.score_columns(columns, states)
    rows = await scorer.score_columns_stored(columns, states)
    assert len(rows) == count and rows.model_version == scorer.version

    x = scorer.feature_matrix(statements)
    for i, want in enumerate(expected):
        got = rows.score(i)
        # Equal to the last bit, a tail chunk under COLUMNS_FROM rows included.
        assert got._replace(score_time=want.score_time) == want
        stored = orjson.loads(rows.reasons_json[i])
        model = [r for r in want.reasons if r.kind == ReasonKind.MODEL_FEATURE]
        compact = [r for r in stored if isinstance(r, list)]
        assert [(scorer._codes[j], c) for j, _, c in compact] == [
            (r.code, r.pd_contribution) for r in model
        ]
        for j, value, _ in compact:
            assert (math.isnan(x[i, j]) and value is None) or np.float32(value) == x[i, j]
        assert [r for r in stored if isinstance(r, dict)] == reasons_as_json(
            r for r in want.reasons if r.kind == ReasonKind.OVERRIDE
        )
    assert any(r.kind == ReasonKind.OVERRIDE for r in rows.score(0).reasons)
    with pytest.raises(ValueError, match="states"):
        await scorer.score_columns_stored(columns, states[:-1])


def test_stored_rows_take_scores_of_their_own_model_version_only() -> None:
    rows = ScoreRows("v2", "policy-tag")
    score = StoredScore(0.5, RiskClass.D, RiskClass.C, (), "v2", None, datetime.now(UTC))
    rows.append(score)
    assert rows.score(0) == score and rows.reasons_json == ["[]"]
    with pytest.raises(ValueError, match="v1"):
        rows.append(score._replace(model_version="v1"))


async def test_an_unsupported_currency_fails_a_large_batch_as_a_whole(scorer: Scorer) -> None:
    statements = varied_statements(PIPELINE_CHUNK + 10)
    statements[-1] = replace(statements[-1], currency="XAU")
    with pytest.raises(UnsupportedCurrency, match="XAU"):
        await scorer.score_many([ScoreRequest(s, RiskState()) for s in statements])


async def test_a_failed_model_run_fails_the_batch_and_leaves_the_scorer_working(
    pool: ThreadPoolExecutor,
) -> None:
    model = OnnxModel(MANIFEST)
    calls = []

    def flaky(rows: np.ndarray) -> np.ndarray:
        calls.append(len(rows))
        if len(calls) == 2:
            raise RuntimeError("onnxruntime fell over")
        return model.evaluate(rows)

    scorer = Scorer(model, MicroBatcher(flaky, pool), OverridePolicy())
    requests = [ScoreRequest(s, RiskState()) for s in varied_statements(3 * PIPELINE_CHUNK)]
    with pytest.raises(RuntimeError, match="fell over"):
        await scorer.score_many(requests)
    assert len(calls) <= 3  # the chunks after the failure are not run
    again = await scorer.score_many(requests[: INLINE_STATEMENTS + 1])
    assert all(score is not None for score in again)


async def test_reasons_are_the_largest_contributions_in_pd_units(scorer: Scorer) -> None:
    statements = varied_statements(40)
    scores = await scorer.score_many([ScoreRequest(s, RiskState()) for s in statements])
    for statement, score in zip(statements, scores, strict=True):
        assert score is not None
        x = scorer.features(statement)
        outputs = scorer.model.evaluate(x[np.newaxis, :])[0]
        phi, base = outputs[1:65].astype(np.float64), float(outputs[65])
        z = base + phi.sum()
        assert score.probability_of_default == pytest.approx(_sigmoid(z), abs=1e-6)
        # By hand: log-odds contributions times the sigmoid's secant slope.
        slope = (_sigmoid(z) - _sigmoid(base)) / (z - base)
        expected = phi * slope
        strongest = np.argsort(-np.abs(expected), kind="stable")[:MAX_MODEL_REASONS]
        reasons = score.reasons
        assert 1 <= len(reasons) <= MAX_MODEL_REASONS
        assert [r.pd_contribution for r in reasons] == pytest.approx(
            list(expected[strongest[: len(reasons)]]), abs=1e-9
        )
        for reason, index in zip(reasons, strongest, strict=True):
            assert reason.kind == ReasonKind.MODEL_FEATURE
            assert reason.code == scorer._codes[index]
            formula = scorer.model.info.features[index].formula
            assert reason.description.startswith(f"{formula} is ")
            verb = "raises" if reason.pd_contribution > 0 else "lowers"
            assert f"; {verb} the PD by {abs(reason.pd_contribution) * 100:.2f} " in (
                reason.description
            )
            if math.isnan(x[index]):
                assert f"{formula} is not reported" in reason.description


def test_pd_contributions_add_up_to_the_pd_move_from_the_base() -> None:
    rng = np.random.default_rng(5)
    phi = rng.normal(scale=0.8, size=(200, 64))
    phi[:2] = 0.0  # the company at the base itself
    phi[1, :2] = [0.7, -0.7]  # moves that cancel: tangent slope, no 0/0
    base = np.full(200, -3.77)
    moved = pd_contributions(np.column_stack([phi, base]).astype(np.float32))
    z = base + phi.astype(np.float32).astype(np.float64).sum(axis=1)
    np.testing.assert_allclose(
        moved.sum(axis=1), 1 / (1 + np.exp(-z)) - 1 / (1 + np.exp(3.77)), atol=1e-9
    )
    assert (np.sign(moved) == np.sign(phi)).all()  # zero stays zero
    assert moved[0].tolist() == [0.0] * 64
    tangent = _sigmoid(-3.77) * (1 - _sigmoid(-3.77))
    assert moved[1, :2] == pytest.approx([0.7 * tangent, -0.7 * tangent], rel=1e-5)


def test_few_and_many_rows_get_the_same_reasons(scorer: Scorer) -> None:
    # A few rows take a plain-Python path, many rows an array path.
    rng = np.random.default_rng(9)
    x = rng.normal(size=(COLUMNS_FROM + 4, 64)).astype(np.float32)
    x[::3, ::5] = np.nan  # not reported
    contributions = rng.normal(scale=0.01, size=x.shape)
    contributions[0, [20, 3, 9]] = 0.05  # a tie: the lower feature index first
    contributions[1] = 0.0  # nothing worth a reason
    contributions[2] = 5e-5  # below the threshold...
    contributions[2, 60:] = [0.001, -0.002, 0.0005, 1e-4]  # ...except these
    together = scorer._model_reasons(x, contributions)
    alone = [
        scorer._model_reasons(x[i : i + 1], contributions[i : i + 1])[0] for i in range(len(x))
    ]
    assert together == alone
    assert [r.code for r in together[0][:3]] == [scorer._codes[i] for i in (3, 9, 20)]
    assert together[1] == ()
    assert [r.pd_contribution for r in together[2]] == [-0.002, 0.001, 0.0005, 1e-4]
    assert all(len(reasons) == MAX_MODEL_REASONS for reasons in together[3:])
    assert any("not reported" in r.description for reasons in together for r in reasons)


async def test_overrides_follow_the_model_reasons(scorer: Scorer) -> None:
    statement = varied_statements(1)[0]
    plain = await scorer.score(ScoreRequest(statement, RiskState()))
    bankrupt = await scorer.score(ScoreRequest(statement, RiskState(bankruptcy_opened=True)))
    assert plain is not None and bankrupt is not None
    assert bankrupt.risk_class == RiskClass.D
    assert bankrupt.reasons[: len(plain.reasons)] == plain.reasons
    assert [r.code for r in bankrupt.reasons[len(plain.reasons) :]] == ["OVERRIDE_BANKRUPTCY"]


# --- A model trained before the contributions output ------------------------------


@pytest.fixture(scope="module")
def old_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped model without its contributions output, as older models are."""
    folder = tmp_path_factory.mktemp("old-model")
    model = onnx.load(str(MANIFEST.with_suffix(".onnx")))
    kept = [o for o in model.graph.output if o.name == "pd"]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    (folder / "old.onnx").write_bytes(model.SerializeToString())
    manifest = json.loads(MANIFEST.read_text())
    del manifest["contributions"]
    (folder / "old.json").write_text(json.dumps(manifest))
    return folder / "old.json"


async def test_a_model_without_contributions_is_explained_by_substitution(
    old_model: Path, pool: ThreadPoolExecutor
) -> None:
    scorer = _scorer(old_model, pool)
    assert not scorer.model.explains
    statements = varied_statements(INLINE_STATEMENTS + 10)
    scores = await scorer.score_many([ScoreRequest(s, RiskState()) for s in statements])
    for statement, score in zip(statements[:10], scores[:10], strict=True):
        assert score is not None
        x = scorer.features(statement)
        assert score.probability_of_default == pytest.approx(
            float(scorer.model.run(x[np.newaxis, :])[0]), abs=1e-7
        )
        assert score.reasons, "a reason for every score"
        for reason in score.reasons:
            index = scorer._codes.index(reason.code)
            typical = x.copy()
            typical[index] = scorer.model.baselines[index]
            pds = scorer.model.run(np.stack([x, typical]))
            assert reason.pd_contribution == pytest.approx(float(pds[0] - pds[1]), abs=1e-7)


def test_a_manifest_naming_a_missing_output_is_refused(old_model: Path) -> None:
    manifest = json.loads(old_model.read_text())
    manifest["contributions"] = {"name": "contributions"}
    broken = old_model.with_name("broken.json")
    broken.write_text(json.dumps(manifest))
    broken.with_suffix(".onnx").write_bytes(old_model.with_suffix(".onnx").read_bytes())
    with pytest.raises(ValueError, match="contributions"):
        OnnxModel(broken)


def test_varied_statements_really_vary() -> None:
    statements = varied_statements(50)
    assert len({s.currency for s in statements}) == 3
    assert any(s.inventory is None or s.cash is None for s in statements)
    assert any((s.net_profit or 0) < 0 for s in statements)


def test_the_engine_builds_scores_and_reasons_in_field_order() -> None:
    """The engine builds these named tuples positionally, in C (tuple.__new__)."""
    assert StoredScore._fields == (
        "probability_of_default",
        "risk_class",
        "model_risk_class",
        "reasons",
        "model_version",
        "data_as_of",
        "score_time",
    )
    assert Reason._fields == ("code", "description", "kind", "pd_contribution")


def test_score_text_with_stored_reasons_is_the_score_s_json() -> None:
    reasons = (
        Reason("FEATURE_X", 'x is 1.5; "raises" the PD', ReasonKind.MODEL_FEATURE, 0.012),
        Reason("OVERRIDE_PAYMENT_REMARK", "1 open remark", ReasonKind.OVERRIDE, 0.0),
    )
    stored = orjson.dumps(reasons_as_json(reasons)).decode()
    plus_two = timezone(timedelta(hours=2))
    for as_of, at in (
        (None, datetime.now(UTC)),
        (datetime(2025, 12, 31, tzinfo=UTC), datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
        (datetime(2025, 6, 30, 22, tzinfo=plus_two), datetime(2026, 1, 2, 3, 4, 5, 60, plus_two)),
    ):
        score = StoredScore(0.2, RiskClass.C, RiskClass.B, reasons, "v", as_of, at)
        # The same text, to the byte, whichever way it is made.
        assert facts.score_text(score, stored) == facts.score_text(score)
        assert orjson.loads(facts.score_text(score, stored)) == facts.score_json(score)
        assert orjson.loads(facts.score_text(score)) == facts.score_json(score)
        assert facts.score_from_json(orjson.loads(facts.score_text(score, stored))) == score


def test_stored_reasons_stay_json_when_a_contribution_is_not_finite(scorer: Scorer) -> None:
    statements = varied_statements(20, seed=3)
    x = scorer.feature_matrix(statements)
    _, contributions = scorer._contributions(x, scorer.model.evaluate(x))
    contributions[0, 5] = math.inf
    contributions[1, 7] = -math.inf
    texts = scorer._model_reasons_json(*scorer._strongest(x, contributions))
    reasons = scorer._model_reasons(x, contributions)
    for text, want in zip(texts, reasons, strict=True):
        # orjson writes a non-finite number as null, as an intake stores it.
        assert orjson.loads(f"[{text}]") == orjson.loads(orjson.dumps(reasons_as_json(want)))
    assert orjson.loads(f"[{texts[0]}]")[0]["pd_contribution"] is None


def test_stored_reasons_stay_json_when_a_shown_value_is_infinite(scorer: Scorer) -> None:
    statements = varied_statements(20, seed=3)
    x = scorer.feature_matrix(statements)
    _, contributions = scorer._contributions(x, scorer.model.evaluate(x))
    strongest = int(np.argmax(np.abs(contributions[4])))
    x[4, strongest] = np.inf  # shown in row 4's first reason
    texts = scorer._model_reasons_json(*scorer._strongest(x, contributions))
    reasons = scorer._model_reasons(x, contributions)
    assert "is inf" in reasons[4][0].description
    for text, want in zip(texts, reasons, strict=True):
        assert orjson.loads(f"[{text}]") == reasons_as_json(want)


def test_compact_reasons_read_back_with_their_model_version_s_texts(scorer: Scorer) -> None:
    statements = varied_statements(40, seed=5)
    x = scorer.feature_matrix(statements)
    _, contributions = scorer._contributions(x, scorer.model.evaluate(x))
    texts = scorer._model_reasons_json(*scorer._strongest(x, contributions))
    reasons = scorer._model_reasons(x, contributions)
    assert any(r.description.count("not reported") for row in reasons for r in row)
    for text, want in zip(texts, reasons, strict=True):
        assert reasons_from_json(orjson.loads(f"[{text}]"), scorer.version) == want
    # A model version this process has not loaded: named by input number.
    unknown = reasons_from_json(orjson.loads(f"[{texts[0]}]"), "retired-model")
    assert [r.pd_contribution for r in unknown] == [r.pd_contribution for r in reasons[0]]
    first = orjson.loads(f"[{texts[0]}]")[0]
    assert unknown[0].code == f"FEATURE_{first[0] + 1}"
    assert "input" in unknown[0].description and "retired-model" in unknown[0].description
    # Objects (an intake's form) and arrays side by side.
    mixed = [{**reasons_as_json(reasons[1])[0]}, first]
    assert reasons_from_json(mixed, scorer.version) == (reasons[1][0], reasons[0][0])


def test_a_negative_zero_ratio_reads_the_same_in_both_stored_forms(scorer: Scorer) -> None:
    """JSON has no -0.0 (orjson reads "-0" as the integer 0): a ratio of -0.0
    (0 over a negative denominator) must read "0" whichever form stored it."""
    statements = varied_statements(20, seed=3)
    x = scorer.feature_matrix(statements)
    _, contributions = scorer._contributions(x, scorer.model.evaluate(x))
    strongest = int(np.argmax(np.abs(contributions[4])))
    x[4, strongest] = -0.0
    texts = scorer._model_reasons_json(*scorer._strongest(x, contributions))
    reasons = scorer._model_reasons(x, contributions)
    assert reasons_from_json(orjson.loads(f"[{texts[4]}]"), scorer.version) == reasons[4]
    assert " is 0 " in reasons[4][0].description
    row = scorer._row_reasons(x[4].tolist(), contributions[4].tolist())
    assert row[0].description == reasons[4][0].description
