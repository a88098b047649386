"""An ONNX default model and its manifest: what it needs, what it returns, how it did.

A model is two files side by side: `<stem>.onnx` (input `features`, float32
[n, 64], NaN for missing; output `pd`, calibrated 12-month PD per row; and,
for models trained since reason codes come from the model's own trees, output
`contributions`, float32 [n, 65]: each feature's contribution to the
calibrated log-odds, then the base log-odds) and `<stem>.json`, the manifest
written by scripts/train_model.py. The manifest gives the feature order, the
PD bands of the risk classes, training metrics, the outputs, and per-feature
typical values (training medians) and importances.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from creditwatch.server.domain.risk_classes import PdBands
from creditwatch.server.scoring.features import FEATURE_FORMULAS


@dataclass(frozen=True)
class ModelFeature:
    """One model input: its position, short code and ratio formula."""

    index: int
    code: str
    formula: str
    baseline: float
    importance: float


@dataclass(frozen=True)
class ReliabilityBin:
    """One bin of the out-of-fold calibration table."""

    min_pd: float
    max_pd: float
    mean_predicted: float
    observed_rate: float
    count: int


@dataclass(frozen=True)
class ModelInfo:
    """What the manifest says about a model."""

    model_id: str
    version: str
    description: str
    created: datetime
    features: tuple[ModelFeature, ...]
    bands: PdBands
    auc_per_fold: tuple[float, ...]
    auc_mean: float
    brier: float
    cv_folds: int
    cv_repeats: int
    training_rows: int
    default_rate: float
    reliability: tuple[ReliabilityBin, ...]
    data_sha256: str
    input_name: str
    output_name: str
    contributions_name: str | None
    """The per-feature contributions output; None for models without one."""


def _bands(raw: dict[str, list[float]]) -> PdBands:
    return PdBands(a_below=raw["A"][1], b_below=raw["B"][1], c_below=raw["C"][1])


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _number_before(text: str, marker: str) -> int:
    match = re.search(rf"(\d+)\s*{re.escape(marker)}", text)
    return int(match[1]) if match else 0


def _number_after(text: str, marker: str) -> int:
    match = re.search(rf"{re.escape(marker)}\D*(\d+)", text)
    return int(match[1]) if match else 0


def read_manifest(path: Path) -> ModelInfo:
    """Parse a manifest; refuses one whose features differ from the service's feature code."""
    data: dict[str, Any] = json.loads(path.read_text())
    names = tuple(f["name"] for f in data["features"])
    if names != FEATURE_FORMULAS:
        raise ValueError(f"{path}: features do not match creditwatch's feature code")
    metrics = data["metrics"]
    features = tuple(
        ModelFeature(
            index=int(f["index"]),
            code=str(f["code"]),
            formula=str(f["name"]),
            baseline=float(f.get("median", float("nan"))),
            importance=float(f.get("importance", float("nan"))),
        )
        for f in data["features"]
    )
    scheme = str(metrics.get("cv_scheme", ""))
    return ModelInfo(
        model_id=str(data["model_id"]),
        version=str(data["version"]),
        description=str(data.get("description") or data.get("target", "")),
        created=_aware(datetime.fromisoformat(str(data["created"]))),
        features=features,
        bands=_bands(data["pd_bands"]),
        auc_per_fold=tuple(float(v) for v in metrics["auc_per_fold"]),
        auc_mean=float(metrics["auc_mean"]),
        brier=float(metrics["brier_oof_calibrated"]),
        cv_folds=_number_before(scheme, "-fold"),
        cv_repeats=_number_after(scheme, "repeated"),
        training_rows=int(data["training"]["rows"]),
        default_rate=float(data["training"]["default_rate"]),
        reliability=tuple(
            ReliabilityBin(
                float(b["pd_min"]),
                float(b["pd_max"]),
                float(b["mean_predicted"]),
                float(b["observed_rate"]),
                int(b["count"]),
            )
            for b in metrics["reliability"]
        ),
        data_sha256=str(data["training"]["data_sha256"]),
        input_name=str(data["input"]["name"]),
        output_name=str(data["output"]["name"]),
        contributions_name=(
            str(data["contributions"]["name"]) if "contributions" in data else None
        ),
    )


class OnnxModel:
    """A loaded model: manifest facts plus an onnxruntime session."""

    def __init__(self, manifest_path: Path, threads: int = 1) -> None:
        self.info = read_manifest(manifest_path)
        options = ort.SessionOptions()
        # Scoring runs in a worker thread beside the event loop on small
        # machines: one intra-op thread per run avoids oversubscription, and
        # batches (not threads) provide throughput.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        onnx_path = manifest_path.with_suffix(".onnx")
        self._session = ort.InferenceSession(
            str(onnx_path), options, providers=["CPUExecutionProvider"]
        )
        self._input = self.info.input_name
        self._outputs = [self.info.output_name]
        contributions = self.info.contributions_name
        if contributions is not None:
            if contributions not in {o.name for o in self._session.get_outputs()}:
                raise ValueError(f"{onnx_path}: the manifest's output {contributions!r} is missing")
            self._outputs.append(contributions)
        self.baselines = np.array([f.baseline for f in self.info.features], dtype=np.float32)

    @property
    def explains(self) -> bool:
        """Whether the model computes each feature's contribution to its PD itself."""
        return len(self._outputs) > 1

    def run(self, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Calibrated PDs for `rows` (blocking; call from a worker thread)."""
        (pd,) = self._session.run(self._outputs[:1], {self._input: rows})
        return np.asarray(pd, dtype=np.float32).reshape(-1)

    def evaluate(self, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """One output row per input row (blocking; call from a worker thread):
        column 0 the calibrated PD; when the model `explains`, then its 65
        contributions (64 features' contributions to the calibrated log-odds,
        then the base log-odds)."""
        outputs = self._session.run(self._outputs, {self._input: rows})
        return np.column_stack([np.asarray(o, dtype=np.float32) for o in outputs])
