"""MultiMix's loss: supervised classification and segmentation terms plus two semi-supervised terms.

    L = CE(labeled images)                                  MultiDatasetLoss over the declared classification task
      + w_seg * Dice(labeled masks)                          the segmentation task's weight (MultiMix: 5)
      + w_pl  * CE(strong view, confident weak pseudo-label)  FixMatch, threshold 0.7, weight 0.25
      + w_con * MSE(sigmoid(strong view), sigmoid(weak view)) unlabeled masks, same geometry in both views

The public MultiMix code computes its segmentation consistency from a softmax over the one mask channel, which is 1
everywhere, so the term is always zero; here it compares sigmoid probabilities and is zero exactly when the two views
agree. In both semi-supervised terms the weak view is the target and is detached (FixMatch): the network learns to
make its prediction on the harder view agree with the easier one, not the reverse.

Every term is optional per batch (a stream may be absent, e.g. with every label used); absent terms add nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss
from torch import nn

from bundle.losses.multidataset import MultiDatasetLoss
from bundle.tasks import Task, TaskSet

__all__ = ["MultiMixLoss", "PseudoLabelLoss", "SegmentationConsistencyLoss", "pseudo_labels"]

PSEUDO_LABEL = "pseudo_label"
CONSISTENCY = "consistency"


def pseudo_labels(weak_logits: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """FixMatch pseudo-labels: the most probable class of each weakly augmented image, kept where confident.

    Args:
        weak_logits: (B, num_classes) logits of the weak views (detached by the caller or not: no gradient is used).
        threshold: the softmax probability the top class must reach (>=) for its label to be kept.

    Returns:
        ``(labels, keep)``: (B,) long class indices and a (B,) bool mask of the confident samples.
    """
    confidence, labels = torch.softmax(weak_logits.detach().float(), dim=1).max(dim=1)
    return labels, confidence >= threshold


class PseudoLabelLoss(nn.Module):
    """Cross-entropy of the strong views against the confident pseudo-labels of the weak views (FixMatch).

    As in FixMatch the sum over confident samples is divided by the number of *all* unlabeled samples, so the term
    grows as the classifier becomes confident on more of them.

    Args:
        threshold: confidence threshold (MultiMix: 0.7).

    Attributes:
        last_confident_fraction: share of the last batch's samples that got a pseudo-label.
    """

    def __init__(self, threshold: float = 0.7) -> None:
        super().__init__()
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.threshold = threshold
        self.last_confident_fraction = 0.0

    def forward(self, weak_logits: torch.Tensor, strong_logits: torch.Tensor) -> torch.Tensor:
        """Masked cross-entropy, averaged over the batch (0 when no sample is confident)."""
        labels, keep = pseudo_labels(weak_logits, self.threshold)
        self.last_confident_fraction = float(keep.float().mean()) if len(keep) else 0.0
        ce = F.cross_entropy(strong_logits, labels, reduction="none")
        return torch.where(keep, ce, 0.0).sum() / max(len(ce), 1)


class SegmentationConsistencyLoss(nn.Module):
    """Mean squared difference between the sigmoid mask probabilities of two views with the same geometry.

    Zero exactly when the two predictions are equal. The second view (the weak one) is the target and is detached.
    """

    def forward(self, logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
        """MSE between ``sigmoid(logits)`` and ``sigmoid(target_logits).detach()``.

        Raises:
            ValueError: when the two predictions differ in shape (views must share their geometry).
        """
        if logits.shape != target_logits.shape:
            raise ValueError(f"views must share their geometry, got {tuple(logits.shape)} and {target_logits.shape}")
        return F.mse_loss(torch.sigmoid(logits), torch.sigmoid(target_logits).detach())


class MultiMixLoss(nn.Module):
    """The MultiMix objective over the four streams of a batch; see the module docstring.

    Args:
        tasks: the declared tasks: exactly one classification task (one group) and one segmentation task. The
            classification task's loss and weight apply through ``MultiDatasetLoss``; the segmentation task's
            ``loss`` (``dice`` or ``dice_ce``, on sigmoid outputs) and ``weight`` give the mask term.
        pseudo_label_weight: weight of the FixMatch term (MultiMix: 0.25).
        threshold: FixMatch confidence threshold (MultiMix: 0.7).
        consistency_weight: weight of the unlabeled-mask consistency term.

    Attributes:
        last_terms: the unweighted value of every term present in the last batch, plus the share of confident
            pseudo-labels, as floats (for logging).

    Raises:
        ValueError: when the tasks are not one classification task and one segmentation task.
    """

    def __init__(
        self,
        tasks: TaskSet | Iterable[Task | Mapping[str, Any]],
        pseudo_label_weight: float = 0.25,
        threshold: float = 0.7,
        consistency_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.tasks = tasks if isinstance(tasks, TaskSet) else TaskSet(tasks)
        if len(self.tasks) != 1 or self.tasks.tasks[0].kind != "classification" or self.tasks.tasks[0].groups != 1:
            raise ValueError(f"MultiMix needs one single-group classification task, got {self.tasks}")
        if len(self.tasks.segmentation_tasks) != 1:
            raise ValueError(f"MultiMix needs one segmentation task, got {len(self.tasks.segmentation_tasks)}")
        self.classification_task = self.tasks.tasks[0]
        self.segmentation_task = self.tasks.segmentation_tasks[0]
        self.classification = MultiDatasetLoss(self.tasks)
        dice = {"dice": DiceLoss, "dice_ce": DiceCELoss}[self.segmentation_task.loss]
        self.segmentation = dice(sigmoid=True)
        self.pseudo_label = PseudoLabelLoss(threshold)
        self.consistency = SegmentationConsistencyLoss()
        self.pseudo_label_weight = float(pseudo_label_weight)
        self.consistency_weight = float(consistency_weight)
        self.last_terms: dict[str, float] = {}

    def forward(
        self,
        class_logits: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        mask_logits: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        weak_class_logits: torch.Tensor | None = None,
        strong_class_logits: torch.Tensor | None = None,
        weak_mask_logits: torch.Tensor | None = None,
        strong_mask_logits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Weighted sum of the terms whose inputs are given.

        Args:
            class_logits: (B, num_classes) logits of the labeled classification images.
            labels: (B, 1) packed class labels of those images (NaN where missing, see ``PackLabelsd``).
            mask_logits: (B, C, *spatial) mask logits of the labeled segmentation images.
            masks: (B, C, *spatial) their binary masks.
            weak_class_logits: logits of the weak views of the unlabeled classification images.
            strong_class_logits: logits of their strong views.
            weak_mask_logits: mask logits of the weak views of the unlabeled segmentation images.
            strong_mask_logits: mask logits of their strong views (same geometry).

        Returns:
            A scalar.

        Raises:
            ValueError: when no term can be computed, or a term gets only one of its two inputs.
        """
        pairs = {
            self.classification_task.name: (class_logits, labels),
            self.segmentation_task.name: (mask_logits, masks),
            PSEUDO_LABEL: (strong_class_logits, weak_class_logits),
            CONSISTENCY: (strong_mask_logits, weak_mask_logits),
        }
        half = [name for name, (a, b) in pairs.items() if (a is None) != (b is None)]
        if half:
            raise ValueError(f"terms {half} got only one of their two inputs")
        terms: dict[str, torch.Tensor] = {}
        if class_logits is not None:
            weighted = self.classification(class_logits, labels)
            terms[self.classification_task.name] = weighted
            self.last_terms = dict(self.classification.last_task_losses)
        else:
            self.last_terms = {}
        if mask_logits is not None:
            dice = self.segmentation(mask_logits, masks)
            terms[self.segmentation_task.name] = self.segmentation_task.weight * dice
            self.last_terms[self.segmentation_task.name] = float(dice.detach())
        if strong_class_logits is not None:
            value = self.pseudo_label(weak_class_logits, strong_class_logits)
            terms[PSEUDO_LABEL] = self.pseudo_label_weight * value
            self.last_terms[PSEUDO_LABEL] = float(value.detach())
            self.last_terms["confident_fraction"] = self.pseudo_label.last_confident_fraction
        if strong_mask_logits is not None:
            value = self.consistency(strong_mask_logits, weak_mask_logits)
            terms[CONSISTENCY] = self.consistency_weight * value
            self.last_terms[CONSISTENCY] = float(value.detach())
        if not terms:
            raise ValueError("no loss term has inputs: the batch holds no stream")
        return torch.stack(list(terms.values())).sum()
