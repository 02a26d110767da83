"""The multi-dataset loss: the MDMT indicator function over a packed, partly missing label.

Each sample carries labels for only some tasks (AIforCOVID images: prognosis; BRIXIA images: severity), NaN elsewhere.
For every task the loss is computed on the samples that label it and on nothing else:

    L = combine_k( L_k ),   L_k = reduce over {i : label_i,k present} of loss_k(pred_i,k, label_i,k)

so a missing label never becomes a zero target, a sample never trains a head it has no label for, and a batch that
holds no sample of a task contributes exactly 0 for it, in value and in gradient, never NaN.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bundle.losses.weighting import build_weighting
from bundle.tasks import Task, TaskSet

__all__ = ["REDUCTIONS", "MultiDatasetLoss"]

REDUCTIONS = ("task_mean", "batch_mean")
REGRESSION_LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss}


class MultiDatasetLoss(nn.Module):
    """Masked multi-task loss for batches mixing datasets that label different tasks.

    Per task:

    - classification: a sample is present when all its group labels are present (not NaN); the per-sample loss is
      the cross-entropy averaged over the task's groups (one softmax per group);
    - regression: entries are masked one by one; the per-sample loss is the mean ``mse`` / ``l1`` over the sample's
      present entries, and a sample is present when it has at least one.

    Per-sample losses are then reduced with ``reduction``:

    - ``task_mean`` (default, the paper's formula made scale-free): mean over the task's own present samples, so a
      task's loss does not shrink when the batch holds few of its samples;
    - ``batch_mean`` (the MDMT reference code): sum over the task's present samples divided by the whole batch size.

    The per-task losses of the tasks present in the batch are combined by ``weighting`` (see
    ``bundle.losses.weighting``; default fixed ``Task.weight``). Absent tasks are added as an exact zero that still
    depends on ``pred`` (an empty selection), so every head stays in the autograd graph with zero gradient, which DDP
    without ``find_unused_parameters`` needs.

    Missing rows are selected out before any arithmetic, so their logits (even non-finite ones) cannot reach the value
    or the gradient.

    Args:
        tasks: a ``TaskSet`` or the config's list of task dicts.
        reduction: ``task_mean`` or ``batch_mean``.
        weighting: a weighting strategy or its config form (``None``, a name, or ``{name: ..., **arguments}``).
            Learnable weightings (``uncertainty``) are submodules: give ``loss.parameters()`` to the optimiser too.

    Attributes:
        last_task_losses: per-task losses of the last call, as floats, for the tasks present in that batch only.
        last_task_counts: per-task number of present samples in the last call (0 for an absent task).
    """

    def __init__(
        self,
        tasks: TaskSet | Iterable[Task | Mapping[str, Any]],
        reduction: str = "task_mean",
        weighting: str | Mapping[str, Any] | nn.Module | None = None,
    ) -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.tasks = tasks if isinstance(tasks, TaskSet) else TaskSet(tasks)
        self.reduction = reduction
        self.weighting = build_weighting(weighting, self.tasks)
        self._last_losses: dict[str, torch.Tensor] = {}
        self._last_counts: dict[str, int] = {}

    @property
    def last_task_losses(self) -> dict[str, float]:
        """Per-task losses of the last batch, for the tasks present in it (converted on read, not synced every step)."""
        return {k: float(v) for k, v in self._last_losses.items()}

    @property
    def last_task_counts(self) -> dict[str, int]:
        """Number of present samples per task in the last batch."""
        return dict(self._last_counts)

    def _per_sample(self, task: Task, pred: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample losses of the present samples of one task, and the presence mask over the batch.

        Raises:
            ValueError: when a present classification label is not a class index of the task.
        """
        if task.kind == "classification":
            present = ~torch.isnan(label).any(dim=1)
            target = label[present]
            num_classes = len(task.classes)
            if bool(((target != target.floor()) | (target < 0) | (target >= num_classes)).any()):
                raise ValueError(f"task {task.name!r}: labels must be class indices 0..{num_classes - 1}")
            logits = task.grouped(pred[present])
            ce = F.cross_entropy(logits.reshape(-1, num_classes), target.long().reshape(-1), reduction="none")
            return ce.reshape(-1, task.groups).mean(dim=1), present
        mask = ~torch.isnan(label)
        present = mask.any(dim=1)
        mask, target, values = mask[present], label[present], pred[present]
        errors = REGRESSION_LOSSES[task.loss](values, torch.where(mask, target, values.detach()), reduction="none")
        return torch.where(mask, errors, 0.0).sum(dim=1) / mask.sum(dim=1), present

    def forward(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Masked, reduced and weighted loss of a batch.

        Args:
            pred: (B, tasks.out_channels) logits of ``MultiHeadNet``.
            label: (B, tasks.label_size) packed labels, NaN where missing.

        Returns:
            A finite scalar when the present labels and their logits are finite.

        Raises:
            ValueError: when the shapes do not match the tasks.
        """
        if pred.ndim != 2 or label.ndim != 2 or pred.shape[0] != label.shape[0]:
            raise ValueError(f"expected pred (B, C) and label (B, L), got {tuple(pred.shape)} and {tuple(label.shape)}")
        preds, labels = self.tasks.split(pred), self.tasks.split_labels(label.to(pred.dtype))
        present_losses: dict[str, torch.Tensor] = {}
        absent_zero = pred.new_zeros(())
        self._last_counts = {}
        for task in self.tasks:
            per_sample, present = self._per_sample(task, preds[task.name], labels[task.name])
            count = int(present.sum())
            self._last_counts[task.name] = count
            if count == 0:
                absent_zero = absent_zero + per_sample.sum()
                continue
            denominator = count if self.reduction == "task_mean" else pred.shape[0]
            present_losses[task.name] = per_sample.sum() / denominator
        self._last_losses = {k: v.detach() for k, v in present_losses.items()}
        if not present_losses:
            return absent_zero
        return self.weighting(present_losses) + absent_zero
