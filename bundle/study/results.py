"""Collect a study folder into tidy tables: every evaluated run's metrics, and the test predictions pooled over folds.

The paper (methods.md, section 1) scores each backbone on its test predictions pooled over the folds of a protocol,
then reports the mean over backbones. Pooling first matters: a CV test fold holds a fifth of the patients, and a
LOCO test set a single centre, where a per-fold G-mean or AUC can be undefined or swing widely. So besides
``results.csv`` (one row per run, task, scope and metric, straight from each ``eval/<strategy>/metrics.json``), the
prognosis predictions of every run are concatenated per backbone, strategy and protocol and scored once with
:func:`bundle.metrics.prognosis_metrics`; ``table.csv`` is the paper's table built from those pooled scores.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from bundle.atomic import write_text_atomic
from bundle.metrics import PROGNOSIS_CI_METRICS, prognosis_metrics
from bundle.study.grid import EVALUATION_MARKER

__all__ = ["RESULT_COLUMNS", "TABLE_METRICS", "TASK", "collect", "pooled_predictions", "read_results"]

logger = logging.getLogger(__name__)

#: The task the paper's comparison is about (prognosis on AIforCOVID).
TASK = "prognosis"

#: The columns of the paper's table (ACC, F1, G-mean) and the AUC, which the paper's code got wrong (methods.md).
TABLE_METRICS: tuple[str, ...] = ("accuracy", "f1", "g_mean", "roc_auc")

RESULT_COLUMNS = [
    "strategy", "backbone", "protocol", "fold", "task", "scope", "centre", "metric", "value", "ci_low", "ci_high", "n",
]  # fmt: skip
_RUN_COLUMNS = ["strategy", "backbone", "protocol", "fold"]
_PREDICTION_COLUMNS = [*_RUN_COLUMNS, "patient", "centre", "image", "y_true", "prob_positive"]
_POOLED_COLUMNS = ["strategy", "backbone", "protocol", "n_folds", "n", "metric", "value"]
_TABLE_COLUMNS = ["strategy", "protocol", "metric", "mean", "sd", "n_backbones"]


def _evaluated_runs(study_dir: Path) -> list[tuple[dict[str, str], Path]]:
    """``(run keys, eval folder)`` of every evaluated run, from the layout ``runs/<backbone>/<protocol>-<fold>/eval/
    <strategy>/``; sorted so that the tables come out in the same order on every machine."""
    found = []
    for marker in sorted(study_dir.glob(f"runs/*/*/eval/*/{EVALUATION_MARKER}")):
        eval_dir = marker.parent
        split = eval_dir.parents[1].name
        protocol, _, fold = split.partition("-")
        keys = {"strategy": eval_dir.name, "backbone": eval_dir.parents[2].name, "protocol": protocol, "fold": fold}
        found.append((keys, eval_dir))
    return found


def _metric_rows(keys: Mapping[str, str], report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The tidy rows of one ``metrics.json``: every numeric metric of every task, overall and per centre."""
    rows = []
    for task, entry in report.get("tasks", {}).items():
        base = {**keys, "task": task}
        if "metrics" in entry:  # a two-class task: values with bootstrap intervals, point values per centre
            for metric, value in entry["metrics"].items():
                rows.append(
                    {**base, "scope": "overall", "centre": "", "metric": metric, "value": value["value"],
                     "ci_low": value["ci_low"], "ci_high": value["ci_high"], "n": entry["n"]}
                )  # fmt: skip
            for centre, values in entry.get("per_centre", {}).items():
                rows.extend(
                    {**base, "scope": "centre", "centre": centre, "metric": metric, "value": values.get(metric),
                     "ci_low": None, "ci_high": None, "n": values["n"]}
                    for metric in PROGNOSIS_CI_METRICS
                )  # fmt: skip
        else:  # a multi-class task: point values
            rows.extend(
                {**base, "scope": "overall", "centre": "", "metric": metric, "value": value, "ci_low": None,
                 "ci_high": None, "n": entry["n"]}
                for metric, value in entry.items()
                if metric != "n" and (value is None or isinstance(value, int | float)) and not isinstance(value, bool)
            )  # fmt: skip
    return rows


def read_results(study_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Every evaluated run's metrics as one tidy table (:data:`RESULT_COLUMNS`); NaN where a metric is undefined."""
    rows = []
    for keys, eval_dir in _evaluated_runs(Path(study_dir)):
        rows.extend(_metric_rows(keys, json.loads((eval_dir / "metrics.json").read_text())))
    return pd.DataFrame(rows, columns=RESULT_COLUMNS).astype({"value": float, "ci_low": float, "ci_high": float})


def pooled_predictions(study_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The :data:`TASK` test predictions of every evaluated run, one row per labelled test patient and run.

    ``prob_positive`` is the probability of the task's positive class (``positive_class`` of ``metrics.json``:
    SEVERE). Rows without a label of the task (the BRIXIA test images) are left out.
    """
    frames = []
    for keys, eval_dir in _evaluated_runs(Path(study_dir)):
        report = json.loads((eval_dir / "metrics.json").read_text())
        if TASK not in report.get("tasks", {}):
            continue
        positive = report["tasks"][TASK]["positive_class"]
        predictions = pd.read_csv(eval_dir / EVALUATION_MARKER, dtype=str, keep_default_na=False)
        labelled = predictions[predictions[f"{TASK}:label"] != ""]
        frames.append(
            pd.DataFrame(
                {
                    **keys,
                    "patient": labelled["patient"],
                    "centre": labelled["centre"],
                    "image": labelled["image"],
                    "y_true": labelled[f"{TASK}:label"].astype(float).astype(int),
                    "prob_positive": labelled[f"{TASK}:{positive}"].astype(float),
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=_PREDICTION_COLUMNS)
    return pd.concat(frames, ignore_index=True)[_PREDICTION_COLUMNS]


def _pooled_metrics(predictions: pd.DataFrame) -> pd.DataFrame:
    """Each backbone, strategy and protocol scored once on its predictions pooled over folds."""
    rows = []
    for (strategy, backbone, protocol), group in predictions.groupby(["strategy", "backbone", "protocol"], sort=True):
        values = prognosis_metrics(group["y_true"].to_numpy(), group["prob_positive"].to_numpy())
        base = {"strategy": strategy, "backbone": backbone, "protocol": protocol}
        base |= {"n_folds": group["fold"].nunique(), "n": len(group)}
        rows.extend({**base, "metric": metric, "value": values[metric]} for metric in PROGNOSIS_CI_METRICS)
    pooled = pd.DataFrame(rows, columns=_POOLED_COLUMNS)
    for protocol, group in pooled.groupby("protocol"):
        if group["n_folds"].nunique() > 1:
            logger.warning(
                "%s: backbones and strategies pool different numbers of folds (%s): the study is not finished, and "
                "their scores are not comparable yet",
                protocol,
                sorted(group["n_folds"].unique()),
            )
    return pooled


def _table(pooled: pd.DataFrame) -> pd.DataFrame:
    """The paper's table: mean and SD over backbones of each pooled :data:`TABLE_METRICS` entry."""
    rows = []
    selected = pooled[pooled["metric"].isin(TABLE_METRICS)].dropna(subset=["value"])
    for (strategy, protocol, metric), group in selected.groupby(["strategy", "protocol", "metric"], sort=True):
        values = group["value"]
        sd = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        rows.append(
            {"strategy": strategy, "protocol": protocol, "metric": metric, "mean": float(values.mean()), "sd": sd,
             "n_backbones": len(values)}
        )  # fmt: skip
    return pd.DataFrame(rows, columns=_TABLE_COLUMNS)


def collect(study_dir: str | os.PathLike[str]) -> dict[str, pd.DataFrame]:
    """Collect the evaluated runs of a (possibly unfinished) study and write its tables into the study folder.

    Writes ``results.csv``, ``pooled_predictions.csv``, ``pooled_metrics.csv`` (tidy: strategy, backbone, protocol,
    n_folds, n, metric, value) and ``table.csv`` (strategy, protocol, metric, mean, sd, n_backbones).

    Args:
        study_dir: the study's ``study_dir``.

    Returns:
        The four tables under the keys ``results``, ``pooled_predictions``, ``pooled_metrics`` and ``table``.
    """
    study_dir = Path(study_dir)
    predictions = pooled_predictions(study_dir)
    pooled = _pooled_metrics(predictions)
    tables = {
        "results": read_results(study_dir),
        "pooled_predictions": predictions,
        "pooled_metrics": pooled,
        "table": _table(pooled),
    }
    for name, frame in tables.items():
        write_text_atomic(study_dir / f"{name}.csv", frame.to_csv(index=False))
    logger.info(
        "collected %d evaluated runs into %s", tables["results"][_RUN_COLUMNS].drop_duplicates().shape[0], study_dir
    )
    return tables
