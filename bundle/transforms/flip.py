"""Horizontal flip of a chest X-ray that keeps the Brixia zone labels true to the image.

A left-right flip moves the patient's right lung to where the left lung was. Brixia zones A, B, C (upper, middle,
lower) belong to the right lung and D, E, F to the left one, so after a flip the score drawn for zone A describes what
is now seen in zone D. The MDMT public code flips images without touching the labels, which silently corrupts every
per-lung and per-zone target (methods.md, section 1, NOTE); these transforms swap A<->D, B<->E, C<->F together with
the pixels. Per-lung labels derived later (``PackLabelsd``) then follow automatically, and the global score, a sum over
the six zones, is unchanged.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import Flipd, MapTransform, RandomizableTransform

__all__ = ["BRIXIA_FLIP_ORDER", "LungFlipd", "RandLungFlipd", "swap_brixia_zones"]

#: Zone order after a horizontal flip: the new zone A is the old D, ..., the new F is the old C.
BRIXIA_FLIP_ORDER: tuple[int, ...] = (3, 4, 5, 0, 1, 2)


def swap_brixia_zones(zones: Sequence[Any] | np.ndarray | torch.Tensor | None) -> Any:
    """Swap the right-lung zones A, B, C with the left-lung zones D, E, F.

    Args:
        zones: six per-zone values in the order A..F (a list, tuple, numpy array or tensor), or ``None`` when the
            record has no severity label.

    Returns:
        The zones in the order D, E, F, A, B, C, with the input's container type; ``None`` for ``None``.

    Raises:
        ValueError: if ``zones`` does not hold exactly six values.
    """
    if zones is None:
        return None
    if len(zones) != len(BRIXIA_FLIP_ORDER):
        raise ValueError(f"Brixia zones must hold six values (A..F), got {len(zones)}: {zones!r}.")
    if isinstance(zones, (np.ndarray, torch.Tensor)):
        return zones[list(BRIXIA_FLIP_ORDER)]
    swapped = [zones[i] for i in BRIXIA_FLIP_ORDER]
    return tuple(swapped) if isinstance(zones, tuple) else swapped


class LungFlipd(Flipd):
    """Flip images left-right (along W, the last spatial axis) and swap the Brixia zones of the record.

    Every key in ``keys`` (image, lung mask, ...) is flipped with :class:`monai.transforms.Flipd`, which also updates
    the MetaTensor affine; ``zones_key``, when present, is swapped with :func:`swap_brixia_zones` (``None`` stays
    ``None``). A record without ``zones_key`` (a dataset that has no zones at all) is left as it is.

    Args:
        keys: keys of the channel-first images to flip.
        zones_key: key of the six Brixia zone scores A..F.
        allow_missing_keys: don't raise an exception if one of ``keys`` is missing.
    """

    def __init__(
        self,
        keys: KeysCollection = ("image",),
        zones_key: str = "brixia_zones",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys=keys, spatial_axis=-1, allow_missing_keys=allow_missing_keys)
        self.zones_key = zones_key

    def __call__(self, data: Mapping[Hashable, Any], lazy: bool | None = None) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with the images flipped and the zones swapped."""
        d = super().__call__(data, lazy=lazy)
        if self.zones_key in d:
            d[self.zones_key] = swap_brixia_zones(d[self.zones_key])
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Undo the flip: :class:`~monai.transforms.Flipd`'s inverse for the images, and swap the zones back."""
        d = super().inverse(data)
        if self.zones_key in d:
            d[self.zones_key] = swap_brixia_zones(d[self.zones_key])
        return d


class RandLungFlipd(RandomizableTransform, MapTransform):
    """With probability ``prob``, apply :class:`LungFlipd`: a horizontal flip that keeps the zone labels true.

    The single random decision per call is drawn from the transform's own random state, so
    ``set_random_state(seed)`` (or MONAI's ``Compose.set_random_state`` / ``set_determinism``) makes the flips
    reproducible, and image, mask and zones are always flipped together.

    Args:
        keys: keys of the channel-first images to flip (e.g. ``("image", "lung_mask")``).
        zones_key: key of the six Brixia zone scores A..F.
        prob: probability of flipping.
        allow_missing_keys: don't raise an exception if one of ``keys`` is missing.
    """

    def __init__(
        self,
        keys: KeysCollection = ("image",),
        zones_key: str = "brixia_zones",
        prob: float = 0.5,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.flipper = LungFlipd(keys=keys, zones_key=zones_key, allow_missing_keys=allow_missing_keys)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandLungFlipd:
        """Seed the flip decisions; returns ``self`` for chaining."""
        super().set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data``, flipped (images and zones) with probability ``prob``."""
        self.randomize(None)
        return self.flipper(data) if self._do_transform else dict(data)
