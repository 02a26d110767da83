"""Tests of the zone-aware horizontal flip (bundle.transforms.flip)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from bundle.transforms.flip import LungFlipd, RandLungFlipd, swap_brixia_zones


def _record(zones: list[int] | None = None) -> dict:
    image = torch.arange(12, dtype=torch.float32).reshape(1, 3, 4)
    return {"image": image, "lung_mask": (image > 5).to(torch.uint8), "brixia_zones": zones}


def test_swap_brixia_zones_types() -> None:
    assert swap_brixia_zones([1, 2, 3, 0, 0, 1]) == [0, 0, 1, 1, 2, 3]
    assert swap_brixia_zones((1, 2, 3, 0, 0, 1)) == (0, 0, 1, 1, 2, 3)
    np.testing.assert_array_equal(swap_brixia_zones(np.array([1, 2, 3, 0, 0, 1])), [0, 0, 1, 1, 2, 3])
    assert swap_brixia_zones(torch.tensor([1, 2, 3, 0, 0, 1])).tolist() == [0, 0, 1, 1, 2, 3]
    assert swap_brixia_zones(None) is None
    with pytest.raises(ValueError, match="six values"):
        swap_brixia_zones([1, 2, 3])


def test_lung_flipd_flips_width_and_swaps_zones() -> None:
    record = _record([1, 2, 3, 0, 0, 1])
    out = LungFlipd(keys=("image", "lung_mask"))(record)
    torch.testing.assert_close(out["image"].as_tensor(), torch.flip(record["image"], dims=(-1,)))
    torch.testing.assert_close(out["lung_mask"].as_tensor(), torch.flip(record["lung_mask"], dims=(-1,)))
    assert out["brixia_zones"] == [0, 0, 1, 1, 2, 3]
    assert record["brixia_zones"] == [1, 2, 3, 0, 0, 1], "the input record must not be modified"


def test_lung_flipd_none_and_missing_zones() -> None:
    assert LungFlipd()(_record(None))["brixia_zones"] is None
    record = _record()
    del record["brixia_zones"]
    assert "brixia_zones" not in LungFlipd()(record)


def test_lung_flipd_inverse_restores_record() -> None:
    flip = LungFlipd(keys=("image",))
    record = _record([1, 2, 3, 0, 0, 1])
    record["image"] = MetaTensor(record["image"])
    restored = flip.inverse(flip(record))
    torch.testing.assert_close(restored["image"].as_tensor(), record["image"].as_tensor())
    assert restored["brixia_zones"] == [1, 2, 3, 0, 0, 1]


@pytest.mark.parametrize(("prob", "expect_flip"), [(0.0, False), (1.0, True)])
def test_rand_lung_flipd_prob_extremes(prob: float, expect_flip: bool) -> None:
    flip = RandLungFlipd(keys=("image",), prob=prob).set_random_state(0)
    record = _record([1, 2, 3, 0, 0, 1])
    for _ in range(20):
        out = flip(record)
        expected = torch.flip(record["image"], dims=(-1,)) if expect_flip else record["image"]
        torch.testing.assert_close(torch.as_tensor(out["image"]), expected)
        assert out["brixia_zones"] == ([0, 0, 1, 1, 2, 3] if expect_flip else [1, 2, 3, 0, 0, 1])


def _decisions(seed: int, n: int = 64) -> list[bool]:
    flip = Compose([RandLungFlipd(keys=("image",), prob=0.5)]).set_random_state(seed)
    record = _record([1, 2, 3, 0, 0, 1])
    return [flip(record)["brixia_zones"] == [0, 0, 1, 1, 2, 3] for _ in range(n)]


def test_rand_lung_flipd_reproducible_and_image_follows_zones() -> None:
    assert _decisions(7) == _decisions(7)
    assert _decisions(7) != _decisions(8)
    assert 10 < sum(_decisions(7)) < 54
    flip = RandLungFlipd(keys=("image",), prob=0.5).set_random_state(3)
    record = _record([1, 2, 3, 0, 0, 1])
    for _ in range(20):
        out = flip(record)
        flipped = out["brixia_zones"] == [0, 0, 1, 1, 2, 3]
        expected = torch.flip(record["image"], dims=(-1,)) if flipped else record["image"]
        torch.testing.assert_close(torch.as_tensor(out["image"]), expected)
