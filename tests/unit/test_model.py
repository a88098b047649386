"""The committed PD models: ONNX file, manifest, booster and training data agree.

Every test runs for each shipped model (v1: 5year.arff alone; v2, the default:
with 1year.arff's rows too, see scripts/train_model.py)."""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightgbm as lgb  # the 'train' extra: the parity tests need the booster
import numpy as np
import onnxruntime as ort
import pytest
from scipy.io import arff
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from creditwatch.server.scoring.features import FEATURE_FORMULAS

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
STEMS = ("default-pd-v1", "default-pd-v2")
DEFAULT_STEM = "default-pd-v2"
DATA_FILE = REPO / "data" / "polish-bankruptcy" / "5year.arff"

# The bar for the default model; v1, trained on 5year.arff alone,
# reached 0.962 and is kept for rollback.
MIN_CV_AUC = {"default-pd-v1": 0.96, "default-pd-v2": 0.965}
MAX_BRIER = 0.028


@pytest.fixture(scope="module", params=STEMS)
def stem(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def manifest(stem: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((MODELS / f"{stem}.json").read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def session(stem: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(MODELS / f"{stem}.onnx"), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def training_data() -> tuple[np.ndarray, np.ndarray]:
    rows, meta = arff.loadarff(DATA_FILE)
    names = meta.names()
    x = np.array([[row[n] for n in names[:64]] for row in rows], dtype=np.float32)
    y = np.array([int(row["bankruptcy"]) for row in rows])
    return x, y


def run(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    (pd,) = session.run(["pd"], {"features": x.astype(np.float32)})
    return np.asarray(pd)


def contributions(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    (values,) = session.run(["contributions"], {"features": x.astype(np.float32)})
    return np.asarray(values, dtype=np.float64)


def test_manifest_feature_order_is_the_feature_code_order(manifest: dict[str, Any]) -> None:
    assert tuple(f["name"] for f in manifest["features"]) == FEATURE_FORMULAS
    assert [f["index"] for f in manifest["features"]] == list(range(64))


def test_onnx_signature_matches_manifest(
    manifest: dict[str, Any], session: ort.InferenceSession
) -> None:
    (model_input,) = session.get_inputs()
    model_output, model_contributions = session.get_outputs()
    assert model_input.name == manifest["input"]["name"] == "features"
    assert model_input.type == "tensor(float)"
    assert model_input.shape[1] == 64
    assert model_output.name == manifest["output"]["name"] == "pd"
    assert model_output.type == "tensor(float)"
    assert len(model_output.shape) == len(manifest["output"]["shape"]) == 1
    assert model_contributions.name == manifest["contributions"]["name"] == "contributions"
    assert model_contributions.type == "tensor(float)"
    assert model_contributions.shape[1] == manifest["contributions"]["shape"][1] == 65


def test_onnx_file_is_the_one_the_manifest_describes(manifest: dict[str, Any]) -> None:
    digest = hashlib.sha256((MODELS / manifest["files"]["onnx"]).read_bytes()).hexdigest()
    assert digest == manifest["files"]["onnx_sha256"]


def test_training_data_is_the_one_the_manifest_names(
    manifest: dict[str, Any], training_data: tuple[np.ndarray, np.ndarray]
) -> None:
    training = manifest["training"]
    assert REPO / training["data_file"] == DATA_FILE
    assert hashlib.sha256(DATA_FILE.read_bytes()).hexdigest() == training["data_sha256"]
    _, y = training_data
    assert (training["rows"], training["defaults"]) == (len(y), int(y.sum())) == (5910, 410)


def test_extra_training_data_is_what_the_manifest_names(manifest: dict[str, Any]) -> None:
    extra = manifest["training"]["extra_data"]
    if manifest["version"] == "pd-lgbm-2026.11.1":  # v1: 5year.arff alone
        assert extra == []
        return
    (one_year,) = extra
    path = REPO / one_year["data_file"]
    assert path == DATA_FILE.parent / "1year.arff"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == one_year["data_sha256"]
    rows, _ = arff.loadarff(path)
    labels = [int(row["bankruptcy"]) for row in rows]
    assert (one_year["rows"], one_year["defaults"]) == (len(labels), sum(labels)) == (7027, 271)
    assert 0 < one_year["weight"] <= 1


def test_the_newest_model_is_the_default_and_its_card_records_the_auc_target() -> None:
    # What the training script measured and wrote down (the CV itself takes
    # minutes: scripts/train_model.py), held to the bar.
    created = {
        stem: json.loads((MODELS / f"{stem}.json").read_text(encoding="utf-8"))["created"]
        for stem in STEMS
    }
    assert max(created, key=lambda stem: created[stem]) == DEFAULT_STEM
    default = json.loads((MODELS / f"{DEFAULT_STEM}.json").read_text(encoding="utf-8"))
    assert default["metrics"]["auc_mean"] >= 0.965
    assert (MODELS / default["files"]["model_card"]).is_file()


def test_pd_is_a_probability_for_data_and_edge_inputs(
    session: ort.InferenceSession, training_data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, _ = training_data
    edge = np.array(
        [np.full(64, np.nan), np.zeros(64), np.full(64, 1e30), np.full(64, -1e30)],
        dtype=np.float32,
    )
    for batch in (x, edge, x[:1]):
        pd = run(session, batch)
        assert pd.shape == (len(batch),)
        assert np.isfinite(pd).all()
        assert ((pd >= 0.0) & (pd <= 1.0)).all()


def test_pd_ranks_the_training_data(
    session: ort.InferenceSession, training_data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = training_data
    pd = run(session, x)
    # In-sample, so far above the cross-validated AUC; a broken export
    # (wrong feature order, wrong class column) lands near 0.5 or below.
    assert roc_auc_score(y, pd) > 0.98
    assert pd[y == 1].mean() > 10 * pd[y == 0].mean()


def test_bands_are_monotone_and_cover_zero_to_one(manifest: dict[str, Any]) -> None:
    bands = manifest["pd_bands"]
    assert list(bands) == ["A", "B", "C", "D"]
    edges = [bounds for bounds in bands.values()]
    assert edges[0][0] == 0.0
    assert edges[-1][1] == 1.0
    for (low, high), (next_low, _) in itertools.pairwise(edges):
        assert low < high == next_low
    rates = [manifest["metrics"]["class_default_rates"][c]["default_rate"] for c in bands]
    assert rates == sorted(rates), "a riskier class must default more often"


def test_cross_validated_metrics_meet_the_bar(manifest: dict[str, Any]) -> None:
    metrics = manifest["metrics"]
    assert len(metrics["auc_per_fold"]) == 15
    assert metrics["auc_mean"] == pytest.approx(np.mean(metrics["auc_per_fold"]), abs=1e-6)
    assert metrics["auc_mean"] >= MIN_CV_AUC[Path(manifest["files"]["onnx"]).stem]
    assert metrics["brier_oof_calibrated"] <= MAX_BRIER
    assert metrics["brier_oof_cross_fitted"] <= MAX_BRIER
    assert metrics["brier_oof_calibrated"] < metrics["brier_base_rate"]


def test_reliability_table_has_ten_bins_of_all_predictions(manifest: dict[str, Any]) -> None:
    table = manifest["metrics"]["reliability"]
    assert len(table) == 10
    assert sum(row["count"] for row in table) == 3 * manifest["training"]["rows"]
    means = [row["mean_predicted"] for row in table]
    assert means == sorted(means)


def booster_pd(manifest: dict[str, Any], x: np.ndarray) -> np.ndarray:
    booster = lgb.Booster(model_file=str(MODELS / manifest["files"]["booster"]))
    calibration = manifest["calibration"]
    raw = booster.predict(x, raw_score=True)
    result: np.ndarray = expit(calibration["a"] * raw + calibration["b"])
    return result


def test_onnx_equals_booster_with_calibration_on_all_rows(
    manifest: dict[str, Any],
    session: ort.InferenceSession,
    training_data: tuple[np.ndarray, np.ndarray],
) -> None:
    x, _ = training_data
    rows = np.concatenate([x, *(_extra_rows(e) for e in manifest["training"]["extra_data"])])
    assert len(rows) == 5910 + sum(e["rows"] for e in manifest["training"]["extra_data"])
    assert np.max(np.abs(run(session, rows) - booster_pd(manifest, rows))) <= 1e-5


def _extra_rows(extra: dict[str, Any]) -> np.ndarray:
    rows, meta = arff.loadarff(REPO / extra["data_file"])
    names = meta.names()
    return np.array([[row[n] for n in names[:64]] for row in rows], dtype=np.float32)


def test_onnx_equals_booster_when_features_are_missing(
    manifest: dict[str, Any],
    session: ort.InferenceSession,
    training_data: tuple[np.ndarray, np.ndarray],
) -> None:
    # A statement lacking items yields NaN in features that are never missing
    # in the training data; LightGBM and onnxruntime must route them alike.
    x, _ = training_data
    holes = x.copy()
    holes[np.random.default_rng(0).random(x.shape) < 0.3] = np.nan
    assert np.max(np.abs(run(session, holes) - booster_pd(manifest, holes))) <= 1e-5


# --- Contributions (reason codes) -------------------------------------------------


def _expected(node: dict[str, Any]) -> tuple[float, float]:
    """(mean leaf value of the training rows reaching `node`, their count)."""
    if "split_feature" not in node:
        return float(node["leaf_value"]), float(node.get("leaf_count", 0))
    left, n_left = _expected(node["left_child"])
    right, n_right = _expected(node["right_child"])
    node["expected"] = (left * n_left + right * n_right) / (n_left + n_right)
    node["left_child"]["expected"], node["right_child"]["expected"] = left, right
    return node["expected"], n_left + n_right


def saabas_from_dump(booster: lgb.Booster, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Saabas contributions to the raw score, straight from LightGBM's tree dump:
    every row walks every tree the way LightGBM routes it, and each split's
    change of expected value goes to the split's feature. Returns (per-feature
    contributions [n, 64], the base they start from)."""
    x = x.astype(np.float64)
    phi = np.zeros(x.shape)
    base = 0.0
    for info in booster.dump_model()["tree_info"]:
        root = info["tree_structure"]
        base += _expected(root)[0]
        stack = [(root, np.arange(len(x)))]
        while stack:
            node, rows = stack.pop()
            if "split_feature" not in node or len(rows) == 0:
                continue
            feature = node["split_feature"]
            value = x[rows, feature]
            assert node["decision_type"] == "<="
            if node["missing_type"] == "NaN":
                left = np.where(np.isnan(value), node["default_left"], value <= node["threshold"])
            else:  # LightGBM reads NaN as 0.0 when the split has no missing direction
                assert node["missing_type"] == "None"
                left = np.nan_to_num(value, nan=0.0) <= node["threshold"]
            for child, chosen in ((node["left_child"], left), (node["right_child"], ~left)):
                phi[rows[chosen], feature] += child["expected"] - node["expected"]
                stack.append((child, rows[chosen]))
    return phi, base


@pytest.fixture(scope="module")
def booster(manifest: dict[str, Any]) -> lgb.Booster:
    return lgb.Booster(model_file=str(MODELS / manifest["files"]["booster"]))


@pytest.fixture(scope="module")
def saabas(
    booster: lgb.Booster, training_data: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows: the training data, then it again with 30 % holes; their Saabas
    contributions; their raw scores), all from the booster."""
    x, _ = training_data
    holes = x.copy()
    holes[np.random.default_rng(1).random(x.shape) < 0.3] = np.nan
    rows = np.concatenate([x, holes])
    phi, base = saabas_from_dump(booster, rows)
    raw = booster.predict(rows, raw_score=True)
    # The reference itself is right: LightGBM's own raw scores are base + contributions.
    assert np.max(np.abs(phi.sum(axis=1) + base - raw)) < 1e-9
    return rows, phi, np.asarray(raw)


def test_contributions_equal_saabas_from_the_booster_dump(
    manifest: dict[str, Any],
    session: ort.InferenceSession,
    saabas: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    rows, phi, _ = saabas
    a = manifest["calibration"]["a"]
    onnx_values = contributions(session, rows)
    assert onnx_values.shape == (len(rows), 65)
    assert np.max(np.abs(onnx_values[:, :64] - a * phi)) <= 1e-5


def test_contributions_add_up_to_the_calibrated_log_odds(
    manifest: dict[str, Any],
    session: ort.InferenceSession,
    saabas: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    rows, _, raw = saabas
    calibration = manifest["calibration"]
    log_odds = calibration["a"] * raw + calibration["b"]
    assert np.max(np.abs(contributions(session, rows).sum(axis=1) - log_odds)) <= 1e-4
    pd = run(session, rows)
    assert np.max(np.abs(pd - expit(contributions(session, rows).sum(axis=1)))) <= 1e-5


def test_contribution_base_is_lightgbms_expected_value(
    manifest: dict[str, Any],
    session: ort.InferenceSession,
    booster: lgb.Booster,
    training_data: tuple[np.ndarray, np.ndarray],
) -> None:
    # The same base as LightGBM's TreeSHAP (pred_contrib's last column): the
    # training rows' mean raw score, calibrated.
    x, _ = training_data
    expected_value = booster.predict(x[:5], pred_contrib=True)[:, -1]
    calibration = manifest["calibration"]
    base = contributions(session, x[:5])[:, 64]
    np.testing.assert_allclose(
        base, calibration["a"] * expected_value + calibration["b"], atol=1e-5
    )
    assert base[0] == pytest.approx(manifest["contributions"]["base_log_odds"], abs=1e-6)


def test_strongest_contribution_is_one_treeshap_ranks_high(
    session: ort.InferenceSession,
    booster: lgb.Booster,
    training_data: tuple[np.ndarray, np.ndarray],
) -> None:
    # Saabas is not TreeSHAP (it favours splits near the root), but reason codes
    # built on it must name what TreeSHAP names: measured 96 % and 3.8 of 5.
    x, _ = training_data
    shap = np.abs(booster.predict(x, pred_contrib=True)[:, :64])
    ours = np.abs(contributions(session, x)[:, :64])
    shap_top5 = np.argsort(-shap, axis=1)[:, :5]
    our_top5 = np.argsort(-ours, axis=1)[:, :5]
    in_top3 = [our_top5[i, 0] in shap_top5[i, :3] for i in range(len(x))]
    overlap = [len(set(our_top5[i]) & set(shap_top5[i])) for i in range(len(x))]
    assert np.mean(in_top3) >= 0.9
    assert np.mean(overlap) >= 3.5


_EXPORT = """
import hashlib, json, sys
from pathlib import Path
import lightgbm as lgb
sys.path.insert(0, sys.argv[1])
import train_model
models = Path(sys.argv[2])
for recipe in train_model.RECIPES.values():
    manifest = json.loads((models / f"{recipe.stem}.json").read_text())
    booster = lgb.Booster(model_file=str(models / manifest["files"]["booster"]))
    a, b = manifest["calibration"]["a"], manifest["calibration"]["b"]
    graph = train_model.to_onnx(booster, a, b, recipe=recipe)
    print(recipe.stem, hashlib.sha256(graph.SerializeToString()).hexdigest())
"""


@pytest.mark.parametrize("hash_seed", ["0", "20"])
def test_the_training_script_exports_the_committed_graphs_byte_for_byte(hash_seed: str) -> None:
    # The booster is the trained model; the graph is derived from it. The
    # converter lists its opsets in set order, which follows the string hash
    # seed (seed 20 reversed them); the script sorts them, so every seed
    # gives the committed bytes.
    done = subprocess.run(
        [sys.executable, "-c", _EXPORT, str(REPO / "scripts"), str(MODELS)],
        env={**os.environ, "PYTHONHASHSEED": hash_seed},
        capture_output=True,
        text=True,
        check=True,
    )
    exported = dict(line.split() for line in done.stdout.splitlines())
    assert exported == {
        stem: hashlib.sha256((MODELS / f"{stem}.onnx").read_bytes()).hexdigest() for stem in STEMS
    }


def test_the_default_model_records_its_company_overlap_check(manifest: dict[str, Any]) -> None:
    check = manifest["metrics"].get("company_overlap_check")
    if not manifest["training"]["extra_data"]:
        assert check is None
        return
    assert check is not None
    assert 0.15 < check["extra_rows_left_out_share"] < 0.25  # one fold in five
    # Without the extra rows nearest the held-out companies the AUC still
    # clears the bar, and they add no more than the folds' noise.
    assert check["auc_mean_near_rows_left_out"] >= 0.965
    gain = check["auc_mean_control"] - check["auc_mean_near_rows_left_out"]
    assert check["near_rows_gain_mean"] == pytest.approx(gain, abs=1e-5)
    assert gain < 2 * check["near_rows_gain_standard_error"] + 0.001


@pytest.fixture
def train_model(monkeypatch: pytest.MonkeyPatch) -> Any:
    """scripts/train_model.py, imported as a module for this test."""
    spec = importlib.util.spec_from_file_location(
        "train_model_under_test", REPO / "scripts" / "train_model.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up
    monkeypatch.setitem(sys.modules, "train_model_under_test", module)
    spec.loader.exec_module(module)
    return module


def test_nearest_rows_finds_a_rows_copy_first(train_model: Any) -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(200, 64)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    picked = np.array([3, 150, 77])
    other = x[picked] + np.float32(1e-4)
    nearest = train_model.nearest_rows(x, other, 2)
    assert nearest.shape == (3, 2)
    assert nearest[:, 0].tolist() == picked.tolist()
    assert (nearest[:, 1] != picked).all()


class _Constant:
    """A stand-in booster: the cross-validation's bookkeeping is under test."""

    def predict(self, x: np.ndarray, raw_score: bool = False) -> np.ndarray:
        return np.nan_to_num(x[:, 0])


def test_the_overlap_check_leaves_out_near_rows_and_a_matched_control(
    monkeypatch: pytest.MonkeyPatch, train_model: Any
) -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(size=(100, 64)).astype(np.float32)
    y = (np.arange(100) % 10 == 0).astype(np.int64)
    # Extra row i is a near copy of row 2i: its nearest row is known.
    extra = train_model.Rows(x[::2] + np.float32(1e-3), np.zeros(50, np.int64), np.full(50, 0.5))
    seen: list[tuple[int, frozenset[int]]] = []

    def train(xs: np.ndarray, ys: np.ndarray, rows: object) -> _Constant:
        kept = frozenset(
            int(np.argmin(np.abs(extra.x - r).sum(axis=1)))
            for r in rows.x  # type: ignore[attr-defined]
        )
        seen.append((len(ys), kept))
        return _Constant()

    monkeypatch.setattr(train_model, "train", train)
    check = train_model.overlap_check(x, y, extra)
    folds = list(
        train_model.RepeatedStratifiedKFold(
            n_splits=5, n_repeats=3, random_state=train_model.CV_SEED
        ).split(x, y)
    )
    targeted, control = seen[:15], seen[15:]
    assert len(control) == 15
    # The control of fold k is the next fold of the same repeat, wrapping
    # round within the repeat (spelt out, not computed as the script does).
    next_fold = [1, 2, 3, 4, 0, 6, 7, 8, 9, 5, 11, 12, 13, 14, 10]
    for k, (_, test_rows) in enumerate(folds):
        held = set(test_rows.tolist())
        other = set(folds[next_fold[k]][1].tolist())
        every = frozenset(range(50))
        assert targeted[k][1] == every - {i for i in range(50) if 2 * i in held}
        assert control[k][1] == every - {i for i in range(50) if 2 * i in other}
    assert check["extra_rows_left_out_share"] == pytest.approx(0.2, abs=0.05)
