"""Tests of bundle.metrics and bundle.plots against hand-computed values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from bundle.metrics import (
    BRIXIA_BIN_EXPECTED_SCORES,
    PROGNOSIS_CI_METRICS,
    bootstrap_ci,
    expected_brixia_score,
    expected_calibration_error,
    prognosis_metrics,
    prognosis_report,
    severity_metrics,
    to_jsonable,
)
from bundle.plots import plot_confusion, plot_reliability, plot_roc

# Hand case: threshold 0.5 predicts [0, 1, 0, 1, 1] -> TN=1 (p=.1), FP=1 (p=.6), FN=1 (p=.4), TP=2 (p=.8, .9).
Y_HAND = np.array([0, 0, 1, 1, 1])
P_HAND = np.array([0.1, 0.6, 0.4, 0.8, 0.9])


def _synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and informative but imperfect SEVERE probabilities."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.5 + 0.25 * (2 * y - 1) + rng.normal(0, 0.25, n), 0, 1)
    return y, p


def test_prognosis_metrics_hand_case() -> None:
    m = prognosis_metrics(Y_HAND, P_HAND)
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (1, 1, 1, 2)
    assert (m["n"], m["n_positive"]) == (5, 3)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(2 / 3)  # TP / (TP + FP)
    assert m["recall"] == pytest.approx(2 / 3)  # TP / (TP + FN)
    assert m["specificity"] == pytest.approx(1 / 2)  # TN / (TN + FP)
    assert m["f1"] == pytest.approx(2 / 3)  # 2PR / (P + R)
    assert m["g_mean"] == pytest.approx(math.sqrt(2 / 3 * 1 / 2))
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    # AUC: of the 6 (MILD, SEVERE) pairs only (.6, .4) is ranked wrongly.
    assert m["roc_auc"] == pytest.approx(5 / 6)
    assert m["single_class"] is False and m["undefined"] == []


def test_auc_uses_probabilities_not_hard_labels() -> None:
    m = prognosis_metrics(Y_HAND, P_HAND)
    hard_label_auc = roc_auc_score(Y_HAND, (P_HAND >= 0.5).astype(int))
    assert hard_label_auc == pytest.approx(7 / 12)  # the public code's number: the balanced accuracy
    assert m["roc_auc"] == pytest.approx(5 / 6) != pytest.approx(hard_label_auc)


def test_threshold_is_inclusive_and_moves_the_operating_point() -> None:
    assert prognosis_metrics([0, 1], [0.5, 0.5])["tp"] == 1  # p >= threshold is SEVERE, as in roc_curve
    m = prognosis_metrics(Y_HAND, P_HAND, threshold=0.35)  # predicts [0, 1, 1, 1, 1]
    assert (m["recall"], m["specificity"], m["threshold"]) == (1.0, 0.5, 0.35)
    assert m["roc_auc"] == pytest.approx(5 / 6)  # threshold-free


@pytest.mark.parametrize("label", [0, 1])
def test_single_class_is_flagged_not_fatal(label: int) -> None:
    m = prognosis_metrics([label] * 4, [0.2, 0.4, 0.6, 0.8])
    assert m["single_class"] is True
    assert math.isnan(m["roc_auc"]) and "roc_auc" in m["undefined"]
    assert m["accuracy"] == 0.5
    missing = "specificity" if label == 1 else "recall"
    assert math.isnan(m[missing]) and missing in m["undefined"] and "g_mean" in m["undefined"]


def test_precision_undefined_without_predicted_positive() -> None:
    m = prognosis_metrics([0, 1, 1], [0.1, 0.2, 0.3])
    assert math.isnan(m["precision"]) and m["undefined"] == ["precision"]
    assert m["f1"] == 0.0  # 2TP / (2TP + FP + FN) stays defined


@pytest.mark.parametrize(
    ("y", "p"),
    [([0, 2], [0.1, 0.2]), ([0, 1], [0.1, 1.5]), ([0, 1], [0.1, np.nan]), ([0, 1], [0.1]), ([], [])],
)
def test_invalid_inputs_raise(y: list[int], p: list[float]) -> None:
    with pytest.raises(ValueError):
        prognosis_metrics(y, p)


def test_bootstrap_ci_contains_estimate_and_is_deterministic() -> None:
    y, p = _synthetic(200)
    auc = roc_auc_score(y, p)
    low, high = bootstrap_ci(roc_auc_score, y, p, n_boot=200, seed=3)
    assert low < auc < high
    assert bootstrap_ci(roc_auc_score, y, p, n_boot=200, seed=3) == (low, high)
    assert bootstrap_ci(roc_auc_score, y, p, n_boot=200, seed=4) != (low, high)


def test_bootstrap_ci_narrows_with_more_samples() -> None:
    y, p = _synthetic(100)
    low_small, high_small = bootstrap_ci(roc_auc_score, y, p, n_boot=200)
    low_large, high_large = bootstrap_ci(roc_auc_score, np.tile(y, 9), np.tile(p, 9), n_boot=200)
    assert high_large - low_large < 0.5 * (high_small - low_small)  # width ~ 1/sqrt(n): 1/3 expected


def test_bootstrap_stratification_keeps_auc_defined_on_rare_class() -> None:
    y = np.array([1] + [0] * 29)
    p = np.linspace(0.0, 1.0, 30)[::-1]

    def auc_or_nan(yy: np.ndarray, pp: np.ndarray) -> float:
        return roc_auc_score(yy, pp) if np.unique(yy).size == 2 else math.nan

    low, high = bootstrap_ci(auc_or_nan, y, p, n_boot=100)
    assert (low, high) == (pytest.approx(1.0), pytest.approx(1.0))  # every resample keeps the single SEVERE case
    assert prognosis_report(y, p, n_boot=20)["metrics"]["roc_auc"]["n_boot_used"] == 20
    low, high = bootstrap_ci(lambda yy, pp: math.nan, y, p, n_boot=10)
    assert math.isnan(low) and math.isnan(high)


def test_prognosis_report_structure_and_json() -> None:
    y, p = _synthetic(120, seed=1)
    centres = np.array(["A", "B", "C"])[np.arange(120) % 3]
    centres[:8] = "D"
    y[:8] = 1  # centre D: SEVERE only, so its AUC is undefined
    report = prognosis_report(y, p, centres=centres, n_boot=50, seed=0)
    assert set(report["metrics"]) == set(PROGNOSIS_CI_METRICS)
    for name, entry in report["metrics"].items():
        assert set(entry) == {"value", "ci_low", "ci_high", "n_boot_used"}
        assert entry["ci_low"] <= entry["value"] <= entry["ci_high"], name
        assert entry["n_boot_used"] == 50
    assert report["n"] == 120 and report["n_positive"] == int(y.sum())
    assert report["bootstrap"]["strata"] == "centre x class"
    assert list(report["per_centre"]) == ["A", "B", "C", "D"]
    assert sum(c["n"] for c in report["per_centre"].values()) == 120
    assert report["per_centre"]["D"]["roc_auc"] is None and report["per_centre"]["D"]["single_class"] is True
    assert report["per_centre"]["A"]["roc_auc"] == pytest.approx(roc_auc_score(y[centres == "A"], p[centres == "A"]))
    text = json.dumps(report, allow_nan=False)  # raises on NaN and on numpy types
    assert "NaN" not in text and json.loads(text) == report


def test_prognosis_report_single_class_gives_null_auc() -> None:
    report = prognosis_report([1, 1, 1, 1], [0.2, 0.7, 0.8, 0.9], n_boot=20)
    auc = report["metrics"]["roc_auc"]
    assert auc == {"value": None, "ci_low": None, "ci_high": None, "n_boot_used": 0}
    assert report["single_class"] is True and "roc_auc" in report["undefined"]
    assert report["per_centre"] == {} and report["bootstrap"]["strata"] == "class"
    json.dumps(report, allow_nan=False)


def test_to_jsonable_converts_numpy_and_nan() -> None:
    obj = {1: np.float32(0.5), "a": np.array([1, 2]), "b": (np.int64(3), math.nan, np.inf), "c": np.bool_(True)}
    assert to_jsonable(obj) == {"1": 0.5, "a": [1, 2], "b": [3, None, None], "c": True}


def test_expected_brixia_score() -> None:
    assert BRIXIA_BIN_EXPECTED_SCORES == (2.0, 7.0, 12.0, 16.5)
    probs = np.array([[1, 0, 0, 0], [0.25, 0.25, 0.25, 0.25], [0, 0, 0.4, 0.6]])
    np.testing.assert_allclose(expected_brixia_score(probs), [2.0, 37.5 / 4, 0.4 * 12 + 0.6 * 16.5])
    assert expected_brixia_score([0, 0, 0, 1]) == pytest.approx(16.5)
    with pytest.raises(ValueError):
        expected_brixia_score(np.ones((2, 3)) / 3)


def test_severity_metrics_hand_case() -> None:
    y = [0, 1, 2, 3]
    probs = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0.4, 0.6], [0, 0, 0, 1]])  # predicts [0, 1, 3, 3]
    m = severity_metrics(y, probs, true_global=[3, 6, 12, 17])
    assert m["accuracy"] == pytest.approx(3 / 4)
    assert m["macro_f1"] == pytest.approx((1 + 1 + 0 + 2 / 3) / 4)
    # QWK = 1 - sum w*O / sum w*E with w = (i-j)^2: observed 1 (a 2->3 error), expected 48/4 = 12.
    assert m["quadratic_kappa"] == pytest.approx(1 - 1 / 12)
    # Expected scores 2, 7, 14.7, 16.5 against 3, 6, 12, 17.
    assert m["mae_expected_score"] == pytest.approx((1 + 1 + 2.7 + 0.5) / 4)
    assert m["confusion_matrix"][2] == [0, 0, 0, 1] and m["n"] == 4 and m["undefined"] == []
    assert "mae_expected_score" not in severity_metrics(y, probs)


def test_severity_metrics_guards() -> None:
    probs = np.eye(4)
    with pytest.raises(ValueError, match="misaligned"):
        severity_metrics([0, 1, 2, 3], probs, true_global=[3, 6, 9, 17])  # 9 is class 1, not 2
    with pytest.raises(ValueError, match="softmax"):
        severity_metrics([0, 1, 2, 3], probs * 3.0)
    m = severity_metrics([2, 2], np.array([[0, 0, 1, 0], [0, 0, 1, 0]]))
    assert math.isnan(m["quadratic_kappa"]) and m["undefined"] == ["quadratic_kappa"]


def test_expected_calibration_error_hand_case() -> None:
    assert expected_calibration_error([0, 1], [0.2, 0.8]) == pytest.approx(0.2)
    assert expected_calibration_error([0, 1, 0, 1], [0.05, 0.05, 0.95, 0.95]) == pytest.approx(0.45)


def test_plots_write_png_and_leave_no_open_figure(tmp_path: Path) -> None:
    y, p = _synthetic(60)
    groups = np.where(np.arange(60) < 30, "A", "B")
    groups[:3] = "C"
    y[:3] = 0  # group C: one class, listed as undefined instead of failing
    before = plt.get_fignums()
    paths = [
        plot_roc(y, p, tmp_path / "roc.png", label="MDMT", groups=groups),
        plot_confusion(y, (p >= 0.5).astype(int), ["MILD", "SEVERE"], tmp_path / "sub" / "confusion.png"),
        plot_confusion([0, 1, 3], [0, 2, 3], ["0-4", "5-9", "10-14", "15-18"], tmp_path / "confusion4.png"),
        plot_reliability(y, p, tmp_path / "reliability.png", n_bins=5),
        plot_roc([1, 1], [0.3, 0.6], tmp_path / "roc_one_class.png"),
    ]
    for path in paths:
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
    assert plt.get_fignums() == before
