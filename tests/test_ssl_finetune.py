"""Joint classification + segmentation supervision: missing masks are left out, Dice is pooled."""

from __future__ import annotations

import math

import pytest
import torch

from bundle.ssl.finetune import ClassificationSegmentationLoss, ClassificationSegmentationPrepareBatch, OpacityDice

TASKS = [{"name": "appearance", "classes": ["negative", "typical", "indeterminate", "atypical"],
          "target": "covid_appearance"}]  # fmt: skip


def _batch() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    pred = {"pred": torch.randn(3, 4, requires_grad=True), "seg": torch.randn(3, 1, 8, 8, requires_grad=True)}
    seg = torch.zeros(3, 1, 8, 8)
    seg[0, :, 2:5, 2:5] = 1.0
    seg[2] = math.nan  # no segmentation label
    return pred, {"label": torch.tensor([[1.0], [0.0], [2.0]]), "seg": seg}


def test_images_without_a_mask_do_not_reach_the_segmentation_term() -> None:
    pred, target = _batch()
    loss = ClassificationSegmentationLoss(TASKS, seg_weight=2.0)
    total = loss(pred, target)
    total.backward()
    assert torch.isfinite(total)
    assert torch.all(pred["seg"].grad[2] == 0) and pred["seg"].grad[:2].abs().sum() > 0
    classification = loss.classification(pred["pred"], target["label"])
    segmentation = loss.segmentation(pred["seg"][:2], target["seg"][:2])
    torch.testing.assert_close(total, classification + 2.0 * segmentation)


def test_single_task_and_maskless_batches() -> None:
    pred, target = _batch()
    loss = ClassificationSegmentationLoss(TASKS)
    only_class = loss({"pred": pred["pred"]}, target)
    torch.testing.assert_close(only_class, loss.classification(pred["pred"], target["label"]))
    target["seg"][:] = math.nan
    total = loss(pred, target)
    total.backward()
    torch.testing.assert_close(total, only_class)
    assert pred["seg"].grad is not None and torch.all(pred["seg"].grad == 0)  # in the graph, zero gradient
    with pytest.raises(ValueError, match="seg"):
        loss(pred, {"label": target["label"]})


def test_opacity_dice_is_pooled_over_labelled_images() -> None:
    pred, target = _batch()
    metric = OpacityDice(output_transform=lambda output: output)
    logits = torch.where(target["seg"].nan_to_num() > 0, 5.0, -5.0)
    logits[1, :, 0, 0] = 5.0  # one false positive pixel on the negative image
    metric.update((logits, target["seg"]))
    assert metric.compute() == pytest.approx(2 * 9 / (10 + 9))
    metric.reset()
    metric.update((logits, torch.full_like(target["seg"], math.nan)))
    assert math.isnan(metric.compute())
    image, targets = ClassificationSegmentationPrepareBatch()({"image": torch.zeros(3, 3, 8, 8), **target})
    assert image.shape == (3, 3, 8, 8) and set(targets) == {"label", "seg"}
