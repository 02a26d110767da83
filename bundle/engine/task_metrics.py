"""Validation metrics for a multi-task network whose labels are missing for some tasks."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced
from monai.utils import convert_to_tensor, evenly_divisible_all_gather
from sklearn.metrics import roc_auc_score

from bundle.losses.multidataset import MultiDatasetLoss
from bundle.tasks import TaskSet


class TaskMetrics(Metric):
    """Per-task validation loss, accuracy and binary ROC AUC over the samples that carry each task's label.

    Validation sets mix datasets, so every task is scored only on its own labelled samples (the indicator function of
    the training loss). The per-task loss is the training loss's own term (``MultiDatasetLoss`` with its default
    per-task mean), so model selection on ``<task>_loss`` selects on exactly what is optimised. Predictions are
    gathered over all ranks before computing, so the numbers are the same under DDP as in one process; ranks may hold
    different numbers of samples (a validation set split over ranks without padding, so no sample counts twice).

    ``compute`` returns a mapping that ignite flattens into ``engine.state.metrics``: ``<task>_loss``,
    ``<task>_accuracy`` (classification), ``<task>_auc`` (two-class tasks, NaN when one class is absent) and
    ``total_loss`` (the sum of the task losses present). Attach it under one of these names (for example as the
    evaluator's key metric ``prognosis_loss``) to make that value the engine's key metric.

    Args:
        tasks: the task declarations (a ``TaskSet`` or the config's list of dicts).
        output_transform: maps the engine output to ``(pred, label)``.
        device: where the accumulated tensors are kept.
    """

    def __init__(
        self,
        tasks: TaskSet | Sequence[dict],
        output_transform: Callable = lambda output: (output["pred"], output["label"]),
        device: str | torch.device = "cpu",
    ) -> None:
        self.tasks = tasks if isinstance(tasks, TaskSet) else TaskSet(tasks)
        self._loss = MultiDatasetLoss(self.tasks)
        super().__init__(output_transform=output_transform, device=device, metrics_result_mode="flatten")

    @reinit__is_reduced
    def reset(self) -> None:
        self._preds: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    @reinit__is_reduced
    def update(self, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        pred, label = output  # plain tensors: MetaTensor batches could not be gathered and sliced over ranks
        self._preds.append(convert_to_tensor(pred, track_meta=False).detach().float().cpu())
        self._labels.append(convert_to_tensor(label, track_meta=False).detach().float().cpu())

    def compute(self) -> dict[str, float]:
        pred = torch.cat(self._preds) if self._preds else torch.zeros(0, self.tasks.out_channels)
        label = torch.cat(self._labels) if self._labels else torch.zeros(0, self.tasks.label_size)
        pred, label = evenly_divisible_all_gather(pred), evenly_divisible_all_gather(label)
        results: dict[str, float] = {}
        with torch.no_grad():
            self._loss(pred, label)
        task_losses = self._loss.last_task_losses
        preds, labels = self.tasks.split(pred), self.tasks.split_labels(label)
        for task in self.tasks:
            present = ~torch.isnan(labels[task.name]).any(dim=1)
            results[f"{task.name}_loss"] = float(task_losses.get(task.name, math.nan)) if present.any() else math.nan
            if task.kind != "classification" or not present.any():
                continue
            logits = preds[task.name][present].reshape(int(present.sum()), task.groups, len(task.classes))
            target = labels[task.name][present].long()
            results[f"{task.name}_accuracy"] = float((logits.argmax(-1) == target).float().mean())
            if len(task.classes) == 2 and task.groups == 1:
                prob = torch.softmax(logits[:, 0], dim=-1)[:, 1].numpy()
                y = target[:, 0].numpy()
                results[f"{task.name}_auc"] = float(roc_auc_score(y, prob)) if len(set(y.tolist())) == 2 else math.nan
        losses = [v for k, v in results.items() if k.endswith("_loss") and not math.isnan(v)]
        results["total_loss"] = float(sum(losses)) if losses else math.nan
        return results
