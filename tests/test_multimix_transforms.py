"""RandAugment from MONAI transforms: seeded, drawn from its pool, in range, and geometry-preserving when asked."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor

from bundle.transforms.semi_supervised import (
    ALL_OPS,
    GEOMETRIC_OPS,
    INTENSITY_OPS,
    RandAugment,
    RandAugmentd,
    make_op,
)


def ramp(size: int = 24) -> MetaTensor:
    """A channel-first image in [0, 1] with structure everywhere (a ramp plus a bright square)."""
    image = torch.linspace(0.1, 0.6, size).repeat(size, 1)[None]
    image[:, 6:12, 4:14] = 0.9
    return MetaTensor(image)


@pytest.mark.parametrize("name", ALL_OPS)
def test_every_operation_keeps_the_shape_and_changes_the_image_unless_identity(name: str) -> None:
    image = ramp()
    op = make_op(name, strength=1.0, sign=1.0, spatial_shape=image.shape[1:])
    if hasattr(op, "set_random_state"):
        op.set_random_state(seed=0)
    out = torch.as_tensor(op(image.clone()))
    assert out.shape == image.shape
    assert torch.equal(out, image) == (name == "identity")


def test_draws_are_seeded_and_come_from_the_pool() -> None:
    image = ramp()
    first, second = RandAugment(num_ops=2, magnitude=10), RandAugment(num_ops=2, magnitude=10)
    first.set_random_state(seed=3)
    second.set_random_state(seed=3)
    for _ in range(5):
        a, b = first(image), second(image)
        torch.testing.assert_close(a, b)
        assert len(first.last_ops) == 2 and set(first.last_ops) <= set(ALL_OPS)
        assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    restricted = RandAugment(num_ops=3, ops=INTENSITY_OPS)
    restricted.set_random_state(seed=0)
    drawn = set()
    for _ in range(30):
        restricted(image)
        drawn |= set(restricted.last_ops)
    assert drawn <= set(INTENSITY_OPS) and not drawn & set(GEOMETRIC_OPS)


def test_the_input_is_never_modified_in_place() -> None:
    image = ramp()
    augment = RandAugment(num_ops=4, ops=("cutout", "noise"))
    augment.set_random_state(seed=0)
    before = image.clone()
    augment(image)
    assert torch.equal(image, before)


def test_intensity_operations_keep_the_geometry() -> None:
    """A zero-magnitude geometric op is the identity; intensity ops at full strength never move the square."""
    image = ramp()
    for name in INTENSITY_OPS:
        if name == "cutout":  # occludes a region, does not move one
            continue
        op = make_op(name, strength=1.0, sign=1.0, spatial_shape=image.shape[1:])
        if hasattr(op, "set_random_state"):
            op.set_random_state(seed=0)
        out = torch.as_tensor(op(image.clone()))[0]
        inside, outside = out[7:11, 6:12].mean(), out[16:, 6:12].mean()
        assert inside > outside, name
    for name in GEOMETRIC_OPS:
        out = torch.as_tensor(make_op(name, 0.0, 1.0, image.shape[1:])(image.clone()))
        torch.testing.assert_close(out, image.as_tensor(), atol=1e-5, rtol=0)


def test_dictionary_version_applies_one_draw_to_every_key() -> None:
    augment = RandAugmentd(keys=["a", "b"], num_ops=2, magnitude=10)
    augment.set_random_state(seed=1)
    out = augment({"a": ramp(), "b": ramp(), "mask": ramp()})
    torch.testing.assert_close(out["a"], out["b"])
    assert torch.equal(out["mask"], ramp())
    with pytest.raises(ValueError):
        RandAugment(ops=("rotate", "mirror"))
    with pytest.raises(ValueError):
        RandAugment(magnitude=11)
