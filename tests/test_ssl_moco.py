"""MoCo v2 pieces: the queue of negatives, the momentum update, InfoNCE on a case worked out by hand, the two views."""

from __future__ import annotations

import math

import pytest
import torch
from monai.transforms import Compose, RandSpatialCropd, Resized
from torch import nn

from bundle.ssl.moco import (
    InfoNCELoss,
    MoCo,
    MoCoQueue,
    RandViewsd,
    TwoViewPrepareBatch,
    contrastive_logits,
    momentum_update,
)


def test_queue_replaces_oldest_keys_and_wraps_around_at_the_end() -> None:
    queue = MoCoQueue(dim=2, size=5)
    first = torch.arange(6.0).reshape(3, 2)
    queue.enqueue(first)
    assert int(queue.pointer) == 3 and queue.size == 5
    torch.testing.assert_close(queue.keys[:3], first)
    second = 10 + torch.arange(8.0).reshape(4, 2)
    queue.enqueue(second)  # rows 3, 4, then wraps to 0, 1
    assert int(queue.pointer) == 2 and queue.keys.shape == (5, 2)
    torch.testing.assert_close(queue.keys[3:], second[:2])
    torch.testing.assert_close(queue.keys[:2], second[2:])
    torch.testing.assert_close(queue.keys[2], first[2])  # the only key left from the first batch


def test_queue_keeps_the_newest_keys_when_a_batch_is_larger_than_the_queue() -> None:
    queue = MoCoQueue(dim=1, size=3)
    queue.enqueue(torch.arange(7.0).reshape(7, 1))
    assert queue.keys[:, 0].tolist() == [4.0, 5.0, 6.0]
    assert int(queue.pointer) == 0  # the oldest of the kept keys is next to go


def test_queue_state_is_saved_with_the_network() -> None:
    queue = MoCoQueue(dim=2, size=4)
    queue.enqueue(torch.ones(3, 2))
    restored = MoCoQueue(dim=2, size=4)
    restored.load_state_dict(queue.state_dict())
    assert int(restored.pointer) == 3
    torch.testing.assert_close(restored.keys, queue.keys)


def test_momentum_update_is_the_exponential_moving_average_of_the_query_encoder() -> None:
    torch.manual_seed(0)
    key, query = nn.Linear(3, 2), nn.Linear(3, 2)
    before_key = [p.detach().clone() for p in key.parameters()]
    before_query = [p.detach().clone() for p in query.parameters()]
    momentum_update(key, query, 0.9)
    for k, k0, q0 in zip(key.parameters(), before_key, before_query, strict=True):
        torch.testing.assert_close(k.detach(), 0.9 * k0 + 0.1 * q0, rtol=0, atol=1e-7)
    for q, q0 in zip(query.parameters(), before_query, strict=True):
        assert torch.equal(q.detach(), q0)  # the query encoder is not touched
    momentum_update(key, query, 0.0)
    for k, q in zip(key.parameters(), query.parameters(), strict=True):
        assert torch.equal(k, q)
    with pytest.raises(ValueError, match="momentum"):
        momentum_update(key, query, 1.5)


def test_info_nce_matches_the_value_computed_by_hand() -> None:
    # Two queries, their keys and a queue of two negatives, all unit vectors; temperature 0.5.
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    key = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    logits = contrastive_logits(query, key, queue)
    torch.testing.assert_close(logits, torch.tensor([[1.0, 0.0, -1.0], [0.8, 1.0, 0.0]]))
    # sample 1: similarities / t = (2, 0, -2)   -> -log(e^2 / (e^2 + e^0 + e^-2)) = log(1 + e^-2 + e^-4)
    # sample 2: similarities / t = (1.6, 2, 0)  -> -1.6 + log(e^1.6 + e^2 + e^0)
    expected = (math.log(1 + math.exp(-2) + math.exp(-4)) + (-1.6 + math.log(math.exp(1.6) + math.exp(2) + 1))) / 2
    loss = InfoNCELoss(temperature=0.5)(logits)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_moco_forward_updates_key_encoder_and_queue_only_in_training() -> None:
    torch.manual_seed(0)
    moco = MoCo("resnet10", backbone_kwargs={"widen_factor": 0.25}, projection_dim=8, queue_size=6, momentum=0.5)
    key_before = moco.key_projection[0].weight.detach().clone()
    with torch.no_grad():
        moco.projection[0].weight.add_(1.0)  # make the query encoder differ so the update is visible
    views = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    logits = moco(*views)
    assert logits.shape == (4, 1 + 6)
    assert int(moco.queue.pointer) == 4
    expected = 0.5 * key_before + 0.5 * moco.projection[0].weight.detach()
    torch.testing.assert_close(moco.key_projection[0].weight.detach(), expected, rtol=0, atol=1e-6)
    InfoNCELoss()(logits).backward()
    assert moco.backbone.conv1.weight.grad is not None
    assert all(p.grad is None for p in moco.key_backbone.parameters())
    moco.eval()
    keys = moco.queue.keys.clone()
    moco(*views)
    assert int(moco.queue.pointer) == 4 and torch.equal(moco.queue.keys, keys)


def test_two_views_are_drawn_independently_from_one_image() -> None:
    crop = Compose([RandSpatialCropd("image", roi_size=(8, 8), random_size=False), Resized("image", (16, 16))])
    views = RandViewsd("image", transform=crop, names=("image", "image_2"))
    views.set_random_state(0)
    image = torch.arange(32 * 32, dtype=torch.float32).reshape(1, 32, 32)
    out = views({"image": image, "label": 1})
    assert out["image"].shape == out["image_2"].shape == (1, 16, 16)
    assert not torch.equal(out["image"], out["image_2"])
    again = RandViewsd("image", transform=crop, names=("image", "image_2")).set_random_state(0)({"image": image})
    torch.testing.assert_close(again["image"], out["image"])  # seeded through the wrapper
    batch = TwoViewPrepareBatch()({"image": out["image"][None], "image_2": out["image_2"][None]})
    query, target, (key,), kwargs = batch
    assert query.shape == key.shape == (1, 1, 16, 16) and target.tolist() == [0] and kwargs == {}
