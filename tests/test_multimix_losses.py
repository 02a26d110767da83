"""MultiMix loss terms: FixMatch pseudo-labels, a segmentation consistency that works, and their combination."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bundle.losses.multidataset import MultiDatasetLoss
from bundle.losses.semi_supervised import MultiMixLoss, PseudoLabelLoss, SegmentationConsistencyLoss, pseudo_labels
from bundle.tasks import TaskSet
from bundle.transforms.labels import PackLabelsd

TASKS = [
    {"name": "pneumonia", "kind": "classification", "classes": ["NORMAL", "PNEUMONIA"], "target": "pneumonia"},
    {"name": "lungs", "kind": "segmentation", "channels": ["lung"], "target": "mask", "loss": "dice", "weight": 5.0},
]


def logits_of(probabilities: list[list[float]]) -> torch.Tensor:
    """Logits whose softmax is exactly the given probabilities (log-probabilities)."""
    return torch.tensor(probabilities).log()


def test_pseudo_labels_only_above_the_threshold() -> None:
    weak = logits_of([[0.9, 0.1], [0.31, 0.69], [0.29, 0.71], [0.5, 0.5], [0.05, 0.95], [0.65, 0.35]])
    labels, keep = pseudo_labels(weak, threshold=0.7)
    assert keep.tolist() == [True, False, True, False, True, False]
    assert labels[keep].tolist() == [0, 1, 1]
    _, keep_all = pseudo_labels(weak, threshold=0.0)
    assert keep_all.all()
    _, keep_none = pseudo_labels(weak, threshold=1.0)
    assert not keep_none.any()


def test_pseudo_label_loss_is_the_masked_cross_entropy_over_the_whole_unlabeled_batch() -> None:
    weak = logits_of([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]])
    strong = torch.tensor([[0.3, -0.2], [1.0, 0.0], [-0.5, 0.4]], requires_grad=True)
    loss = PseudoLabelLoss(threshold=0.7)(weak, strong)
    expected = (F.cross_entropy(strong[0:1], torch.tensor([0])) + F.cross_entropy(strong[2:3], torch.tensor([1]))) / 3
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert strong.grad[1].abs().sum() == 0  # the unconfident sample teaches nothing
    nothing = PseudoLabelLoss(threshold=0.7)(logits_of([[0.5, 0.5]]), torch.zeros(1, 2, requires_grad=True))
    assert nothing.item() == 0.0 and nothing.requires_grad


def test_segmentation_consistency_is_zero_exactly_on_equal_predictions() -> None:
    consistency = SegmentationConsistencyLoss()
    logits = torch.randn(2, 1, 8, 8)
    assert consistency(logits, logits.clone()).item() == 0.0
    other = logits + torch.randn(2, 1, 8, 8)
    value = consistency(other.requires_grad_(True), logits)
    assert value.item() > 0
    torch.testing.assert_close(value, F.mse_loss(torch.sigmoid(other), torch.sigmoid(logits)))
    # one mask channel: a softmax over channels (the public MultiMix code) would give 0 here; sigmoid does not
    assert F.mse_loss(torch.softmax(other, 1), torch.softmax(logits, 1)).item() == 0.0
    target = logits.clone().requires_grad_(True)
    consistency(other, target).backward()
    assert target.grad is None  # the weak view is the target
    with pytest.raises(ValueError):
        consistency(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 4, 4))


def test_multimix_loss_is_the_weighted_sum_of_the_terms_present() -> None:
    torch.manual_seed(0)
    loss = MultiMixLoss(TASKS, pseudo_label_weight=0.25, threshold=0.7, consistency_weight=2.0)
    inputs = {
        "class_logits": torch.randn(4, 2),
        "labels": torch.tensor([[0.0], [1.0], [1.0], [0.0]]),
        "mask_logits": torch.randn(3, 1, 8, 8),
        "masks": (torch.rand(3, 1, 8, 8) > 0.5).float(),
        "weak_class_logits": logits_of([[0.9, 0.1], [0.5, 0.5]]),
        "strong_class_logits": torch.randn(2, 2),
        "weak_mask_logits": torch.randn(2, 1, 8, 8),
        "strong_mask_logits": torch.randn(2, 1, 8, 8),
    }
    total = loss(**inputs)
    ce = F.cross_entropy(inputs["class_logits"], inputs["labels"][:, 0].long())
    dice = loss.segmentation(inputs["mask_logits"], inputs["masks"])
    pl = PseudoLabelLoss(0.7)(inputs["weak_class_logits"], inputs["strong_class_logits"])
    con = SegmentationConsistencyLoss()(inputs["strong_mask_logits"], inputs["weak_mask_logits"])
    torch.testing.assert_close(total, ce + 5.0 * dice + 0.25 * pl + 2.0 * con)
    assert set(loss.last_terms) == {"pneumonia", "lungs", "pseudo_label", "confident_fraction", "consistency"}
    assert loss.last_terms["confident_fraction"] == 0.5

    only_segmentation = loss(mask_logits=inputs["mask_logits"], masks=inputs["masks"])
    torch.testing.assert_close(only_segmentation, 5.0 * dice)
    assert set(loss.last_terms) == {"lungs"}
    with pytest.raises(ValueError, match="no loss term"):
        loss()
    with pytest.raises(ValueError, match="only one"):
        loss(class_logits=inputs["class_logits"])


def test_multimix_loss_needs_one_classification_and_one_segmentation_task() -> None:
    with pytest.raises(ValueError):
        MultiMixLoss(TASKS[:1])
    with pytest.raises(ValueError):
        MultiMixLoss([TASKS[0], {**TASKS[0], "name": "other"}, TASKS[1]])


def test_segmentation_tasks_stay_outside_the_vector_layout() -> None:
    tasks = TaskSet(TASKS)
    assert tasks.names == ["pneumonia"] and tasks.out_channels == 2 and tasks.label_size == 1
    assert [t.name for t in tasks.segmentation_tasks] == ["lungs"] and "lungs" in tasks
    lungs = tasks["lungs"]
    assert (lungs.out_channels, lungs.label_size, lungs.fields, lungs.channel_names) == (1, 0, (), ["lungs:lung"])
    assert TaskSet(tasks).segmentation_tasks[0].name == "lungs"
    packed = PackLabelsd(tasks)({"pneumonia": None, "image": "x.png"})["label"]
    assert packed.shape == (1,) and math.isnan(packed[0])
    value = MultiDatasetLoss(tasks)(torch.randn(2, 2), torch.tensor([[1.0], [math.nan]]))
    assert torch.isfinite(value)
    with pytest.raises(ValueError):
        TaskSet([{"name": "lungs", "kind": "segmentation", "channels": ["lung"], "loss": "ce"}])
    with pytest.raises(ValueError):
        TaskSet([{"name": "lungs", "kind": "segmentation", "classes": ["a", "b"]}])
