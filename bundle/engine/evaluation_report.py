"""Test-set report: metrics JSON with bootstrap intervals, per-sample predictions and plots, per task."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from bundle import metrics, plots
from bundle.atomic import write_text_atomic
from bundle.tasks import Task, TaskSet

logger = logging.getLogger(__name__)


class EvaluationReport:
    """Collects the evaluator's predictions and, when it completes, writes ``metrics.json``, ``predictions.csv`` and
    PNG plots to ``output_dir``.

    Each task is scored on the test samples that carry its label. Two-class tasks (prognosis) get accuracy, F1,
    G-mean, precision, recall, specificity and ROC AUC from probabilities with stratified bootstrap 95% intervals,
    the same per centre, a ROC curve (overall and per centre), a confusion matrix and a reliability diagram.
    Multi-class tasks (severity) get accuracy, macro F1, quadratic kappa, a confusion matrix and, when the task
    declares ``class_values`` and the records carry ``true_score_key``, the MAE of the expected score.

    The evaluator must iterate ``records`` in order, unshuffled and undistributed (the bundle's evaluation config
    does), so that sample ``i`` of the predictions is record ``i``; a length mismatch is an error.

    Args:
        tasks: the task declarations.
        records: the test records, in evaluation order (they give centre, dataset and true scores).
        output_dir: where the report goes.
        n_boot: bootstrap resamples.
        seed: bootstrap seed.
        group_key: record field grouping the per-centre metrics.
        true_score_key: record field with the true continuous score of a multi-class task (Brixia global).
    """

    def __init__(
        self,
        tasks: TaskSet | Sequence[dict],
        records: Sequence[dict[str, Any]],
        output_dir: str,
        n_boot: int = 1000,
        seed: int = 0,
        group_key: str = "centre",
        true_score_key: str = "brixia_global",
    ) -> None:
        self.tasks = tasks if isinstance(tasks, TaskSet) else TaskSet(tasks)
        self.records = list(records)
        self.output_dir = Path(output_dir)
        self.n_boot = n_boot
        self.seed = seed
        self.group_key = group_key
        self.true_score_key = true_score_key
        self._preds: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: (self._preds.clear(), self._labels.clear()))
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def _collect(self, engine: Engine) -> None:
        self._preds.append(engine.state.output["pred"].detach().float().cpu())
        self._labels.append(engine.state.output["label"].detach().float().cpu())

    def write(self, engine: Engine | None = None) -> dict[str, Any]:
        pred, label = torch.cat(self._preds), torch.cat(self._labels)
        if len(pred) != len(self.records):
            raise RuntimeError(f"evaluation produced {len(pred)} predictions for {len(self.records)} test records")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        probabilities, labels = self.tasks.probabilities(pred), self.tasks.split_labels(label)
        report: dict[str, Any] = {"n_test": len(self.records), "tasks": {}}
        for task in self.tasks:
            if task.kind != "classification" or task.groups != 1:
                continue
            present = ~torch.isnan(labels[task.name]).any(dim=1)
            if not present.any():
                continue
            idx = present.nonzero().flatten().numpy()
            y = labels[task.name][present, 0].long().numpy()
            probs = probabilities[task.name][present].numpy()
            report["tasks"][task.name] = self._task_report(task, idx, y, probs)
        write_text_atomic(self.output_dir / "metrics.json", json.dumps(metrics.to_jsonable(report), indent=2))
        self._write_predictions(probabilities, labels)
        logger.info(f"evaluation report written to {self.output_dir}")
        return report

    def _task_report(self, task: Task, idx: np.ndarray, y: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
        out = self.output_dir
        groups = np.asarray([str(self.records[i].get(self.group_key, "")) for i in idx])
        plots.plot_confusion(y, probs.argmax(1), task.classes, out / f"{task.name}_confusion.png")
        if len(task.classes) == 2:
            plots.plot_roc(y, probs[:, 1], out / f"{task.name}_roc.png", groups=groups)
            plots.plot_reliability(y, probs[:, 1], out / f"{task.name}_reliability.png")
            result = metrics.prognosis_report(y, probs[:, 1], centres=groups, n_boot=self.n_boot, seed=self.seed)
            result["positive_class"] = task.classes[1]
            return result
        true_scores = [self.records[i].get(self.true_score_key) for i in idx]
        known = task.class_values is not None and all(s is not None for s in true_scores)
        return metrics.severity_metrics(
            y,
            probs,
            bin_expected_scores=task.class_values or list(range(len(task.classes))),
            true_global=np.asarray(true_scores, dtype=float) if known else None,
        )

    def _write_predictions(self, probabilities: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> None:
        rows = []
        for i, record in enumerate(self.records):
            row = {key: record.get(key, "") for key in ("image", "dataset", self.group_key, "patient", "fold")}
            for task in self.tasks:
                values = labels[task.name][i]
                row[f"{task.name}:label"] = "" if values.isnan().any() else ";".join(f"{v:g}" for v in values.tolist())
                row |= dict(zip(task.channel_names, probabilities[task.name][i].tolist(), strict=True))
            rows.append(row)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(self.output_dir / "predictions.csv", buffer.getvalue())
