"""Scoring: statement and events in, PD, risk class and reasons out.

Reason codes come from the model itself by baseline substitution: each of the
model's most important inputs is replaced by its training median and the
model is run again; the PD difference is that input's contribution. All
substituted rows of a request go through onnxruntime in the same batch as the
row itself.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from creditwatch.server.domain.currency import pln_per_unit
from creditwatch.server.domain.events import RiskState
from creditwatch.server.domain.financials import FinancialStatement
from creditwatch.server.domain.overrides import OverridePolicy
from creditwatch.server.domain.scores import Reason, ReasonKind, RiskClass, StoredScore
from creditwatch.server.scoring.batcher import MicroBatcher
from creditwatch.server.scoring.features import compute_features

if TYPE_CHECKING:
    from creditwatch.server.scoring.model import OnnxModel

MAX_MODEL_REASONS = 5
# Contributions smaller than this (absolute PD) are noise, not reasons.
MIN_CONTRIBUTION = 1e-4


def _code(formula: str) -> str:
    """A stable, readable reason code from a ratio formula."""
    text = formula.upper().replace("/", " TO ").replace("*", " TIMES ").replace("+", " PLUS ")
    text = text.replace(" - ", " MINUS ")
    return "FEATURE_" + re.sub(r"[^A-Z0-9]+", "_", text).strip("_")[:80]


@dataclass(frozen=True)
class ScoreRequest:
    """What one score is computed from."""

    statement: FinancialStatement | None
    state: RiskState


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
        if any(math.isnan(f.importance) for f in features):
            # Without importances in the manifest every input is explained.
            chosen = list(features)
        else:
            chosen = sorted(features, key=lambda f: -f.importance)[:explained_features]
        self._explained = np.array([f.index for f in chosen], dtype=np.intp)
        self._codes = [_code(f.formula) for f in model.info.features]

    @property
    def version(self) -> str:
        """The model version every score from this scorer records."""
        return self.model.info.version

    @property
    def policy(self) -> OverridePolicy:
        """The override policy applied on top of the model."""
        return self._policy

    def features(self, statement: FinancialStatement) -> npt.NDArray[np.float32]:
        """The model inputs for a statement (raises UnsupportedCurrency)."""
        return compute_features(statement, to_training_currency=pln_per_unit(statement.currency))

    def _rows(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        rows = np.repeat(x[np.newaxis, :], 1 + len(self._explained), axis=0)
        rows[np.arange(1, len(rows)), self._explained] = self.model.baselines[self._explained]
        return rows

    def _reasons(self, x: npt.NDArray[np.float32], pds: npt.NDArray[np.float32]) -> list[Reason]:
        contributions = pds[0] - pds[1:]
        order = np.argsort(-np.abs(contributions))
        reasons: list[Reason] = []
        for position in order[:MAX_MODEL_REASONS]:
            contribution = float(contributions[position])
            if abs(contribution) < MIN_CONTRIBUTION or math.isnan(contribution):
                break
            index = int(self._explained[position])
            feature = self.model.info.features[index]
            value = float(x[index])
            shown = "not reported" if math.isnan(value) else f"{value:.4g}"
            typical = "" if math.isnan(feature.baseline) else f" (typical {feature.baseline:.4g})"
            direction = "raises" if contribution > 0 else "lowers"
            reasons.append(
                Reason(
                    self._codes[index],
                    f"{feature.formula} is {shown}{typical}; {direction} the PD by "
                    f"{abs(contribution) * 100:.2f} percentage points",
                    ReasonKind.MODEL_FEATURE,
                    contribution,
                )
            )
        return reasons

    async def score(self, request: ScoreRequest) -> StoredScore | None:
        """Score one company or prospect; None when there is nothing to score
        (no statement and no event that decides the class)."""
        return (await self.score_many([request]))[0]

    async def score_many(self, requests: Sequence[ScoreRequest]) -> list[StoredScore | None]:
        """Score many at once: one model run for all their rows."""
        inputs = [self.features(r.statement) if r.statement else None for r in requests]
        blocks = [self._rows(x) for x in inputs if x is not None]
        pds = (
            await self._batcher.predict(np.concatenate(blocks) if len(blocks) > 1 else blocks[0])
            if blocks
            else np.empty(0, np.float32)
        )
        now = datetime.now(UTC)
        out: list[StoredScore | None] = []
        offset = 0
        width = 1 + len(self._explained)
        for request, x in zip(requests, inputs, strict=True):
            if x is None:
                out.append(self._events_only(request, now))
                continue
            block = pds[offset : offset + width]
            offset += width
            pd = float(block[0])
            model_class = self.model.info.bands.classify(pd)
            final, overrides = self._policy.apply(model_class, request.state)
            assert request.statement is not None
            as_of = datetime.combine(request.statement.period_end, time(), UTC)
            out.append(
                StoredScore(
                    probability_of_default=pd,
                    risk_class=final,
                    model_risk_class=model_class,
                    reasons=tuple(self._reasons(x, block) + overrides),
                    model_version=self.version,
                    data_as_of=as_of,
                    score_time=now,
                )
            )
        return out

    def _events_only(self, request: ScoreRequest, now: datetime) -> StoredScore | None:
        final, overrides = self._policy.apply(RiskClass.A, request.state)
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
