"""Bounding-box annotations -> a filled segmentation mask on the image's own pixel grid.

Opacity annotations of the SIIM-FISABIO-RSNA data are boxes ``[x, y, width, height]`` in pixels of the stored image
(x = column). Turned into a mask right after loading, before any spatial transform, the target then goes through the
lung crop, the resize and the augmentation exactly as the image does, so the two never disagree.

Missing labels are explicit: a record whose boxes are unknown (``None``) gets a mask filled with NaN, which the
multi-task loss reads as "no segmentation label" (an empty list is a known empty mask).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

__all__ = ["BoxesToMask", "BoxesToMaskd"]


class BoxesToMask(Transform):
    """Fill 2D boxes into a (1, H, W) float32 mask: 1 inside any box, 0 elsewhere, all NaN when boxes are unknown.

    Boxes are clipped to the image; a box covers every pixel it overlaps (``floor`` of its start, ``ceil`` of its end).
    """

    def __call__(self, boxes: Sequence[Sequence[float]] | None, spatial_shape: Sequence[int]) -> torch.Tensor:
        """Rasterise ``boxes`` (``[x, y, width, height]`` each, or ``None``) on an (H, W) grid.

        Raises:
            ValueError: when ``spatial_shape`` is not 2D or a box does not have four numbers.
        """
        if len(spatial_shape) != 2:
            raise ValueError(f"boxes are 2D: spatial_shape must be (H, W), got {tuple(spatial_shape)}")
        height, width = (int(s) for s in spatial_shape)
        if boxes is None:
            return torch.full((1, height, width), math.nan, dtype=torch.float32)
        mask = torch.zeros((1, height, width), dtype=torch.float32)
        for box in boxes:
            if len(box) != 4:
                raise ValueError(f"a box is [x, y, width, height], got {box!r}")
            x, y, w, h = (float(v) for v in box)
            rows = slice(max(math.floor(y), 0), min(math.ceil(y + h), height))
            cols = slice(max(math.floor(x), 0), min(math.ceil(x + w), width))
            mask[0, rows, cols] = 1.0
        return mask


class BoxesToMaskd(MapTransform):
    """Dictionary wrapper of :class:`BoxesToMask`: the mask of ``data[key]``'s boxes on the grid of ``ref_key``.

    The mask takes the reference image's affine (when it is a ``MetaTensor``), so MONAI's spatial transforms treat
    the two alike.

    Args:
        keys: the key holding the boxes (``opacity_boxes``).
        ref_key: the image whose height and width the mask takes.
        mask_key: where the mask is written.
        allow_missing_keys: skip records without the boxes key (e.g. an unlabelled pre-training datalist).
    """

    def __init__(
        self, keys: KeysCollection, ref_key: str = "image", mask_key: str = "seg", allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"BoxesToMaskd reads one boxes key, got {self.keys}")
        self.ref_key = ref_key
        self.mask_key = mask_key
        self.rasterise = BoxesToMask()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with the mask under ``mask_key``."""
        d = dict(data)
        for key in self.key_iterator(d):
            reference = d[self.ref_key]
            mask = self.rasterise(d[key], reference.shape[1:])
            d[self.mask_key] = MetaTensor(mask, affine=reference.affine) if isinstance(reference, MetaTensor) else mask
        return d
