"""RandAugment built from MONAI transforms: the *strong* view of FixMatch-style semi-supervised learning.

FixMatch (Sohn et al., NeurIPS 2020), and MultiMix after it, pseudo-label a *weakly* augmented unlabeled image and
train the network to predict that label on a *strongly* augmented copy. Weak is flip + random crop (MONAI's
``RandFlipd``, ``BorderPadd`` and ``RandSpatialCropd`` in the config); strong is weak followed by RandAugment
(Cubuk et al., 2020): ``num_ops`` operations drawn at random from a pool and applied in sequence at a random strength
up to ``magnitude``. Every operation is a MONAI transform, so images stay channel-first MetaTensors and the same code
serves 2-D and 3-D images (in-plane operations act on the first two spatial axes).

Two pools: ``ALL_OPS`` for classification, where geometry may change, and ``INTENSITY_OPS`` for segmentation
consistency, where the two views must keep the same geometry so that their mask predictions can be compared pixel
by pixel.

Magnitude follows FixMatch's RandAugment: a scale of 0-10 (``MAX_MAGNITUDE``) on which 10 is each operation's
strongest setting; each application draws its strength uniformly in ``[0, magnitude]``. Images are expected in
[0, 1] (the pipeline scales them before augmentation) and are clipped back into it.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import (
    Affine,
    GaussianSharpen,
    GaussianSmooth,
    HistogramNormalize,
    Identity,
    MapTransform,
    RandCoarseDropout,
    RandGaussianNoise,
    Randomizable,
    RandomizableTransform,
    ScaleIntensity,
    ScaleIntensityRange,
    Transform,
)

__all__ = ["ALL_OPS", "GEOMETRIC_OPS", "INTENSITY_OPS", "MAX_MAGNITUDE", "RandAugment", "RandAugmentd", "make_op"]

MAX_MAGNITUDE = 10.0
INTENSITY_OPS = (
    "identity",
    "autocontrast",
    "brightness",
    "contrast",
    "equalize",
    "sharpness",
    "blur",
    "noise",
    "cutout",
)
GEOMETRIC_OPS = ("rotate", "shear", "translate")
ALL_OPS = INTENSITY_OPS + GEOMETRIC_OPS


def _shear_index(i: int, j: int, spatial_dims: int) -> int:
    """Position of the coefficient shearing axis ``i`` along axis ``j`` in MONAI's ``shear_params`` order."""
    return i * (spatial_dims - 1) + (j if j < i else j - 1)


def make_op(name: str, strength: float, sign: float, spatial_shape: Sequence[int]) -> Transform:
    """One RandAugment operation as a MONAI array transform.

    Args:
        name: an operation of ``ALL_OPS``.
        strength: in [0, 1]; 1 is the operation's strongest setting.
        sign: +1 or -1, the direction of symmetric operations (brighter or darker, left or right, ...).
        spatial_shape: the image's spatial shape (translations and cutouts are relative to it).

    Returns:
        The transform; ``noise`` and ``cutout`` are MONAI randomizable transforms that the caller seeds.

    Raises:
        ValueError: for an unknown operation.
    """
    dims = len(spatial_shape)
    size = min(spatial_shape[:2])
    if name == "identity":
        return Identity()
    if name == "autocontrast":  # stretch the image's own range to [0, 1]
        return ScaleIntensity(minv=0.0, maxv=1.0)
    if name == "brightness":  # multiply by 1 +- 0.9
        return ScaleIntensity(minv=None, maxv=None, factor=sign * 0.9 * strength)
    if name == "contrast":  # linear contrast about mid-grey, factor 1/(1 + 0.9 s) .. 1 + 0.9 s
        factor = (1.0 + 0.9 * strength) ** sign
        return ScaleIntensityRange(a_min=0.5 - 0.5 / factor, a_max=0.5 + 0.5 / factor, b_min=0.0, b_max=1.0)
    if name == "equalize":
        return HistogramNormalize(num_bins=256, min=0, max=1)
    if name == "sharpness":  # unsharp masking of a lightly blurred copy, up to 10x the detail
        return GaussianSharpen(sigma1=0.5, sigma2=1.0, alpha=1.0 + 9.0 * strength)
    if name == "blur":  # up to 1.5% of the image size
        return GaussianSmooth(sigma=max(0.015 * size * strength, 1e-3))
    if name == "noise":
        return RandGaussianNoise(prob=1.0, std=0.1 * strength, sample_std=False)
    if name == "cutout":  # one mid-grey square up to half the image size, as FixMatch's Cutout
        side = max(1, round(0.5 * size * strength))
        return RandCoarseDropout(holes=1, spatial_size=[side] * 2 + [-1] * (dims - 2), fill_value=0.5, prob=1.0)
    if name == "rotate":  # up to 30 degrees in the plane of the first two axes
        angle = sign * math.radians(30.0) * strength
        return Affine(rotate_params=angle if dims == 2 else (0.0, 0.0, angle), padding_mode="zeros", image_only=True)
    if name == "shear":  # up to 0.3, of axis 0 along 1 or of axis 1 along 0 (the sign picks which)
        params = [0.0] * (dims * (dims - 1))
        params[_shear_index(0, 1, dims) if sign > 0 else _shear_index(1, 0, dims)] = 0.3 * strength
        return Affine(shear_params=params, padding_mode="zeros", image_only=True)
    if name == "translate":  # up to 30% of the size, along axis 0 or 1 (the sign picks which)
        params = [0.0] * dims
        params[0 if sign > 0 else 1] = 0.3 * spatial_shape[0 if sign > 0 else 1] * strength
        return Affine(translate_params=params, padding_mode="zeros", image_only=True)
    raise ValueError(f"unknown RandAugment operation {name!r}; known: {ALL_OPS}")


class RandAugment(RandomizableTransform):
    """Apply ``num_ops`` operations drawn (with replacement) from ``ops``, each at a random strength and direction.

    Args:
        num_ops: operations per call (MultiMix, FixMatch: 2).
        magnitude: the strongest strength drawn, on the 0-10 scale (MultiMix, FixMatch: 10).
        ops: the pool, names from ``ALL_OPS``; ``INTENSITY_OPS`` keeps the geometry.

    Raises:
        ValueError: for an unknown operation, an empty pool, a negative ``num_ops`` or a magnitude outside 0-10.
    """

    def __init__(self, num_ops: int = 2, magnitude: float = 10.0, ops: Sequence[str] = ALL_OPS) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        unknown = [op for op in ops if op not in ALL_OPS]
        if unknown or not ops:
            raise ValueError(f"ops must be a non-empty subset of {ALL_OPS}, got {list(ops)}")
        if num_ops < 0 or not 0 <= magnitude <= MAX_MAGNITUDE:
            raise ValueError(f"need num_ops >= 0 and 0 <= magnitude <= {MAX_MAGNITUDE}, got {num_ops}, {magnitude}")
        self.num_ops = num_ops
        self.magnitude = float(magnitude)
        self.ops = tuple(ops)
        self._draws: list[tuple[str, float, float, int]] = []

    def randomize(self, data: Any = None) -> None:
        """Draw the operations, their strengths, directions and the seeds of the random operations."""
        self._draws = [
            (
                self.ops[self.R.randint(len(self.ops))],
                self.R.uniform(0.0, self.magnitude / MAX_MAGNITUDE),
                1.0 if self.R.rand() < 0.5 else -1.0,
                int(self.R.randint(2**31)),
            )
            for _ in range(self.num_ops)
        ]

    @property
    def last_ops(self) -> list[str]:
        """The operations drawn for the last call."""
        return [name for name, *_ in self._draws]

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        """Augment a channel-first image in [0, 1]; the result is clipped to [0, 1]."""
        if randomize:
            self.randomize()
        img = img.clone() if isinstance(img, torch.Tensor) else np.array(img)  # MONAI's cutout writes in place
        for name, strength, sign, seed in self._draws:
            op = make_op(name, strength, sign, img.shape[1:])
            if isinstance(op, Randomizable):
                op.set_random_state(seed=seed)
            img = op(img)
        return torch.clamp(img, 0.0, 1.0) if isinstance(img, torch.Tensor) else np.clip(img, 0.0, 1.0)


class RandAugmentd(Randomizable, MapTransform):
    """Dictionary wrapper of ``RandAugment``: the same draw for every key (images only, never masks).

    Args:
        keys: image keys to augment.
        num_ops: operations per call.
        magnitude: the strongest strength, on the 0-10 scale.
        ops: the operation pool.
        allow_missing_keys: do not raise for an absent key.
    """

    backend = RandAugment.backend

    def __init__(
        self,
        keys: KeysCollection,
        num_ops: int = 2,
        magnitude: float = 10.0,
        ops: Sequence[str] = ALL_OPS,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.augment = RandAugment(num_ops=num_ops, magnitude=magnitude, ops=ops)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandAugmentd:
        """Seed the wrapped transform (MONAI seeds every randomizable transform of a pipeline this way)."""
        super().set_random_state(seed, state)
        self.augment.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        """Draw one set of operations for all keys."""
        self.augment.randomize()

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        """Return a copy of ``data`` with every key augmented by the same operations."""
        d = dict(data)
        self.randomize()
        for key in self.key_iterator(d):
            d[key] = self.augment(d[key], randomize=False)
        return d
