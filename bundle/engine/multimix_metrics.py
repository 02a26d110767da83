"""MultiMix validation and test metrics: accuracy and per-class F1 of the classifier, Dice and HD95 of the masks.

Validation and test sets mix classification records (no mask) and segmentation records (no class label), so one
metric object reads whichever outputs a batch has (``MultiMixEvalIteration`` returns only those) and scores each task
on its own records. The segmentation scores are MONAI's ``DiceMetric`` and ``HausdorffDistanceMetric`` (95th
percentile, in pixels of the network's input) on masks thresholded at probability 0.5; the per-class F1 is MONAI's
confusion-matrix F1 over the whole set.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced
from monai.metrics import DiceMetric, HausdorffDistanceMetric, compute_confusion_matrix_metric, get_confusion_matrix

from bundle.atomic import write_text_atomic
from bundle.networks.multimix import CLASS_LOGITS, MASK_LOGITS

__all__ = ["MetricsReport", "MultiMixMetrics"]

logger = logging.getLogger(__name__)


class MultiMixMetrics(Metric):
    """Classification and segmentation scores of a MultiMix network over mixed records.

    ``compute`` returns a mapping that ignite flattens into ``engine.state.metrics``: ``accuracy``, ``f1_<class>``
    for every class, ``dice``, ``hd95`` (NaN over images whose predicted mask is empty, which are counted in
    ``empty_masks``), ``n_classification``, ``n_segmentation`` and ``score``, the mean of accuracy and Dice (the
    model-selection metric of a joint model; either alone selects a single-task baseline). A task without records
    gives NaN scores, which the checkpointer never selects on.

    Args:
        classes: class names, in logit order.
        threshold: probability above which a mask pixel is foreground.
        output_transform: maps the engine output to a one-element tuple holding the dict the iteration returned
            (ignite takes a mapping for ``y_pred`` / ``y``, which this output is not).
    """

    def __init__(
        self,
        classes: Sequence[str],
        threshold: float = 0.5,
        output_transform: Callable[[Any], Any] = lambda output: (output,),
    ) -> None:
        self.classes = [str(c) for c in classes]
        self.threshold = threshold
        self._dice = DiceMetric(include_background=True, reduction="mean")
        self._hausdorff = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="mean")
        super().__init__(output_transform=output_transform, metrics_result_mode="flatten")

    @reinit__is_reduced
    def reset(self) -> None:
        self._logits: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self._dice.reset()
        self._hausdorff.reset()
        self._segmentations = 0
        self._empty = 0

    @reinit__is_reduced
    def update(self, output: tuple[dict[str, torch.Tensor]]) -> None:
        (output,) = output
        if CLASS_LOGITS in output:
            self._logits.append(output[CLASS_LOGITS].detach().float().cpu())
            self._labels.append(output["label"].detach().float().cpu().reshape(-1))
        if MASK_LOGITS in output:
            prediction = (torch.sigmoid(output[MASK_LOGITS].detach().float()) > self.threshold).float().cpu()
            truth = (output["mask"].detach().float() > 0.5).float().cpu()
            self._dice(prediction, truth)
            empty = prediction.flatten(1).sum(dim=1) == 0
            self._empty += int(empty.sum())
            self._segmentations += len(prediction)
            if not empty.all():
                self._hausdorff(prediction[~empty], truth[~empty])

    def compute(self) -> dict[str, float]:
        results: dict[str, float] = {"n_classification": 0, "n_segmentation": self._segmentations}
        results |= {"accuracy": math.nan} | {f"f1_{c}": math.nan for c in self.classes}
        if self._logits:
            logits, labels = torch.cat(self._logits), torch.cat(self._labels).long()
            predicted = logits.argmax(dim=1)
            results["n_classification"] = len(labels)
            results["accuracy"] = float((predicted == labels).float().mean())
            eye = torch.eye(len(self.classes))
            matrix = get_confusion_matrix(eye[predicted], eye[labels], include_background=True).sum(dim=0)
            f1 = compute_confusion_matrix_metric("f1 score", matrix)
            results |= {f"f1_{c}": float(v) for c, v in zip(self.classes, f1, strict=True)}
        results["dice"] = float(self._dice.aggregate().item()) if self._segmentations else math.nan
        scored = self._segmentations > self._empty
        results["hd95"] = float(self._hausdorff.aggregate().item()) if scored else math.nan
        results["empty_masks"] = self._empty
        present = [v for v in (results["accuracy"], results["dice"]) if not math.isnan(v)]
        results["score"] = sum(present) / len(present) if present else math.nan
        return results


class MetricsReport:
    """Writes the evaluator's metrics to ``path`` (JSON, atomically) when it completes, with a description.

    Args:
        path: the JSON file.
        description: extra fields written beside the metrics (e.g. the test domain and datalists).
    """

    def __init__(self, path: str, description: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.description = dict(description or {})

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        metrics = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in engine.state.metrics.items()}
        write_text_atomic(self.path, json.dumps({**self.description, "metrics": metrics}, indent=2, default=str) + "\n")
        logger.info(f"metrics written to {self.path}")
