"""Evaluation figures: ROC curves, confusion matrices and reliability diagrams, written as PNG files.

Figures are built on ``matplotlib.figure.Figure`` with its Agg canvas and never registered with ``pyplot``: nothing
depends on a display or on the process-wide backend, nothing accumulates across calls (each figure is freed when
the function returns, the equivalent of ``plt.close``), and the functions are safe to call from evaluation handlers.
Numbers shown come from :mod:`bundle.metrics` and scikit-learn, so a figure always agrees with the JSON report.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from numpy.typing import ArrayLike
from sklearn.calibration import calibration_curve
from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix, roc_auc_score, roc_curve

from bundle.metrics import check_binary_inputs, expected_calibration_error

__all__ = ["add_reliability_curve", "add_roc_curve", "plot_confusion", "plot_reliability", "plot_roc"]

logger = logging.getLogger(__name__)


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write a figure as PNG, creating the parent folder.

    Args:
        fig: the figure.
        path: destination file.

    Returns:
        The destination as a ``Path``.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=120, bbox_inches="tight")
    return out


def add_roc_curve(ax: Axes, y: np.ndarray, p: np.ndarray, name: str, **style: object) -> None:
    """Draw one ROC curve with its AUC in the legend, or a legend note when it is undefined.

    Args:
        ax: matplotlib axes.
        y: labels 0/1.
        p: SEVERE probabilities.
        name: legend name.
        **style: line style passed to ``ax.plot``.
    """
    if np.unique(y).size < 2:
        ax.plot([], [], " ", label=f"{name}: AUC undefined (one class, n={y.size})")
        logger.warning("ROC curve of %r skipped: only one class among %d samples", name, y.size)
        return
    fpr, tpr, _ = roc_curve(y, p)
    ax.plot(fpr, tpr, label=f"{name} (AUC = {roc_auc_score(y, p):.3f}, n={y.size})", **style)


def add_reliability_curve(
    ax: Axes, y: np.ndarray, p: np.ndarray, name: str, n_bins: int = 10, **style: object
) -> float:
    """Draw one reliability curve (equal-width bins) and return its expected calibration error.

    Args:
        ax: matplotlib axes.
        y: labels 0/1.
        p: SEVERE probabilities.
        name: legend name.
        n_bins: number of equal-width bins on [0, 1].
        **style: line style passed to ``ax.plot``.

    Returns:
        The ECE of the curve drawn (:func:`bundle.metrics.expected_calibration_error`).
    """
    frac_positive, mean_prob = calibration_curve(y, p, n_bins=n_bins, strategy="uniform", pos_label=1)
    ax.plot(mean_prob, frac_positive, marker="o", label=name, **style)
    return expected_calibration_error(y, p, n_bins=n_bins)


def plot_roc(
    y_true: ArrayLike,
    prob: ArrayLike,
    path: str | os.PathLike[str],
    label: str = "all",
    groups: ArrayLike | None = None,
) -> Path:
    """ROC curve of the SEVERE probability, overall and optionally per group (e.g. per centre).

    A group with a single class has no ROC curve; it is named in the legend as undefined instead of failing the
    evaluation run.

    Args:
        y_true: labels, 0 = MILD, 1 = SEVERE, shape (N,).
        prob: predicted probability of SEVERE, shape (N,).
        path: PNG file to write.
        label: legend name of the overall curve.
        groups: group of each sample, shape (N,), for one extra curve per group; ``None`` for the overall curve only.

    Returns:
        The written PNG path.
    """
    y, p = check_binary_inputs(y_true, prob)
    fig = Figure(figsize=(6, 6))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="chance")
    add_roc_curve(ax, y, p, label, color="black", linewidth=2.5)
    if groups is not None:
        g = np.asarray(groups).astype(str)
        if g.shape != y.shape:
            raise ValueError(f"groups must have shape {y.shape}, got {g.shape}")
        for group in np.unique(g):
            add_roc_curve(ax, y[g == group], p[g == group], str(group), linewidth=1.2, alpha=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity (FPR)", ylabel="sensitivity (TPR)", title="ROC")
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def plot_confusion(
    y_true: ArrayLike, y_pred: ArrayLike, class_names: Sequence[str], path: str | os.PathLike[str]
) -> Path:
    """Confusion matrix as counts and row-normalised (each true class sums to 1), side by side.

    Counts show the class sizes; the row-normalised panel shows per-class recall on its diagonal, which counts
    alone hide when the classes are imbalanced. A class absent from ``y_true`` has a row of zeros there.

    Args:
        y_true: true class indices 0..len(class_names)-1, shape (N,).
        y_pred: predicted class indices, shape (N,).
        class_names: display name of each class index.
        path: PNG file to write.

    Returns:
        The written PNG path.
    """
    labels = list(range(len(class_names)))
    counts = confusion_matrix(y_true, y_pred, labels=labels)
    normalised = confusion_matrix(y_true, y_pred, labels=labels, normalize="true")
    size = 3.0 + 0.6 * len(class_names)
    fig = Figure(figsize=(2 * size + 1, size))
    ax_counts, ax_norm = fig.subplots(1, 2)
    ConfusionMatrixDisplay(counts, display_labels=list(class_names)).plot(ax=ax_counts, values_format="d", cmap="Blues")
    ConfusionMatrixDisplay(normalised, display_labels=list(class_names)).plot(
        ax=ax_norm, values_format=".2f", cmap="Blues", im_kw={"vmin": 0.0, "vmax": 1.0}
    )
    ax_counts.set_title(f"counts (n={counts.sum()})")
    ax_norm.set_title("row-normalised (recall on the diagonal)")
    fig.tight_layout()
    return _save(fig, path)


def plot_reliability(y_true: ArrayLike, prob: ArrayLike, path: str | os.PathLike[str], n_bins: int = 10) -> Path:
    """Reliability diagram of the SEVERE probability, with the expected calibration error in the title.

    The curve is ``sklearn.calibration.calibration_curve`` over equal-width bins; a histogram of the probabilities
    underneath shows how many cases support each point.

    Args:
        y_true: labels, 0 = MILD, 1 = SEVERE, shape (N,).
        prob: predicted probability of SEVERE, shape (N,).
        path: PNG file to write.
        n_bins: number of equal-width bins on [0, 1].

    Returns:
        The written PNG path.
    """
    y, p = check_binary_inputs(y_true, prob)
    fig = Figure(figsize=(6, 7))
    ax_curve, ax_hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax_curve.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
    ece = add_reliability_curve(ax_curve, y, p, "model", n_bins=n_bins, color="black")
    ax_curve.set(ylim=(0, 1), ylabel="observed fraction SEVERE", title=f"Reliability (ECE = {ece:.3f}, {n_bins} bins)")
    ax_curve.legend(loc="upper left", fontsize="small")
    ax_hist.hist(p, bins=np.linspace(0.0, 1.0, n_bins + 1), color="grey", edgecolor="black")
    ax_hist.set(xlim=(0, 1), xlabel="predicted probability of SEVERE", ylabel="cases")
    fig.tight_layout()
    return _save(fig, path)
