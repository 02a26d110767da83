"""Inpainting pre-training: hide random regions of a radiograph and reconstruct them from the rest.

To fill a hidden patch of lung with plausible anatomy (a rib crossing it, the edge of the heart, vessel markings)
the encoder has to represent the image's structure, without any label. The pieces, MONAI style:

- :class:`RandRegionMask` / :class:`RandRegionMaskd`: random rectangles covering at least a given fraction of the
  image, filled with a constant; the dictionary version also writes the mask (1 = hidden);
- :class:`InpaintingNet`: a registry backbone with a light bottleneck decoder (deepest features only, no skip
  connections, so nothing can be copied around the encoder);
- :class:`MaskedReconstructionLoss`: L1 (or MSE) over the hidden pixels only; visible pixels carry no loss.

The training label is the original image with the mask appended as a last channel (``ConcatItemsd``), so MONAI's
default batch preparation and ``SupervisedTrainer`` work unchanged. After pre-training only the backbone is kept
(``bundle.ssl.export.BackboneExport``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import convert_to_dst_type, ensure_tuple_rep
from torch import nn

from bundle.networks.backbones import build_backbone
from bundle.networks.segmentation import FeaturePyramid, UNetDecoder

__all__ = ["InpaintingNet", "MaskedReconstructionLoss", "RandRegionMask", "RandRegionMaskd"]


class RandRegionMask(RandomizableTransform):
    """Draw a mask of random axis-aligned boxes covering at least ``mask_fraction`` of the image.

    Boxes are added one at a time, each side uniform in ``box_size`` (fractions of the image side) and the position
    uniform inside the image, until the union covers ``mask_fraction`` of the pixels or ``max_boxes`` are drawn. The
    covered fraction is therefore at least ``mask_fraction`` (unless ``max_boxes`` runs out first) and exceeds it by
    less than one box.

    Args:
        mask_fraction: the fraction of pixels to hide, in (0, 1).
        box_size: (min, max) side of a box as a fraction of the image side.
        max_boxes: the most boxes drawn per image.
        prob: probability of masking at all (otherwise the mask is empty).

    Raises:
        ValueError: for a fraction outside (0, 1) or box sizes outside (0, 1].
    """

    def __init__(
        self,
        mask_fraction: float = 0.25,
        box_size: Sequence[float] = (0.1, 0.3),
        max_boxes: int = 50,
        prob: float = 1.0,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        low, high = (float(v) for v in box_size)
        if not 0.0 < mask_fraction < 1.0:
            raise ValueError(f"mask_fraction must be in (0, 1), got {mask_fraction}")
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"box_size must be 0 < min <= max <= 1, got {box_size}")
        self.mask_fraction = mask_fraction
        self.box_size = (low, high)
        self.max_boxes = max_boxes

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> torch.Tensor:
        """A float mask (1, *spatial) of ``img`` (C, *spatial): 1 where hidden, 0 where visible."""
        if randomize:
            self.randomize(None)
        spatial = tuple(img.shape[1:])
        mask = torch.zeros((1, *spatial), dtype=torch.float32)
        if not self._do_transform:
            return mask
        sides = np.asarray(spatial)
        total = float(np.prod(sides))
        for _ in range(self.max_boxes):
            size = np.maximum(1, np.round(self.R.uniform(*self.box_size, size=len(sides)) * sides)).astype(int)
            start = (self.R.uniform(0.0, 1.0, size=len(sides)) * (sides - size + 1)).astype(int)
            mask[(0, *(slice(s, s + n) for s, n in zip(start, size, strict=True)))] = 1.0
            if float(mask.sum()) >= self.mask_fraction * total:
                break
        return mask


class RandRegionMaskd(RandomizableTransform, MapTransform):
    """Dictionary wrapper of :class:`RandRegionMask`: hide the boxes in the image and write the mask.

    Args:
        keys: the image key(s); each gets its own mask.
        mask_key: key(s) the masks are written to, one per image key.
        fill_value: the value of hidden pixels (0 is the dataset mean after the bundle's normalisation).
        mask_fraction: see :class:`RandRegionMask`.
        box_size: see :class:`RandRegionMask`.
        max_boxes: see :class:`RandRegionMask`.
        prob: see :class:`RandRegionMask`.
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        mask_key: str | Sequence[str] = "mask",
        fill_value: float = 0.0,
        mask_fraction: float = 0.25,
        box_size: Sequence[float] = (0.1, 0.3),
        max_boxes: int = 50,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, 1.0)
        self.mask_keys = ensure_tuple_rep(mask_key, len(self.keys))
        self.fill_value = fill_value
        self.masker = RandRegionMask(mask_fraction, box_size, max_boxes, prob)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandRegionMaskd:
        """Seed the array transform too."""
        super().set_random_state(seed, state)
        self.masker.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with each image's boxes set to ``fill_value`` and its mask under ``mask_key``."""
        d = dict(data)
        for key, mask_key in self.key_iterator(d, self.mask_keys):
            image = d[key]
            mask = self.masker(image)
            hidden = convert_to_dst_type(mask.bool(), dst=image, dtype=torch.bool)[0]
            d[key] = image.masked_fill(hidden, self.fill_value)
            d[mask_key] = convert_to_dst_type(mask, dst=image)[0]  # same type (and meta) as the image
        return d


class MaskedReconstructionLoss(nn.Module):
    """Reconstruction error over the hidden pixels only.

    ``label`` is the original image with the mask (1 = hidden) as its last channel. The loss is the mean over the
    hidden pixels (all image channels) of the L1 or squared error; pixels that were visible contribute nothing to the
    value or the gradient, and a batch without hidden pixels gives an exact 0 that still depends on ``pred``.

    Args:
        loss: ``"l1"`` or ``"mse"``.
    """

    def __init__(self, loss: str = "l1") -> None:
        super().__init__()
        if loss not in ("l1", "mse"):
            raise ValueError(f"loss must be 'l1' or 'mse', got {loss!r}")
        self.loss = loss

    def forward(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Mean error of ``pred`` (B, C, *spatial) on the hidden pixels of ``label`` (B, C + 1, *spatial).

        Raises:
            ValueError: when ``label`` does not have one channel more than ``pred``.
        """
        if label.shape[1] != pred.shape[1] + 1 or label.shape[2:] != pred.shape[2:]:
            shapes = f"pred {tuple(pred.shape)}, label {tuple(label.shape)}"
            raise ValueError(f"label must be the image plus a mask channel: {shapes}")
        target, mask = label[:, :-1], label[:, -1:].to(pred.dtype)
        error = (pred - target).abs() if self.loss == "l1" else (pred - target) ** 2
        hidden = mask.sum() * pred.shape[1]
        return (error * mask).sum() / hidden.clamp_min(1.0)


class InpaintingNet(nn.Module):
    """A registry backbone with a light bottleneck decoder that reconstructs the whole image.

    Args:
        backbone: a name in ``bundle.networks.BACKBONES``.
        in_channels: image channels; the reconstruction has as many.
        spatial_dims: 2 or 3.
        backbone_kwargs: extra arguments of the registered backbone.
        decoder_channels: decoder width(s), see ``bundle.networks.segmentation.UNetDecoder``.
        image_size: an input size the backbone accepts, for the feature-pyramid probe.

    Attributes:
        backbone: the encoder whose weights are exported.
    """

    def __init__(
        self,
        backbone: str,
        in_channels: int = 3,
        spatial_dims: int = 2,
        backbone_kwargs: Mapping[str, Any] | None = None,
        decoder_channels: int | Sequence[int] = 32,
        image_size: int = 64,
    ) -> None:
        super().__init__()
        self.backbone, _ = build_backbone(
            backbone, in_channels=in_channels, spatial_dims=spatial_dims, **(backbone_kwargs or {})
        )
        self.pyramid = FeaturePyramid(self.backbone, in_channels, spatial_dims, image_size)
        self.decoder = UNetDecoder(spatial_dims, self.pyramid.channels, in_channels, decoder_channels, skips=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """The reconstructed image (B, in_channels, *spatial)."""
        _, maps = self.pyramid(self.backbone, image)
        return self.decoder(maps, image.shape[2:])
