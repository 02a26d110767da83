"""Joint supervision of fine-grained classification and opacity segmentation: batches, loss and Dice.

``SegmentationMultiHeadNet`` returns ``{"pred", "seg"}``; its targets are the packed task label (NaN where a task is
not labelled, as everywhere in the bundle) and the opacity mask (all NaN where the image has no segmentation label).
:class:`ClassificationSegmentationPrepareBatch` hands both to MONAI's ``SupervisedTrainer``/``SupervisedEvaluator``
as one dict, :class:`ClassificationSegmentationLoss` adds the masked classification loss and a Dice + BCE term over
the images that do have a mask, and :class:`OpacityDice` scores the masks at validation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from ignite.distributed import all_reduce
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced
from monai.engines import PrepareBatch
from monai.losses import DiceCELoss
from torch import nn

from bundle.losses.multidataset import MultiDatasetLoss
from bundle.tasks import Task, TaskSet

__all__ = ["ClassificationSegmentationLoss", "ClassificationSegmentationPrepareBatch", "OpacityDice", "mask_present"]


def mask_present(mask: torch.Tensor) -> torch.Tensor:
    """(B,) bool: which samples of a (B, C, *spatial) target carry a segmentation label (no NaN anywhere)."""
    return ~torch.isnan(mask).flatten(1).any(dim=1)


class ClassificationSegmentationPrepareBatch(PrepareBatch):
    """``batch -> (image, {"label": packed label, "seg": mask})``; ``seg`` only when the batch has one.

    Args:
        image_key: the input image key.
        label_key: the packed task label key.
        seg_key: the segmentation target key.
    """

    def __init__(self, image_key: str = "image", label_key: str = "label", seg_key: str = "seg") -> None:
        self.image_key, self.label_key, self.seg_key = image_key, label_key, seg_key

    def __call__(
        self,
        batchdata: dict[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Move the image and the targets to ``device``."""

        def move(value: torch.Tensor) -> torch.Tensor:
            return value.to(device=device, non_blocking=non_blocking, **kwargs)

        targets = {"label": move(batchdata[self.label_key])}
        if self.seg_key in batchdata:
            targets["seg"] = move(batchdata[self.seg_key])
        return move(batchdata[self.image_key]), targets


class ClassificationSegmentationLoss(nn.Module):
    """``MultiDatasetLoss`` on ``pred`` plus ``seg_weight`` x Dice-BCE on ``seg``, over the samples with a mask.

    The Dice term is computed over the whole batch at once (``batch=True``): many masks are empty (negative studies),
    and a per-image Dice of an empty mask is 1 for the slightest false positive, which would dominate the loss.
    Without a ``seg`` output (the single-task network) or with ``seg_weight`` 0, only the classification term is left,
    so the same loss serves both arms of the comparison. A batch without any mask adds an exact 0 that keeps the
    decoder in the autograd graph.

    Args:
        tasks: the classification tasks (a ``TaskSet`` or the config's list of dicts).
        seg_weight: weight of the segmentation term.
        reduction: ``MultiDatasetLoss`` reduction.
        weighting: ``MultiDatasetLoss`` weighting across classification tasks.
    """

    def __init__(
        self,
        tasks: TaskSet | Iterable[Task | Mapping[str, Any]],
        seg_weight: float = 1.0,
        reduction: str = "task_mean",
        weighting: str | Mapping[str, Any] | nn.Module | None = None,
    ) -> None:
        super().__init__()
        if seg_weight < 0:
            raise ValueError(f"seg_weight must be >= 0, got {seg_weight}")
        self.classification = MultiDatasetLoss(tasks, reduction=reduction, weighting=weighting)
        self.segmentation = DiceCELoss(sigmoid=True, batch=True)
        self.seg_weight = seg_weight

    def forward(self, pred: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Total loss of a batch; ``pred`` and ``target`` are the dicts of the network and the batch preparation."""
        loss = self.classification(pred["pred"], target["label"])
        if "seg" not in pred or self.seg_weight == 0:
            return loss
        if "seg" not in target:
            raise ValueError("the network segments but the batch has no 'seg' target")
        present = mask_present(target["seg"])
        if present.any():
            seg = self.segmentation(pred["seg"][present], target["seg"][present])
        else:
            seg = pred["seg"].sum() * 0.0
        return loss + self.seg_weight * seg


class OpacityDice(Metric):
    """Dice of the thresholded opacity masks over all validation images that carry a mask, pooled.

    Pooled (sum of intersections over sum of sizes) rather than averaged per image, for the reason given in
    :class:`ClassificationSegmentationLoss`; NaN when no image has a mask or all masks and predictions are empty.
    Sums are reduced over ranks, so the value is the same under DDP.

    Args:
        threshold: probability above which a pixel is predicted opacity.
        output_transform: maps the engine output to ``(seg logits, seg target)``.
        device: where the sums are kept.
    """

    def __init__(
        self,
        threshold: float = 0.5,
        output_transform: Callable = lambda output: (output["pred"]["seg"], output["label"]["seg"]),
        device: str | torch.device = "cpu",
    ) -> None:
        self.threshold = threshold
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._sums = torch.zeros(3, dtype=torch.float64, device=self._device)  # intersection, predicted, target

    @reinit__is_reduced
    def update(self, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        logits, target = output
        present = mask_present(target)
        if not present.any():
            return
        predicted = (torch.sigmoid(logits[present].detach()) > self.threshold).double()
        truth = (target[present].detach() > 0.5).double()
        self._sums += torch.stack([(predicted * truth).sum(), predicted.sum(), truth.sum()]).to(self._device)

    def compute(self) -> float:
        intersection, predicted, truth = all_reduce(self._sums.clone()).tolist()
        return 2.0 * intersection / (predicted + truth) if predicted + truth > 0 else math.nan
