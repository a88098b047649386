"""Scoring: statement and events in, PD, risk class and reasons out.

Reason codes come from the model itself, in the same onnxruntime row as the
PD: the model's `contributions` output splits the calibrated log-odds
z = logit(PD) into the base log-odds z0 (the training rows' mean score) and
each feature's share phi_i of the rest (Saabas path contributions, see
scripts/train_model.py). In PD units a feature's contribution is

    pd_contribution_i = phi_i * (PD - PD0) / (z - z0),    PD0 = sigmoid(z0),

phi_i times the slope of the calibrated sigmoid's secant from the base to the
score (its tangent PD0 * (1 - PD0) when z = z0). The 64 figures keep the signs
of the phi_i and add up to PD - PD0, how far the statement moves the PD from
the base; a score's reasons are the five largest in absolute value.

A model without that output (trained before it existed) is explained by
baseline substitution instead: each of its 16 most important inputs is
replaced by its training median and the model is run again, in the same batch
as the row itself; the PD difference is that input's contribution.

Many statements are scored together: features as numpy columns, one model
run, reasons chosen with numpy. Large batches (a stream chunk, a re-score) do
their Python work in a worker thread, off the event loop, in chunks that
overlap with the model runs of their neighbours.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import numpy.typing as npt
import orjson

from creditwatch.server.domain.currency import pln_per_unit
from creditwatch.server.domain.events import RiskState
from creditwatch.server.domain.financials import FinancialStatement
from creditwatch.server.domain.overrides import OverridePolicy
from creditwatch.server.domain.scores import (
    FeatureTexts,
    Reason,
    ReasonKind,
    RiskClass,
    StoredScore,
    reasons_as_json,
    reasons_from_json,
    register_feature_texts,
)
from creditwatch.server.scoring.batcher import MicroBatcher
from creditwatch.server.scoring.features import (
    N_FEATURES,
    compute_feature_matrix,
    compute_feature_table,
    compute_features,
)

if TYPE_CHECKING:
    from creditwatch.server.scoring.model import OnnxModel

MAX_MODEL_REASONS = 5
# Contributions smaller than this (absolute PD) are noise, not reasons.
MIN_CONTRIBUTION = 1e-4
# Batches with more statements than this compute features and reasons in a
# worker thread: a stream chunk or a re-score must not stall other calls, while
# a single score is quicker on the loop than through a thread.
INLINE_STATEMENTS = 64
# Requests per chunk of a large batch's pipeline (see Scorer._pipeline).
PIPELINE_CHUNK = 1024
# Below this many statements, numpy's cost per call (one per formula step) is
# more than the plain-float formulas statement by statement: ~230 µs against
# ~15 µs per statement.
COLUMNS_FROM = 16

Matrix = npt.NDArray[np.float64]
Features = npt.NDArray[np.float32]
Outputs = npt.NDArray[np.float32]
T = TypeVar("T")


def _code(formula: str) -> str:
    """A stable, readable reason code from a ratio formula."""
    text = formula.upper().replace("/", " TO ").replace("*", " TIMES ").replace("+", " PLUS ")
    text = text.replace(" - ", " MINUS ")
    return "FEATURE_" + re.sub(r"[^A-Z0-9]+", "_", text).strip("_")[:80]


def _text(formula: str, typical: float, *, reported: bool, raises: bool) -> str:
    """A %-template of a reason's text, for (value, PD change in percentage points)."""
    shown = "%.4g" if reported else "not reported%.0s"  # %.0s: the NaN, printed empty
    usual = "" if math.isnan(typical) else f" (typical {typical:.4g})".replace("%", "%%")
    verb = "raises" if raises else "lowers"
    return (
        f"{formula.replace('%', '%%')} is {shown}{usual}; {verb} the PD by %.2f percentage points"
    )


def _sigmoid(z: Matrix) -> Matrix:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # exact to float64, no overflow for any z


def pd_contributions(contributions: npt.NDArray[np.float32]) -> Matrix:
    """Features' contributions in PD units from the model's log-odds contributions
    (rows of 64 contributions and the base log-odds), by the secant rule above."""
    phi = contributions[:, :N_FEATURES].astype(np.float64)
    base = contributions[:, N_FEATURES].astype(np.float64)
    moved = phi.sum(axis=1)
    base_pd = _sigmoid(base)
    flat = np.abs(moved) < 1e-6  # the secant is the tangent, and 0/0 otherwise
    slope = np.where(
        flat,
        base_pd * (1.0 - base_pd),
        (_sigmoid(base + moved) - base_pd) / np.where(flat, 1.0, moved),
    )
    result: Matrix = phi * slope[:, np.newaxis]
    return result


def pd_contributions_row(outputs: list[float]) -> list[float]:
    """`pd_contributions` of one row (64 contributions and the base log-odds),
    in plain floats: a single score is quicker without a dozen numpy calls."""
    phi, base = outputs[:N_FEATURES], outputs[N_FEATURES]
    moved = sum(phi)  # not math.fsum: +inf and -inf together give NaN, as in numpy
    base_pd = 0.5 * (1.0 + math.tanh(0.5 * base))
    if abs(moved) < 1e-6:
        slope = base_pd * (1.0 - base_pd)
    else:
        slope = (0.5 * (1.0 + math.tanh(0.5 * (base + moved))) - base_pd) / moved
    return [value * slope for value in phi]


@dataclass(frozen=True)
class ScoreRequest:
    """What one score is computed from."""

    statement: FinancialStatement | None
    state: RiskState


@dataclass(frozen=True)
class StatementColumns:
    """Many statements' line items in columns, the way bulk callers hold them
    (a streamed upload, a re-score reading Postgres): no FinancialStatement
    object per statement. The statements must be valid (`validate_statement`)."""

    items: npt.NDArray[np.float64]
    """Shape (len(LINE_ITEMS), n): row i is the item LINE_ITEMS[i], NaN = missing."""
    currencies: Sequence[str]
    period_ends: Sequence[date]

    def __len__(self) -> int:
        return len(self.period_ends)


@dataclass
class ScoreRows:
    """Many scores in the form they are stored, a list per field, reasons as
    their stored JSON text (model reasons as `[feature index, value,
    contribution]`, see FeatureTexts; overrides as `reasons_as_json` objects):
    a re-score stores a million scores and shows few of them in alerts, so
    Reason objects and StoredScores are made only for those (`score`)."""

    model_version: str
    override_policy: str
    """The override policy's tag (OverridePolicy.tag)."""
    pds: list[float] = field(default_factory=list)
    risk_classes: list[int] = field(default_factory=list)
    model_risk_classes: list[int] = field(default_factory=list)
    reasons_json: list[str] = field(default_factory=list)
    data_as_of: list[datetime | None] = field(default_factory=list)
    score_times: list[datetime] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pds)

    def score(self, i: int, *, with_reasons: bool = True) -> StoredScore:
        """Row i as a StoredScore; without its reasons decoded (left empty)
        when the caller only needs the rest and has `reasons_json[i]`."""
        return StoredScore(
            self.pds[i],
            RiskClass(self.risk_classes[i]),
            RiskClass(self.model_risk_classes[i]),
            reasons_from_json(orjson.loads(self.reasons_json[i]), self.model_version)
            if with_reasons
            else (),
            self.model_version,
            self.data_as_of[i],
            self.score_times[i],
        )

    def append(self, score: StoredScore) -> None:
        """Add a score made elsewhere (by the same model version)."""
        if score.model_version != self.model_version:
            raise ValueError(f"{score.model_version} score among {self.model_version} scores")
        self.pds.append(score.probability_of_default)
        self.risk_classes.append(int(score.risk_class))
        self.model_risk_classes.append(int(score.model_risk_class))
        self.reasons_json.append(orjson.dumps(reasons_as_json(score.reasons)).decode())
        self.data_as_of.append(score.data_as_of)
        self.score_times.append(score.score_time)

    def extend(self, other: ScoreRows) -> None:
        """Add another batch's rows (of the same model version and policy)."""
        if other.model_version != self.model_version:
            raise ValueError(f"{other.model_version} scores among {self.model_version} scores")
        if other.override_policy != self.override_policy:
            raise ValueError(
                f"scores of policy {other.override_policy} among {self.override_policy}'s"
            )
        self.pds += other.pds
        self.risk_classes += other.risk_classes
        self.model_risk_classes += other.model_risk_classes
        self.reasons_json += other.reasons_json
        self.data_as_of += other.data_as_of
        self.score_times += other.score_times


@dataclass(frozen=True)
class ScoreBlock:
    """Scores of many statements in columns, each row's model reasons as
    (feature index, the input's value, contribution in PD units) in flat
    arrays, row i's at [reason_ends[i - 1], reason_ends[i]): for callers that
    write each score in their own form (stored JSON, a stream's wire bytes)
    with no StoredScore or Reason object per statement. Texts and codes of
    the reasons are the scorer's `texts`."""

    model_version: str
    pds: list[float]
    risk_classes: list[int]
    model_risk_classes: list[int]
    overrides: list[tuple[Reason, ...]]
    """Each row's override reasons (rows with the same class and risk state
    share one tuple)."""
    data_as_of: list[datetime]
    score_time: datetime
    reason_features: npt.NDArray[np.intp]
    reason_values: npt.NDArray[np.float32]
    """NaN where the input was missing; never -0.0."""
    reason_contributions: Matrix
    reason_ends: list[int]

    def __len__(self) -> int:
        return len(self.pds)


def _conversion_rates(currencies: Sequence[str]) -> npt.NDArray[np.float64]:
    """PLN per unit of each statement's currency (raises UnsupportedCurrency)."""
    known: dict[str, float] = {}
    for currency in currencies:
        if currency not in known:
            known[currency] = pln_per_unit(currency)
    return np.array([known[c] for c in currencies], dtype=np.float64)


class Scorer:
    """Runs one model with its override policy; safe to share between calls."""

    def __init__(
        self,
        model: OnnxModel,
        batcher: MicroBatcher,
        policy: OverridePolicy,
        explained_features: int = 16,
    ) -> None:
        self.model = model
        self._batcher = batcher
        self._policy = policy
        features = model.info.features
        if model.explains or any(math.isnan(f.importance) for f in features):
            # The model's own contributions cover every input; so does
            # substitution when the manifest has no importances.
            chosen = list(features)
        else:
            chosen = sorted(features, key=lambda f: -f.importance)[:explained_features]
        self._explained = np.array([f.index for f in chosen], dtype=np.intp)
        self._codes = [_code(f.formula) for f in features]
        # %-templates of reason texts, four per feature: [value missing,
        # reported] x [PD lowered, raised]; building 50,000 texts for 10,000
        # scores is a hot loop.
        self._templates = [
            _text(f.formula, f.baseline, reported=reported, raises=raises)
            for f in features
            for reported in (False, True)
            for raises in (False, True)
        ]
        self._code_array = np.array(self._codes, dtype=object)
        self._template_array = np.array(self._templates, dtype=object)
        self.texts = FeatureTexts(model.info.version, self._codes, self._templates)
        """How this scorer's model reasons are coded and worded."""
        register_feature_texts(self.texts)
        # Bulk-stored reasons are [feature index, value, contribution] (see
        # FeatureTexts); each starts with its feature's "[index,".
        self._json_heads = [f"[{index}," for index in range(len(features))]

    @property
    def version(self) -> str:
        """The model version every score from this scorer records."""
        return self.model.info.version

    @property
    def policy(self) -> OverridePolicy:
        """The override policy applied on top of the model."""
        return self._policy

    def conversion_rate(self, statement: FinancialStatement) -> float:
        """PLN per unit of the statement's currency, for the size features
        (raises UnsupportedCurrency)."""
        return pln_per_unit(statement.currency)

    def features(self, statement: FinancialStatement) -> npt.NDArray[np.float32]:
        """The model inputs for a statement (raises UnsupportedCurrency)."""
        return compute_features(statement, to_training_currency=self.conversion_rate(statement))

    def feature_matrix(self, statements: Sequence[FinancialStatement]) -> npt.NDArray[np.float32]:
        """The model inputs for many statements, one row each (raises UnsupportedCurrency)."""
        if len(statements) < COLUMNS_FROM:
            return np.array([self.features(s) for s in statements], dtype=np.float32).reshape(
                -1, N_FEATURES
            )
        rates: dict[str, float] = {}
        for statement in statements:
            if statement.currency not in rates:
                rates[statement.currency] = self.conversion_rate(statement)
        return compute_feature_matrix(
            statements, to_training_currency=[rates[s.currency] for s in statements]
        )

    async def score(self, request: ScoreRequest) -> StoredScore | None:
        """Score one company or prospect; None when there is nothing to score
        (no statement and no event that decides the class)."""
        return (await self.score_many([request]))[0]

    async def score_many(self, requests: Sequence[ScoreRequest]) -> list[StoredScore | None]:
        """Score many at once (raises UnsupportedCurrency if any statement's
        currency has no rate, before scoring any)."""
        statements = [r.statement for r in requests if r.statement is not None]
        if len(statements) <= INLINE_STATEMENTS:
            x, rows = self._inputs(self.feature_matrix(statements))
            outputs = await self._batcher.predict(rows) if statements else rows
            return self._assemble(requests, x, outputs)
        for statement in {s.currency: s for s in statements}.values():
            self.conversion_rate(statement)  # fail before any work, not after some

        def inputs(start: int, end: int) -> tuple[Features, Features]:
            chunk = requests[start:end]
            return self._inputs(self.feature_matrix([r.statement for r in chunk if r.statement]))

        def assemble(
            start: int, end: int, x: Features, outputs: Outputs
        ) -> list[StoredScore | None]:
            return self._assemble(requests[start:end], x, outputs)

        return await self._pipeline(len(requests), inputs, assemble)

    async def score_columns(
        self, columns: StatementColumns, states: Sequence[RiskState] | None = None
    ) -> list[StoredScore]:
        """Score statements given in columns, with each company's risk state
        (none: no events). Raises UnsupportedCurrency before scoring any."""
        parts = await self._in_columns(columns, states, self._assemble_rows)
        return [score for part in parts for score in part]

    async def score_columns_stored(
        self, columns: StatementColumns, states: Sequence[RiskState] | None = None
    ) -> ScoreRows:
        """`score_columns` in the form scores are stored (ScoreRows): the same
        scores, without a StoredScore or Reason object per statement."""
        rows = ScoreRows(self.version, self._policy.tag)
        for part in await self._in_columns(columns, states, self._assemble_stored):
            rows.extend(part)
        return rows

    async def score_columns_block(
        self, columns: StatementColumns, states: Sequence[RiskState] | None = None
    ) -> list[ScoreBlock]:
        """`score_columns` as ScoreBlocks (one per pipeline chunk): the same
        scores, for a caller that writes them in its own form."""
        return await self._in_columns(columns, states, self._assemble_block)

    async def _in_columns(
        self,
        columns: StatementColumns,
        states: Sequence[RiskState] | None,
        assemble: Callable[[Sequence[RiskState], Sequence[date], Features, Outputs], T],
    ) -> list[T]:
        """Statements in columns through features, the model and `assemble`,
        one result per pipeline chunk (one in all for a small batch)."""
        count = len(columns)
        if states is not None and len(states) != count:
            raise ValueError(f"{len(states)} states for {count} statements")
        rates = _conversion_rates(columns.currencies)
        clean = [RiskState()] * count if states is None else states

        def inputs(start: int, end: int) -> tuple[Features, Features]:
            table = columns.items[:, start:end]
            return self._inputs(compute_feature_table(table, to_training_currency=rates[start:end]))

        def chunk(start: int, end: int, x: Features, outputs: Outputs) -> list[T]:
            return [assemble(clean[start:end], columns.period_ends[start:end], x, outputs)]

        if count <= INLINE_STATEMENTS:
            x, run = inputs(0, count)
            return chunk(0, count, x, await self._run(run))
        return await self._pipeline(count, inputs, chunk)

    def score_columns_block_now(self, columns: StatementColumns) -> ScoreBlock:
        """`score_columns_block` of statements without events, in one run on
        the calling thread (no micro-batcher, no event loop): for a process
        of its own that scores whole chunks (api.stream_processes)."""
        rates = _conversion_rates(columns.currencies)
        x, rows = self._inputs(compute_feature_table(columns.items, to_training_currency=rates))
        outputs = self.model.evaluate(rows) if len(rows) else rows
        return self._assemble_block([RiskState()] * len(columns), columns.period_ends, x, outputs)

    def _assemble_block(
        self,
        states: Sequence[RiskState],
        period_ends: Sequence[date],
        x: npt.NDArray[np.float32],
        outputs: npt.NDArray[np.float32],
    ) -> ScoreBlock:
        """The scores of statements (row i of `x` and `outputs` is statement i) as a ScoreBlock."""
        if len(x) < COLUMNS_FROM and self.model.explains:
            # As `_assemble_rows` does for a few rows, so that every form is
            # the same to the last bit (plain-float sums are not numpy's).
            pds = outputs[:, 0].astype(np.float64)
            contributions = np.array(
                [pd_contributions_row(row[1:]) for row in outputs.tolist()], dtype=np.float64
            ).reshape(len(x), N_FEATURES)
        else:
            pds, contributions = self._contributions(x, outputs)
        indexes, values, shown, ends = self._strongest(x, contributions)
        model_classes = self.model.info.bands.classify_many(pds)
        as_of: dict[date, datetime] = {}
        policy: dict[tuple[int, RiskState], tuple[int, tuple[Reason, ...]]] = {}
        finals: list[int] = []
        overrides: list[tuple[Reason, ...]] = []
        dates: list[datetime] = []
        for model_class, state, end in zip(model_classes, states, period_ends, strict=True):
            key = (model_class, state)
            if key not in policy:
                overridden, applying = self._policy.apply(RiskClass(model_class), state)
                policy[key] = int(overridden), tuple(applying)
            final, applied = policy[key]
            finals.append(final)
            overrides.append(applied)
            if end not in as_of:
                as_of[end] = datetime.combine(end, time(), UTC)
            dates.append(as_of[end])
        return ScoreBlock(
            model_version=self.version,
            pds=pds.tolist(),
            risk_classes=finals,
            model_risk_classes=model_classes,
            overrides=overrides,
            data_as_of=dates,
            score_time=datetime.now(UTC),
            reason_features=indexes,
            reason_values=shown,
            reason_contributions=values,
            reason_ends=ends,
        )

    def _assemble_stored(
        self,
        states: Sequence[RiskState],
        period_ends: Sequence[date],
        x: npt.NDArray[np.float32],
        outputs: npt.NDArray[np.float32],
    ) -> ScoreRows:
        """`_assemble_block` as ScoreRows."""
        rows = ScoreRows(self.version, self._policy.tag)
        if not len(x):
            return rows
        block = self._assemble_block(states, period_ends, x, outputs)
        model_reasons = self._model_reasons_json(
            block.reason_features,
            block.reason_contributions,
            block.reason_values,
            block.reason_ends,
        )
        override_texts: dict[tuple[Reason, ...], str] = {}
        texts: list[str] = []
        for reasons, overrides in zip(model_reasons, block.overrides, strict=True):
            if overrides not in override_texts:
                override_texts[overrides] = orjson.dumps(reasons_as_json(overrides)).decode()[1:-1]
            override_json = override_texts[overrides]
            if override_json:
                texts.append(f"[{reasons},{override_json}]" if reasons else f"[{override_json}]")
            else:
                texts.append(f"[{reasons}]")
        rows.pds = block.pds
        rows.risk_classes = block.risk_classes
        rows.model_risk_classes = block.model_risk_classes
        rows.reasons_json = texts
        rows.data_as_of = list(block.data_as_of)
        rows.score_times = [block.score_time] * len(block)
        return rows

    async def _pipeline(
        self,
        count: int,
        inputs: Callable[[int, int], tuple[Features, Features]],
        assemble: Callable[[int, int, Features, Outputs], list[T]],
    ) -> list[T]:
        """A large batch in chunks of rows [start, end) through three stages:
        `inputs` (features, rows to run), the model, `assemble` (reasons,
        scores). The Python stages run in a worker thread, off the event loop,
        and onnxruntime (which releases the GIL) in the scoring executor, so
        one chunk's model run overlaps the next chunk's features and the
        previous chunk's reasons."""
        out: list[T] = []
        runs: list[asyncio.Task[Outputs]] = []
        previous: tuple[int, int, Features, asyncio.Task[Outputs]] | None = None
        try:
            for start in range(0, count, PIPELINE_CHUNK):
                end = min(count, start + PIPELINE_CHUNK)
                x, rows = await asyncio.to_thread(inputs, start, end)
                runs.append(asyncio.create_task(self._run(rows)))
                if previous is not None:
                    out += await self._finish(assemble, *previous)
                previous = start, end, x, runs[-1]
            if previous is not None:
                out += await self._finish(assemble, *previous)
        finally:
            for run in runs:
                run.cancel()  # a no-op for finished runs; the others lost their caller
        return out

    async def _run(self, rows: Features) -> Outputs:
        return await self._batcher.predict(rows) if len(rows) else rows

    @staticmethod
    async def _finish(
        assemble: Callable[[int, int, Features, Outputs], list[T]],
        start: int,
        end: int,
        x: Features,
        run: asyncio.Task[Outputs],
    ) -> list[T]:
        outputs = await run
        return await asyncio.to_thread(assemble, start, end, x, outputs)

    def _inputs(self, x: Features) -> tuple[Features, Features]:
        """(features, the rows to run): the features themselves, or for a model
        without contributions each row followed by its substituted copies."""
        if self.model.explains:
            return x, x
        width = 1 + len(self._explained)
        rows = np.repeat(x, width, axis=0).reshape(len(x), width, N_FEATURES)
        substituted = np.arange(1, width)
        rows[:, substituted, self._explained] = self.model.baselines[self._explained]
        return x, rows.reshape(-1, N_FEATURES)

    def _contributions(
        self, x: npt.NDArray[np.float32], outputs: npt.NDArray[np.float32]
    ) -> tuple[Matrix, Matrix]:
        """(PDs, features' contributions in PD units) from the model's outputs."""
        if self.model.explains:
            return outputs[:, 0].astype(np.float64), pd_contributions(outputs[:, 1:])
        pds = outputs[:, 0].astype(np.float64).reshape(len(x), 1 + len(self._explained))
        contributions = np.zeros((len(x), N_FEATURES))
        contributions[:, self._explained] = pds[:, :1] - pds[:, 1:]
        return pds[:, 0], contributions

    def _strongest(
        self, x: npt.NDArray[np.float32], contributions: Matrix
    ) -> tuple[npt.NDArray[np.intp], Matrix, npt.NDArray[np.float32], list[int]]:
        """Each row's strongest contributions, strongest first (ties: the lower
        feature index first), stopping below MIN_CONTRIBUTION, flattened:
        (feature indexes, contributions, the features' values, each row's end
        in the flat arrays)."""
        magnitude = np.nan_to_num(np.abs(contributions), nan=0.0)
        top = np.argsort(-magnitude, axis=1, kind="stable")[:, :MAX_MODEL_REASONS]
        values = np.take_along_axis(contributions, top, axis=1)
        # + 0: a ratio of -0.0 reads "0" in every form (JSON has no -0 float).
        shown = np.take_along_axis(x, top, axis=1) + np.float32(0)
        kept = np.cumprod(np.abs(values) >= MIN_CONTRIBUTION, axis=1, dtype=bool)
        ends: list[int] = np.cumsum(kept.sum(axis=1)).tolist()
        return top[kept], values[kept], shown[kept], ends

    def _model_reasons(
        self, x: npt.NDArray[np.float32], contributions: Matrix
    ) -> list[tuple[Reason, ...]]:
        """Each row's strongest contributions as reasons (see `_strongest`).

        Many rows are done on arrays, so that the one Python loop is over the
        reasons themselves; a few rows are quicker in plain Python than
        through dozens of numpy calls.
        """
        if len(x) < COLUMNS_FROM:
            rows = zip(x.tolist(), contributions.tolist(), strict=True)
            return [self._row_reasons(values, row) for values, row in rows]
        return self._block_reasons(*self._strongest(x, contributions))

    def _block_reasons(
        self,
        indexes: npt.NDArray[np.intp],
        values: Matrix,
        shown: npt.NDArray[np.float32],
        ends: list[int],
    ) -> list[tuple[Reason, ...]]:
        """Reasons from `_strongest`'s flat arrays, a tuple per row."""
        templates = self._template_array[indexes * 4 + ~np.isnan(shown) * 2 + (values > 0)]
        # tuple.__new__ builds the same named tuple as Reason(...), whose
        # constructor is Python code, in C: a third of this loop's time.
        kind, new = ReasonKind.MODEL_FEATURE, tuple.__new__
        reasons: list[Reason] = [
            new(Reason, (code, template % (value, points), kind, contribution))
            for code, template, value, points, contribution in zip(
                self._code_array[indexes].tolist(),
                templates.tolist(),
                shown.tolist(),
                (np.abs(values) * 100).tolist(),
                values.tolist(),
                strict=True,
            )
        ]
        return [tuple(reasons[start:end]) for start, end in zip([0, *ends[:-1]], ends, strict=True)]

    def _model_reasons_json(
        self,
        indexes: npt.NDArray[np.intp],
        values: Matrix,
        shown: npt.NDArray[np.float32],
        ends: list[int],
    ) -> list[str]:
        """Model reasons from `_strongest`'s flat arrays as the comma-separated
        JSON arrays `[feature index, value, contribution]` that bulk-written
        scores store (see FeatureTexts), a text per row; no Reason objects or
        texts on the way."""
        if not np.isfinite(values).all() or np.isinf(shown).any():
            # An infinite number has no JSON form: the full objects, where
            # it is kept in the text.
            return [
                orjson.dumps(reasons_as_json(reasons)).decode()[1:-1]
                for reasons in self._block_reasons(indexes, values, shown, ends)
            ]
        if not len(indexes):
            return [""] * len(ends)
        # Numbers are written by orjson, all of a chunk's in two calls: the
        # shortest text that reads back as the same float32 value (a missing
        # one, NaN, as null) and float64 contribution. Formatting each with
        # %-templates took three times as long.
        numpy = orjson.OPT_SERIALIZE_NUMPY
        shown_texts = orjson.dumps(shown, option=numpy).decode()[1:-1].split(",")
        value_texts = orjson.dumps(values, option=numpy).decode()[1:-1].split(",")
        heads = self._json_heads
        objects = [
            heads[index] + value + "," + contribution + "]"
            for index, value, contribution in zip(
                indexes.tolist(), shown_texts, value_texts, strict=True
            )
        ]
        join = ",".join
        return [join(objects[start:end]) for start, end in zip([0, *ends[:-1]], ends, strict=True)]

    def _row_reasons(self, x: list[float], contributions: list[float]) -> tuple[Reason, ...]:
        """`_model_reasons` of one row, in plain Python."""
        magnitude = [abs(c) if c == c else 0.0 for c in contributions]
        # sorted() is stable in reverse too: ties keep the lower index first.
        strongest = sorted(range(N_FEATURES), key=magnitude.__getitem__, reverse=True)
        reasons: list[Reason] = []
        for index in strongest[:MAX_MODEL_REASONS]:
            contribution, value = contributions[index], x[index] + 0.0  # -0.0: see _strongest
            if not abs(contribution) >= MIN_CONTRIBUTION:  # also stops at NaN
                break
            template = self._templates[index * 4 + (value == value) * 2 + (contribution > 0)]
            reasons.append(
                Reason(
                    self._codes[index],
                    template % (value, abs(contribution) * 100),
                    ReasonKind.MODEL_FEATURE,
                    contribution,
                )
            )
        return tuple(reasons)

    def _assemble(
        self,
        requests: Sequence[ScoreRequest],
        x: npt.NDArray[np.float32],
        outputs: npt.NDArray[np.float32],
    ) -> list[StoredScore | None]:
        if all(r.statement is not None for r in requests):
            ends = [r.statement.period_end for r in requests if r.statement is not None]
            return list(self._assemble_rows([r.state for r in requests], ends, x, outputs))
        scored = iter(
            self._assemble_rows(
                [r.state for r in requests if r.statement is not None],
                [r.statement.period_end for r in requests if r.statement is not None],
                x,
                outputs,
            )
        )
        now = datetime.now(UTC)
        return [
            next(scored) if r.statement is not None else self._events_only(r.state, now)
            for r in requests
        ]

    def _assemble_rows(
        self,
        states: Sequence[RiskState],
        period_ends: Sequence[date],
        x: npt.NDArray[np.float32],
        outputs: npt.NDArray[np.float32],
    ) -> list[StoredScore]:
        """Scores of statements (row i of `x` and `outputs` is statement i)."""
        if not len(x):
            return []
        if len(x) < COLUMNS_FROM and self.model.explains:
            # A few rows: plain floats (the numpy path's per-call cost is
            # most of a single score's).
            rows = outputs.tolist()
            pds_list = [row[0] for row in rows]
            model_reasons = [
                self._row_reasons(values, pd_contributions_row(row[1:]))
                for values, row in zip(x.tolist(), rows, strict=True)
            ]
        else:
            pds, contributions = self._contributions(x, outputs)
            pds_list, model_reasons = pds.tolist(), self._model_reasons(x, contributions)
        now = datetime.now(UTC)
        as_of: dict[date, datetime] = {}
        # The policy is a pure function of class and state, and most companies
        # of a batch share both (no events at all).
        policy: dict[tuple[RiskClass, RiskState], tuple[RiskClass, tuple[Reason, ...]]] = {}
        classify, version = self.model.info.bands.classify, self.version
        out: list[StoredScore] = []
        new = tuple.__new__
        for pd, reasons, state, end in zip(
            pds_list, model_reasons, states, period_ends, strict=True
        ):
            model_class = classify(pd)
            key = (model_class, state)
            if key not in policy:
                final, overrides = self._policy.apply(model_class, state)
                policy[key] = final, tuple(overrides)
            final, override_reasons = policy[key]
            if end not in as_of:
                as_of[end] = datetime.combine(end, time(), UTC)
            # StoredScore(probability_of_default, risk_class, model_risk_class,
            # reasons, model_version, data_as_of, score_time), built in C as above.
            out.append(
                new(
                    StoredScore,
                    (
                        pd,
                        final,
                        model_class,
                        reasons + override_reasons if override_reasons else reasons,
                        version,
                        as_of[end],
                        now,
                    ),
                )
            )
        return out

    def _events_only(self, state: RiskState, now: datetime) -> StoredScore | None:
        final, overrides = self._policy.apply(RiskClass.A, state)
        if final != RiskClass.D or not overrides:
            return None
        low, _ = self.model.info.bands.bounds(RiskClass.D)
        return StoredScore(
            probability_of_default=low,
            risk_class=RiskClass.D,
            model_risk_class=RiskClass.D,
            reasons=tuple(overrides),
            model_version=self.version,
            data_as_of=None,
            score_time=now,
        )
