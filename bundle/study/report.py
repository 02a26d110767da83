"""The study report: ``report.md`` with the paper's table, measured beside published, the tests and the figures.

Everything comes from the files that ``scripts/study_stats.py`` writes into the study folder (``table.csv``,
``pooled_metrics.csv``, ``pooled_predictions.csv``, ``results.csv``, ``stats.json``), so the report can be rebuilt
without touching a run. The published numbers (methods.md, section 1: mean over 18 ImageNet-pretrained backbones on
the real AIforCOVID, 300 epochs at 256 px) stand beside the measured ones, which are labelled with what they were
measured on: synthetic demo data reproduces the layout of the comparison, never the paper's result.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from bundle.atomic import write_text_atomic
from bundle.metrics import check_binary_inputs
from bundle.plots import add_reliability_curve, add_roc_curve
from bundle.study.grid import PROTOCOLS, STRATEGIES
from bundle.study.results import TABLE_METRICS
from bundle.study.statistics import to_markdown

__all__ = ["PAPER", "write_report"]

#: Ruffini et al., MICCAI 2024 (methods.md, section 1): task t1, mean over 18 backbones, in percent.
#: The paper's MDMT starts from the averaged single-task backbones, so it stands beside both MDMT variants.
PAPER: dict[tuple[str, str], dict[str, float]] = {
    ("stl_prognosis", "cv"): {"accuracy": 66.0, "f1": 63.9, "g_mean": 65.9},
    ("ft", "cv"): {"accuracy": 67.3, "f1": 63.1, "g_mean": 66.9},
    ("mdmt", "cv"): {"accuracy": 68.6, "f1": 66.6, "g_mean": 68.5},
    ("mdmt_averaged", "cv"): {"accuracy": 68.6, "f1": 66.6, "g_mean": 68.5},
    ("stl_prognosis", "loco"): {"accuracy": 61.2, "f1": 57.3, "g_mean": 60.1},
    ("ft", "loco"): {"accuracy": 64.8, "f1": 58.9, "g_mean": 63.8},
    ("mdmt", "loco"): {"accuracy": 65.7, "f1": 64.3, "g_mean": 66.0},
    ("mdmt_averaged", "loco"): {"accuracy": 65.7, "f1": 64.3, "g_mean": 66.0},
}
_PAPER_METRICS = ("accuracy", "f1", "g_mean")
_LABELS = {"accuracy": "ACC", "f1": "F1", "g_mean": "G-mean", "roc_auc": "AUC"}
_BOXPLOTS, _CURVES, _CENTRES = "study_boxplots.png", "study_roc_reliability.png", "study_loco_centres.png"


def _ordered(values: Sequence[str], order: Sequence[str]) -> list[str]:
    """``values`` in ``order`` first, anything else after, sorted."""
    present = set(values)
    return [v for v in order if v in present] + sorted(present - set(order))


def _read(study_dir: Path, name: str, **kwargs: Any) -> pd.DataFrame:
    """A table that ``scripts/study_stats.py`` wrote, or an error that says to run it."""
    path = study_dir / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run scripts/study_stats.py --study {study_dir} first")
    return pd.read_csv(path, **kwargs)


def _save(fig: Figure, path: Path) -> None:
    """Write a figure as PNG (Agg canvas, never registered with pyplot, as in :mod:`bundle.plots`)."""
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110, bbox_inches="tight")


def _main_table(table: pd.DataFrame) -> str:
    """Measured mean ± SD over backbones beside the paper's means, one row per strategy and protocol."""
    header = ["strategy", "protocol", "backbones", *(f"{_LABELS[m]} measured" for m in TABLE_METRICS)]
    header += [f"{_LABELS[m]} paper" for m in _PAPER_METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    cells = table.set_index(["strategy", "protocol", "metric"])
    for protocol in _ordered(table["protocol"], PROTOCOLS):
        for strategy in _ordered(table.loc[table["protocol"] == protocol, "strategy"], STRATEGIES):
            measured, backbones = [], 0
            for metric in TABLE_METRICS:
                if (strategy, protocol, metric) not in cells.index:
                    measured.append("-")
                    continue
                row = cells.loc[(strategy, protocol, metric)]
                backbones = max(backbones, int(row["n_backbones"]))
                sd = "" if pd.isna(row["sd"]) else f" ± {100 * row['sd']:.1f}"
                measured.append(f"{100 * row['mean']:.1f}{sd}")
            paper = PAPER.get((strategy, protocol), {})
            published = [f"{paper[m]:.1f}" if m in paper else "-" for m in _PAPER_METRICS]
            lines.append("| " + " | ".join([strategy, protocol, str(backbones), *measured, *published]) + " |")
    return "\n".join(lines)


def _boxplots(pooled: pd.DataFrame, path: Path) -> None:
    """One panel per protocol and metric: the per-backbone pooled scores of each strategy, the paper's mean as a
    red cross."""
    protocols = _ordered(pooled["protocol"], PROTOCOLS)
    fig = Figure(figsize=(3.6 * len(TABLE_METRICS), 3.4 * len(protocols)))
    axes = np.atleast_2d(fig.subplots(len(protocols), len(TABLE_METRICS), squeeze=False))
    rng = np.random.default_rng(0)
    for row, protocol in enumerate(protocols):
        for col, metric in enumerate(TABLE_METRICS):
            ax = axes[row, col]
            selected = pooled[(pooled["protocol"] == protocol) & (pooled["metric"] == metric)].dropna(subset=["value"])
            strategies = _ordered(selected["strategy"], STRATEGIES)
            values = [100 * selected.loc[selected["strategy"] == s, "value"].to_numpy() for s in strategies]
            positions = np.arange(1, len(strategies) + 1)
            if strategies:
                ax.boxplot(values, positions=positions, widths=0.5, showfliers=False)
            for x, points in zip(positions, values, strict=True):
                ax.scatter(x + rng.uniform(-0.12, 0.12, points.size), points, s=14, color="tab:blue", alpha=0.7)
            paper = [(x, PAPER.get((s, protocol), {}).get(metric)) for x, s in zip(positions, strategies, strict=True)]
            paper = [(x, v) for x, v in paper if v is not None]
            if paper:
                ax.scatter(*zip(*paper, strict=True), marker="x", s=50, color="tab:red", label="paper (mean)")
                ax.legend(loc="lower right", fontsize="x-small")
            ax.set_xticks(positions, strategies, rotation=30, ha="right", fontsize="small")
            ax.set(ylim=(-2, 102), title=f"{protocol.upper()} {_LABELS[metric]} (%)")
    _save(fig, path)


def _curves(predictions: pd.DataFrame, path: Path) -> None:
    """ROC and reliability curves per strategy, predictions pooled over folds and backbones, one row per protocol."""
    protocols = _ordered(predictions["protocol"], PROTOCOLS)
    fig = Figure(figsize=(11, 5 * len(protocols)))
    axes = np.atleast_2d(fig.subplots(len(protocols), 2, squeeze=False))
    for row, protocol in enumerate(protocols):
        ax_roc, ax_rel = axes[row]
        ax_roc.plot([0, 1], [0, 1], linestyle=":", color="grey", label="chance")
        ax_rel.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
        selected = predictions[predictions["protocol"] == protocol]
        for strategy in _ordered(selected["strategy"], STRATEGIES):
            group = selected[selected["strategy"] == strategy]
            y, p = check_binary_inputs(group["y_true"].to_numpy(), group["prob_positive"].to_numpy())
            name = f"{strategy} ({group['backbone'].nunique()} backbones)"
            add_roc_curve(ax_roc, y, p, name)
            ece = add_reliability_curve(ax_rel, y, p, name)
            ax_rel.lines[-1].set_label(f"{name}, ECE {ece:.3f}")
        ax_roc.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity", ylabel="sensitivity", title=f"{protocol} ROC")
        ax_rel.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted probability of SEVERE", ylabel="observed fraction")
        ax_rel.set_title(f"{protocol} reliability")
        for ax in (ax_roc, ax_rel):
            ax.set_aspect("equal")
            ax.legend(loc="lower right", fontsize="x-small")
    _save(fig, path)


def _loco_centres(results: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Accuracy on each held-out centre (LOCO), mean over backbones per strategy, as bars with the backbones as
    points; returns the centre x strategy table of means."""
    accuracy = results[
        (results["protocol"] == "loco")
        & (results["task"] == "prognosis")
        & (results["scope"] == "overall")
        & (results["metric"] == "accuracy")
    ]
    means = accuracy.pivot_table(index="fold", columns="strategy", values="value", aggfunc="mean")
    means = means.reindex(columns=_ordered(means.columns, STRATEGIES))
    centres = list(means.index)
    fig = Figure(figsize=(max(6.0, 1.4 * len(centres)), 4))
    ax = fig.subplots()
    width = 0.8 / max(1, len(means.columns))
    for i, strategy in enumerate(means.columns):
        x = np.arange(len(centres)) + (i - (len(means.columns) - 1) / 2) * width
        ax.bar(x, 100 * means[strategy].to_numpy(), width=width, label=strategy, alpha=0.6)
        points = accuracy[accuracy["strategy"] == strategy]
        ax.scatter(x[[centres.index(c) for c in points["fold"]]], 100 * points["value"], s=10, color="black")
    ax.set_xticks(np.arange(len(centres)), centres)
    ax.set(ylim=(0, 100), xlabel="held-out centre", ylabel="accuracy (%)", title="LOCO accuracy per held-out centre")
    ax.legend(fontsize="small")
    _save(fig, path)
    return means


def _stats_section(study_dir: Path) -> str:
    """``stats.json`` as markdown, one heading level down, or a hint to compute it."""
    path = study_dir / "stats.json"
    if not path.is_file():
        return f"No statistics yet: run `python scripts/study_stats.py --study {study_dir}`."
    stats: Mapping[str, Any] = json.loads(path.read_text())
    return to_markdown(stats).replace("## ", "### ")


def write_report(study_dir: str | os.PathLike[str], data_note: str) -> Path:
    """Write ``report.md`` and its PNG figures into the study folder.

    Args:
        study_dir: the study folder, after ``scripts/study_stats.py``.
        data_note: what the runs were trained and tested on (``"real AIforCOVID + BRIXIA"``, ``"tiny"``); printed
            as "Measured on: ..." so that a reader never takes demo numbers for the paper's.

    Returns:
        The path of ``report.md``.

    Raises:
        FileNotFoundError: the collected tables are missing.
        ValueError: the study has no evaluated run yet.
    """
    study_dir = Path(study_dir)
    table = _read(study_dir, "table.csv")
    if table.empty:
        raise ValueError(f"{study_dir} has no evaluated run yet: nothing to report")
    pooled = _read(study_dir, "pooled_metrics.csv")
    predictions = _read(study_dir, "pooled_predictions.csv", dtype={"fold": str})
    results = _read(study_dir, "results.csv", dtype={"fold": str})
    runs = results[["strategy", "backbone", "protocol", "fold"]].drop_duplicates()
    splits = sorted(set(runs["protocol"] + "-" + runs["fold"]))
    _boxplots(pooled, study_dir / _BOXPLOTS)
    _curves(predictions, study_dir / _CURVES)
    lines = [
        "# MDMT study report",
        "",
        f"Measured on: {data_note}",
        "",
        f"Study folder `{study_dir}`: {len(runs)} evaluated runs ({runs['strategy'].nunique()} strategies, "
        f"{runs['backbone'].nunique()} backbones, splits {', '.join(splits)}); "
        f"written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.",
        "",
        "## Prognosis, mean ± SD over backbones (%)",
        "",
        "Each backbone is scored once on its test predictions pooled over the folds of the protocol. The paper's "
        "columns are Ruffini et al., MICCAI 2024: the mean over 18 ImageNet-pretrained backbones on the real "
        "AIforCOVID (300 epochs at 256 px), published numbers shown beside the measured ones, not measured here. "
        "The paper's MDMT starts from the averaged single-task backbones (`mdmt_averaged`); its numbers stand "
        "beside both MDMT rows.",
        "",
        _main_table(table),
        "",
        f"![Per-backbone scores per strategy; red crosses: the paper's means]({_BOXPLOTS})",
        "",
        "## Statistics across backbones",
        "",
        _stats_section(study_dir),
        "",
        "## ROC and reliability (test predictions pooled over folds and backbones)",
        "",
        f"![ROC and reliability curves per strategy]({_CURVES})",
        "",
    ]
    if (results["protocol"] == "loco").any():
        means = _loco_centres(results, study_dir / _CENTRES)
        lines += ["## Leave-one-centre-out: accuracy per held-out centre (mean over backbones, %)", ""]
        lines += ["| centre | " + " | ".join(means.columns) + " |", "|---" * (len(means.columns) + 1) + "|"]
        lines += [f"| {c} | " + " | ".join(f"{100 * v:.1f}" for v in row) + " |" for c, row in means.iterrows()]
        lines += ["", f"![LOCO accuracy per centre]({_CENTRES})", ""]
    path = study_dir / "report.md"
    write_text_atomic(path, "\n".join(lines))
    return path
