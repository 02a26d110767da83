"""Prognosis and severity metrics with bootstrap confidence intervals.

The MDMT paper (methods.md, section 1) reports accuracy, F1, G-mean, precision, recall and ROC AUC for the prognosis
task (MILD = 0, SEVERE = 1, positive class = SEVERE). Its public code computes the AUC from hard labels, which turns
the ROC curve into a single operating point; here the AUC is always computed from the predicted SEVERE probability.

Every metric comes from scikit-learn where scikit-learn has it. The few lines written here are the ones scikit-learn
does not offer: the G-mean (scipy's geometric mean of sklearn's per-class recalls), a *stratified* percentile
bootstrap, the expected calibration error and the expected Brixia score.

The functions are pure numpy/scikit-learn: they take arrays, never tensors or engines, so the same code serves the
evaluation handlers, the inference runner and offline analysis. Undefined values (for example the AUC of a test set
with a single class) are ``float('nan')`` in the returned dicts and are listed under ``"undefined"``;
:func:`to_jsonable` turns them into JSON ``null``.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import gmean
from sklearn.calibration import calibration_curve
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

__all__ = [
    "BRIXIA_BIN_EXPECTED_SCORES",
    "BRIXIA_GLOBAL_BINS",
    "PROGNOSIS_CI_METRICS",
    "bootstrap_ci",
    "check_binary_inputs",
    "expected_brixia_score",
    "expected_calibration_error",
    "prognosis_metrics",
    "prognosis_report",
    "severity_metrics",
    "to_jsonable",
]

logger = logging.getLogger(__name__)

#: Inclusive global Brixia score ranges (0-18) of the four severity classes used by the MDMT severity head.
BRIXIA_GLOBAL_BINS: tuple[tuple[int, int], ...] = ((0, 4), (5, 9), (10, 14), (15, 18))

#: Score standing for each severity class: the midpoint of its range, (2.0, 7.0, 12.0, 16.5).
BRIXIA_BIN_EXPECTED_SCORES: tuple[float, ...] = tuple((low + high) / 2 for low, high in BRIXIA_GLOBAL_BINS)

#: Prognosis metrics that get a bootstrap interval in :func:`prognosis_report` (the counts do not).
PROGNOSIS_CI_METRICS: tuple[str, ...] = (
    "accuracy",
    "balanced_accuracy",
    "f1",
    "g_mean",
    "precision",
    "recall",
    "specificity",
    "roc_auc",
)


def check_binary_inputs(y_true: ArrayLike, prob: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate binary labels and positive-class probabilities.

    Failing loudly here is cheaper than a silently wrong metric: a logit passed instead of a probability, or labels
    coded 1/2, would otherwise give plausible-looking numbers.

    Args:
        y_true: labels, 0 (MILD) or 1 (SEVERE), shape (N,).
        prob: predicted probability of class 1, shape (N,), each in [0, 1].

    Returns:
        ``(y_true, prob)`` as int64 and float64 1-D arrays.

    Raises:
        ValueError: empty input, shape mismatch, labels other than 0/1, or probabilities outside [0, 1] or not finite.
    """
    y = np.asarray(y_true)
    p = np.asarray(prob, dtype=np.float64)
    if y.ndim != 1 or p.ndim != 1 or y.shape != p.shape:
        raise ValueError(f"y_true and prob must be 1-D arrays of the same length, got {y.shape} and {p.shape}")
    if y.size == 0:
        raise ValueError("cannot compute metrics on an empty set")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"y_true must hold only 0 (MILD) and 1 (SEVERE), got values {np.unique(y).tolist()}")
    if not np.isfinite(p).all() or p.min() < 0.0 or p.max() > 1.0:
        raise ValueError("prob must be finite probabilities in [0, 1] (pass softmax outputs, not logits)")
    return y.astype(np.int64), p


def prognosis_metrics(y_true: ArrayLike, prob_severe: ArrayLike, threshold: float = 0.5) -> dict[str, Any]:
    """Binary prognosis metrics, positive class SEVERE.

    A case is predicted SEVERE when ``prob_severe >= threshold``: the same rule as ``sklearn.metrics.roc_curve``, so
    the reported sensitivity/specificity pair is a point of the reported ROC curve.

    G-mean: methods.md lists "G-mean (weighted)". In the binary case the support-weighted average of the per-class
    G-means (each class against the rest, as in imbalanced-learn's ``average="weighted"``) equals the plain
    ``sqrt(sensitivity * specificity)`` because both classes' one-vs-rest G-means are that same number; the plain
    form is what is computed, as the geometric mean of the two per-class recalls.

    Undefined values are NaN, never a made-up 0: precision with no predicted SEVERE case, specificity (and so
    G-mean and balanced accuracy) without MILD cases, recall without SEVERE cases, and the AUC whenever only one
    class is present. F1 stays defined (0) when there are positives but none is found, as ``2TP / (2TP + FP + FN)``.

    Args:
        y_true: true prognosis, 0 = MILD, 1 = SEVERE, shape (N,).
        prob_severe: predicted probability of SEVERE, shape (N,). The AUC is computed from it, not from hard labels.
        threshold: decision threshold on ``prob_severe`` for the label-based metrics.

    Returns:
        Dict with float metrics ``accuracy``, ``balanced_accuracy``, ``f1``, ``g_mean``, ``precision``, ``recall``
        (sensitivity), ``specificity``, ``roc_auc``; int counts ``n``, ``n_positive``, ``tn``, ``fp``, ``fn``,
        ``tp``; ``threshold``; ``single_class`` (True when ``y_true`` holds only one class, so the AUC is NaN); and
        ``undefined``, the sorted names of the metrics that are NaN.
    """
    y, p = check_binary_inputs(y_true, prob_severe)
    y_pred = (p >= threshold).astype(np.int64)
    single_class = np.unique(y).size < 2
    per_class_recall = recall_score(y, y_pred, labels=[0, 1], average=None, zero_division=np.nan)
    with warnings.catch_warnings():
        # A single-class AUC is reported through `single_class`/`undefined`, not a warning per bootstrap resample.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        auc = math.nan if single_class else float(roc_auc_score(y, p))
        balanced_accuracy = math.nan if single_class else float(balanced_accuracy_score(y, y_pred))
    tn, fp, fn, tp = confusion_matrix(y, y_pred, labels=[0, 1]).ravel()
    values = {
        "accuracy": float(accuracy_score(y, y_pred)),
        "balanced_accuracy": balanced_accuracy,
        "f1": float(f1_score(y, y_pred, pos_label=1, zero_division=np.nan)),
        "g_mean": float(gmean(per_class_recall)),
        "precision": float(precision_score(y, y_pred, pos_label=1, zero_division=np.nan)),
        "recall": float(per_class_recall[1]),
        "specificity": float(per_class_recall[0]),
        "roc_auc": auc,
    }
    counts = {"n": int(y.size), "n_positive": int(y.sum()), "tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)}
    undefined = sorted(name for name, value in values.items() if math.isnan(value))
    return {
        **values,
        **counts,
        "threshold": float(threshold),
        "single_class": bool(single_class),
        "undefined": undefined,
    }


def _stratified_resamples(strata: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Draw bootstrap index sets that keep every stratum's size.

    Args:
        strata: stratum label of each sample, shape (N,).
        n_boot: number of resamples.
        seed: seed of the numpy generator; strata are visited in sorted order, so a seed fixes the result.

    Returns:
        Indices, shape (n_boot, N): row b resamples, with replacement, each stratum to its own size.
    """
    rng = np.random.default_rng(seed)
    blocks = []
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        blocks.append(members[rng.integers(0, members.size, size=(n_boot, members.size))])
    return np.concatenate(blocks, axis=1)


def _bootstrap_statistics(
    statistic: Callable[[np.ndarray, np.ndarray], ArrayLike],
    y_true: np.ndarray,
    y_score: np.ndarray,
    n_boot: int,
    seed: int,
    strata: np.ndarray,
) -> np.ndarray:
    """Evaluate a (possibly vector-valued) statistic on stratified bootstrap resamples.

    Args:
        statistic: ``f(y_true, y_score)`` returning a float or a 1-D array of floats; NaN marks an undefined value.
        y_true: labels, shape (N,).
        y_score: scores paired with ``y_true``, shape (N,) or (N, C).
        n_boot: number of resamples.
        seed: random seed.
        strata: stratum of each sample, shape (N,).

    Returns:
        Shape (n_boot, K) float array, K the length of the statistic (1 for a scalar); NaN where undefined.
    """
    rows = [
        np.atleast_1d(np.asarray(statistic(y_true[idx], y_score[idx]), dtype=np.float64))
        for idx in _stratified_resamples(strata, n_boot, seed)
    ]
    return np.stack(rows)


def _percentile_interval(samples: np.ndarray, alpha: float) -> tuple[float, float, int]:
    """Percentile interval of the finite bootstrap values.

    Args:
        samples: bootstrap values of one statistic, shape (n_boot,), NaN for degenerate resamples.
        alpha: the interval covers ``1 - alpha``.

    Returns:
        ``(low, high, n_used)``; ``(nan, nan, 0)`` when no resample gave a finite value.
    """
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return math.nan, math.nan, 0
    low, high = np.percentile(finite, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high), int(finite.size)


def _check_bootstrap_args(n_boot: int, alpha: float) -> None:
    """Reject bootstrap settings that cannot give an interval.

    Args:
        n_boot: number of resamples, at least 1.
        alpha: miscoverage, strictly between 0 and 1.

    Raises:
        ValueError: on an invalid value.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def bootstrap_ci(
    metric_fn: Callable[[np.ndarray, np.ndarray], float],
    y_true: ArrayLike,
    y_score: ArrayLike,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    strata: ArrayLike | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of a metric, resampling within strata.

    Written here rather than with ``scipy.stats.bootstrap`` because scipy resamples the whole set: a resample may
    then lack a class, the AUC is undefined there, and scipy offers no stratification and no way to drop such
    resamples. Resampling each stratum (by default each class) to its own size keeps both classes in every resample,
    mirrors the class-stratified folds of the evaluation, and the few resamples where a metric is still undefined
    (e.g. precision with no predicted positive) are skipped; how many were used is logged.

    Args:
        metric_fn: ``f(y_true, y_score) -> float``, NaN where undefined (e.g. ``lambda y, p: roc_auc_score(y, p)``).
        y_true: labels, shape (N,).
        y_score: scores or probabilities paired with ``y_true``, shape (N,) or (N, C).
        n_boot: number of bootstrap resamples.
        alpha: the interval covers ``1 - alpha`` (0.05 gives a 95% interval).
        seed: random seed; the same seed and inputs give the same interval.
        strata: stratum of each sample, shape (N,); ``None`` stratifies by ``y_true``.

    Returns:
        ``(low, high)``; ``(nan, nan)`` when the metric is undefined on every resample.

    Raises:
        ValueError: on empty or mismatched inputs or invalid ``n_boot``/``alpha``.
    """
    _check_bootstrap_args(n_boot, alpha)
    y = np.asarray(y_true)
    s = np.asarray(y_score)
    groups = y if strata is None else np.asarray(strata)
    if y.size == 0 or y.shape[0] != s.shape[0] or groups.shape != y.shape:
        raise ValueError(f"y_true {y.shape}, y_score {s.shape} and strata {groups.shape} must be non-empty and paired")
    samples = _bootstrap_statistics(metric_fn, y, s, n_boot, seed, groups)[:, 0]
    low, high, n_used = _percentile_interval(samples, alpha)
    log = logger.warning if n_used < n_boot else logger.debug
    log("bootstrap_ci: %d of %d resamples gave a finite value", n_used, n_boot)
    return low, high


def _ci_metric_vector(y_true: np.ndarray, prob: np.ndarray, threshold: float) -> np.ndarray:
    """The :data:`PROGNOSIS_CI_METRICS` of one resample, as a vector for the bootstrap.

    Args:
        y_true: labels, shape (N,).
        prob: SEVERE probabilities, shape (N,).
        threshold: decision threshold.

    Returns:
        Float array of length ``len(PROGNOSIS_CI_METRICS)``.
    """
    metrics = prognosis_metrics(y_true, prob, threshold)
    return np.array([metrics[name] for name in PROGNOSIS_CI_METRICS], dtype=np.float64)


def prognosis_report(
    y_true: ArrayLike,
    prob_severe: ArrayLike,
    centres: ArrayLike | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    threshold: float = 0.5,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Prognosis metrics with bootstrap intervals overall, and point estimates per centre, ready for JSON.

    All interval metrics share the same resamples (one pass of :func:`prognosis_metrics` per resample). Resampling
    is stratified by class, and by class within centre when ``centres`` is given, matching the class-and-hospital
    stratified folds of the evaluation design. Per-centre entries carry no interval: a centre of a test fold can
    hold a handful of patients of one class, where a bootstrap interval is either undefined or meaningless, and the
    leave-one-centre-out protocol already evaluates each centre as a whole test set. Call :func:`bootstrap_ci` on a
    centre's subset where an interval is wanted.

    Args:
        y_true: true prognosis, 0 = MILD, 1 = SEVERE, shape (N,).
        prob_severe: predicted probability of SEVERE, shape (N,).
        centres: hospital of each sample, shape (N,), or ``None``.
        n_boot: bootstrap resamples for the overall intervals.
        seed: bootstrap seed.
        threshold: decision threshold on ``prob_severe``.
        alpha: intervals cover ``1 - alpha`` (default 95%).

    Returns:
        JSON-compatible dict (built-in types only, NaN as ``None``) with keys ``n``, ``n_positive``, ``threshold``,
        ``single_class``, ``undefined`` (as in :func:`prognosis_metrics`); ``metrics``: for each name in
        :data:`PROGNOSIS_CI_METRICS`, ``{"value", "ci_low", "ci_high", "n_boot_used"}``; ``counts``: ``tn``,
        ``fp``, ``fn``, ``tp``; ``bootstrap``: ``{"n_boot", "alpha", "seed", "method", "strata"}``; and
        ``per_centre``: ``{centre: prognosis_metrics(...)}`` sorted by centre name (empty without ``centres``).

    Raises:
        ValueError: on invalid labels, probabilities or bootstrap settings, or ``centres`` of the wrong length.
    """
    _check_bootstrap_args(n_boot, alpha)
    y, p = check_binary_inputs(y_true, prob_severe)
    overall = prognosis_metrics(y, p, threshold)
    strata = y.astype(str)
    per_centre: dict[str, dict[str, Any]] = {}
    if centres is not None:
        sites = np.asarray(centres).astype(str)
        if sites.shape != y.shape:
            raise ValueError(f"centres must have shape {y.shape}, got {sites.shape}")
        strata = np.char.add(np.char.add(sites, "|"), strata)
        per_centre = {
            site: prognosis_metrics(y[sites == site], p[sites == site], threshold) for site in np.unique(sites)
        }

    samples = _bootstrap_statistics(lambda yy, pp: _ci_metric_vector(yy, pp, threshold), y, p, n_boot, seed, strata)
    metrics = {}
    for column, name in enumerate(PROGNOSIS_CI_METRICS):
        low, high, n_used = _percentile_interval(samples[:, column], alpha)
        metrics[name] = {"value": overall[name], "ci_low": low, "ci_high": high, "n_boot_used": n_used}

    report = {
        "n": overall["n"],
        "n_positive": overall["n_positive"],
        "threshold": overall["threshold"],
        "single_class": overall["single_class"],
        "undefined": overall["undefined"],
        "metrics": metrics,
        "counts": {key: overall[key] for key in ("tn", "fp", "fn", "tp")},
        "bootstrap": {
            "n_boot": n_boot,
            "alpha": alpha,
            "seed": seed,
            "method": "percentile",
            "strata": "class" if centres is None else "centre x class",
        },
        "per_centre": per_centre,
    }
    return to_jsonable(report)


def expected_brixia_score(
    probs: ArrayLike, bin_expected_scores: Sequence[float] = BRIXIA_BIN_EXPECTED_SCORES
) -> np.ndarray:
    """Expected global Brixia score from severity-class probabilities.

    ``sum_k p_k * centre_k``, where ``centre_k`` stands for class k's score range (by default its midpoint). This
    turns the 4-class head into a continuous 0-18 estimate that can be compared with the radiologists' score.

    Args:
        probs: class probabilities, shape (..., K) with K = ``len(bin_expected_scores)``.
        bin_expected_scores: score standing for each class.

    Returns:
        Expected scores, shape ``probs.shape[:-1]``.

    Raises:
        ValueError: if the last axis of ``probs`` does not match ``bin_expected_scores``.
    """
    p = np.asarray(probs, dtype=np.float64)
    centres = np.asarray(bin_expected_scores, dtype=np.float64)
    if p.ndim == 0 or p.shape[-1] != centres.size:
        raise ValueError(f"probs must end with an axis of {centres.size} classes, got shape {p.shape}")
    return p @ centres


def severity_metrics(
    y_true_class: ArrayLike,
    probs: ArrayLike,
    bin_expected_scores: Sequence[float] = BRIXIA_BIN_EXPECTED_SCORES,
    true_global: ArrayLike | None = None,
) -> dict[str, Any]:
    """Metrics of the 4-class radiological severity head.

    The classes are ordered, so besides accuracy and macro F1 the quadratic-weighted kappa is reported: it charges a
    0-vs-3 confusion nine times a 0-vs-1 one. The predicted class is the arg-max of ``probs``. Macro F1 averages over
    the classes present in the true or predicted labels (scikit-learn's default), so a test set without a class is
    not charged a zero for it. The kappa is NaN when undefined (e.g. a single class on both sides).

    Args:
        y_true_class: true severity class 0..K-1, shape (N,).
        probs: predicted class probabilities, shape (N, K).
        bin_expected_scores: score standing for each class, for the expected score.
        true_global: true global Brixia score 0-18, shape (N,), or ``None``. It must fall in the
            :data:`BRIXIA_GLOBAL_BINS` range of ``y_true_class`` (a guard against misaligned arrays) when the default
            four classes are used.

    Returns:
        Dict with ``n``, ``accuracy``, ``macro_f1``, ``quadratic_kappa``, ``confusion_matrix`` (K x K nested list,
        rows = true class), ``undefined`` (names of NaN metrics) and, only when ``true_global`` is given,
        ``mae_expected_score``: mean absolute error of :func:`expected_brixia_score` against ``true_global``.

    Raises:
        ValueError: on mismatched shapes, classes outside 0..K-1, probabilities that are not a distribution per row,
            or a ``true_global`` that contradicts ``y_true_class``.
    """
    y = np.asarray(y_true_class)
    p = np.asarray(probs, dtype=np.float64)
    n_classes = len(bin_expected_scores)
    if y.ndim != 1 or y.size == 0 or p.shape != (y.size, n_classes):
        raise ValueError(f"need y_true_class (N,) and probs (N, {n_classes}), got {y.shape} and {p.shape}")
    if not np.isin(y, np.arange(n_classes)).all():
        raise ValueError(f"y_true_class must be in 0..{n_classes - 1}, got {np.unique(y).tolist()}")
    if not np.isfinite(p).all() or (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("probs must be non-negative rows summing to 1 (pass softmax outputs, not logits)")
    y = y.astype(np.int64)
    labels = list(range(n_classes))
    y_pred = p.argmax(axis=1)
    with warnings.catch_warnings():
        # An undefined kappa is reported as NaN and listed in `undefined`.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        kappa = float(cohen_kappa_score(y, y_pred, labels=labels, weights="quadratic", replace_undefined_by=np.nan))
    result: dict[str, Any] = {
        "n": int(y.size),
        "accuracy": float(accuracy_score(y, y_pred)),
        "macro_f1": float(f1_score(y, y_pred, average="macro", zero_division=0.0)),
        "quadratic_kappa": kappa,
        "confusion_matrix": confusion_matrix(y, y_pred, labels=labels).tolist(),
    }
    if true_global is not None:
        g = np.asarray(true_global, dtype=np.float64)
        if g.shape != y.shape:
            raise ValueError(f"true_global must have shape {y.shape}, got {g.shape}")
        if n_classes == len(BRIXIA_GLOBAL_BINS):
            lows, highs = np.array(BRIXIA_GLOBAL_BINS).T
            if ((g < lows[y]) | (g > highs[y])).any():
                raise ValueError("true_global disagrees with y_true_class under BRIXIA_GLOBAL_BINS: arrays misaligned?")
        result["mae_expected_score"] = float(np.mean(np.abs(expected_brixia_score(p, bin_expected_scores) - g)))
    result["undefined"] = sorted(k for k, v in result.items() if isinstance(v, float) and math.isnan(v))
    return result


def expected_calibration_error(y_true: ArrayLike, prob: ArrayLike, n_bins: int = 10) -> float:
    """Expected calibration error of positive-class probabilities over equal-width bins.

    scikit-learn has the reliability curve (``calibration_curve``) but no ECE. The curve is taken from it and
    weighted by bin occupancy, counted with the same binning rule, so the ECE is exactly the occupancy-weighted mean
    gap of the curve that :func:`bundle.plots.plot_reliability` draws: ``sum_b n_b / N * |frac_pos_b - mean_prob_b|``.

    Args:
        y_true: labels 0/1, shape (N,).
        prob: predicted probability of class 1, shape (N,).
        n_bins: number of equal-width bins on [0, 1].

    Returns:
        The ECE, in [0, 1].
    """
    y, p = check_binary_inputs(y_true, prob)
    frac_positive, mean_prob = calibration_curve(y, p, n_bins=n_bins, strategy="uniform", pos_label=1)
    # Same bin assignment as calibration_curve(strategy="uniform"), whose empty bins it drops.
    counts = np.bincount(np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1)[1:-1], p), minlength=n_bins)
    occupied = counts[counts > 0]
    return float(np.sum(occupied / y.size * np.abs(frac_positive - mean_prob)))


def to_jsonable(obj: Any) -> Any:
    """Convert a metrics structure to built-in JSON types.

    ``json.dumps`` writes NaN as the non-standard token ``NaN`` and rejects numpy scalars; reports must load in any
    JSON reader, so NaN and infinities become ``None``, numpy scalars and arrays become Python numbers and lists,
    and mapping keys become strings.

    Args:
        obj: nested dicts, lists, tuples, numpy arrays and scalars.

    Returns:
        The same structure made of dict, list, str, int, float, bool and None.
    """
    if isinstance(obj, Mapping):
        return {str(key): to_jsonable(value) for key, value in obj.items()}
    if isinstance(obj, np.ndarray | list | tuple):
        return [to_jsonable(item) for item in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
