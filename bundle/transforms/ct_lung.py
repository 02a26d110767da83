"""Unsupervised 3D lung segmentation of chest CT in HU (COVID-MTL), as an array transform and its dict wrapper.

No trained segmenter can be downloaded here and HUST-19 has no lung masks, so the lungs are found as COVID-MTL does,
from the physics of CT: lung parenchyma is far below soft tissue in HU. The steps (methods.md, section 3):

1. threshold at about -420 HU (air and aerated lung below it);
2. clear the in-plane border of every axial slice (the air around the patient touches it) and remove outside air;
3. keep the largest 3D component, and the second largest when it is lung-sized (the two lungs may not connect);
4. refine every axial slice on a 1 mm grid (the paper resamples the scan to 1 mm; here each slice is resampled on its
   own, so the refinement means the same whatever the scan's spacing, and the snake's alpha and beta keep the units
   the paper gives them): morphological closing (brings back vessels and lesions denser than the threshold), contour
   extraction, an active contour (snake: alpha 0.02, beta 20, 20 iterations) that smooths the outline across
   juxta-pleural lesions, hole filling, and the 2 largest regions;
5. a final 3D erosion and closing that removes one-voxel spurs and smooths between slices.

The axial axis is the last spatial axis, as after ``Orientationd(axcodes="RAS")`` (the bundle's CT pipeline).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type
from scipy import ndimage
from skimage.draw import polygon
from skimage.measure import find_contours
from skimage.morphology import disk
from skimage.segmentation import active_contour, clear_border

__all__ = ["CTLungMask", "CTLungMaskd", "dice"]

HU_DISPLAY = (-1000.0, 200.0)  # intensity range the snake's edge map is computed on


def _keep_largest(mask: np.ndarray, count: int, min_fraction: float) -> np.ndarray:
    """The ``count`` largest connected components of ``mask``, each at least ``min_fraction`` of the largest."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(sizes)[::-1][:count]
    keep = [i + 1 for i in order if sizes[i] >= min_fraction * sizes[order[0]]]
    return np.isin(labels, keep)


def _ball(radius_mm: float, spacing: Sequence[float]) -> np.ndarray | None:
    """An ellipsoidal structuring element of ``radius_mm`` in voxels of ``spacing``; None when under one voxel."""
    radii = [int(round(radius_mm / s)) for s in spacing]
    if max(radii) == 0:
        return None
    grids = np.ogrid[tuple(slice(-r, r + 1) for r in radii)]
    return sum((g / max(r, 1)) ** 2 for g, r in zip(grids, radii, strict=True)) <= 1.0


def dice(prediction: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor) -> float:
    """Dice overlap of two binary masks (anything > 0 is foreground); 1 when both are empty."""
    a, b = np.asarray(prediction) > 0, np.asarray(truth) > 0
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(a, b).sum()) / total


class CTLungMask(Transform):
    """Lung mask of a chest CT in HU by thresholding, component analysis and per-slice snake refinement.

    Args:
        threshold: HU below which a voxel is air or aerated lung (about -420 in COVID-MTL).
        closing_mm: radius of the per-slice closing disk, mm (fills vessels and small dense lesions at the border).
        snake_alpha: snake elasticity (skimage ``alpha``), for 1 mm pixels.
        snake_beta: snake rigidity (skimage ``beta``), for 1 mm pixels.
        snake_iterations: snake iterations.
        snake_spacing: pixel size (mm) of the grid each slice is refined on; 1 mm is the paper's resampling.
        min_second_fraction: the second largest 3D component is kept as a lung when at least this share of the
            largest (a separate left lung), dropped otherwise (bowel gas, a stray air pocket).
        final_erosion_mm: radius of the final 3D erosion, mm (0: none; under half a voxel it is skipped).
        final_closing_mm: radius of the final 3D closing, mm (0: none).
        default_spacing: voxel size (mm) used for a plain array without spacing information.

    Returns (from ``__call__``): a (1, X, Y, Z) mask of the input's type, 1 inside the lungs.
    """

    backend = [TransformBackends.NUMPY, TransformBackends.TORCH]

    def __init__(
        self,
        threshold: float = -420.0,
        closing_mm: float = 8.0,
        snake_alpha: float = 0.02,
        snake_beta: float = 20.0,
        snake_iterations: int = 20,
        snake_spacing: float = 1.0,
        min_second_fraction: float = 0.2,
        final_erosion_mm: float = 1.0,
        final_closing_mm: float = 2.0,
        default_spacing: Sequence[float] = (1.0, 1.0, 1.0),
    ) -> None:
        self.threshold = threshold
        self.closing_mm = closing_mm
        self.snake_alpha = snake_alpha
        self.snake_beta = snake_beta
        self.snake_iterations = snake_iterations
        self.snake_spacing = snake_spacing
        self.min_second_fraction = min_second_fraction
        self.final_erosion_mm = final_erosion_mm
        self.final_closing_mm = final_closing_mm
        self.default_spacing = tuple(float(s) for s in default_spacing)

    def candidates(self, hu: np.ndarray) -> np.ndarray:
        """Steps 1-3: low-HU voxels, in-plane border cleared per slice, the lung-sized largest components kept."""
        low = hu < self.threshold
        for k in range(low.shape[-1]):
            low[..., k] = clear_border(low[..., k])
        return _keep_largest(low, 2, self.min_second_fraction)

    def refine_slice(self, hu: np.ndarray, mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        """Step 4 on one axial slice: closing, contours, snake, hole filling and the 2 largest regions, on 1 mm pixels.

        Args:
            hu: (X, Y) slice in HU.
            mask: (X, Y) candidate lungs of the slice.
            spacing: in-plane pixel size (mm).

        Returns:
            The refined (X, Y) boolean mask.
        """
        zoom = [s / self.snake_spacing for s in spacing]
        fine_shape = tuple(max(1, int(round(n * z))) for n, z in zip(mask.shape, zoom, strict=True))
        factors = [f / n for f, n in zip(fine_shape, mask.shape, strict=True)]
        image = ndimage.zoom(np.clip(hu, *HU_DISPLAY), factors, order=1)
        image = ndimage.gaussian_filter((image - HU_DISPLAY[0]) / (HU_DISPLAY[1] - HU_DISPLAY[0]), 1.0)
        fine = ndimage.zoom(mask.astype(np.float32), factors, order=1) > 0.5
        pad = int(np.ceil(self.closing_mm / self.snake_spacing)) + 2
        fine = np.pad(fine, pad)
        if self.closing_mm > 0:
            fine = ndimage.binary_closing(fine, disk(int(round(self.closing_mm / self.snake_spacing))))
        fine = ndimage.binary_fill_holes(fine)
        image = np.pad(image, pad, mode="edge")
        refined = np.zeros_like(fine)
        for contour in find_contours(fine.astype(np.float32), 0.5):
            if len(contour) < 8:
                continue
            snake = active_contour(
                image,
                contour,
                alpha=self.snake_alpha,
                beta=self.snake_beta,
                max_num_iter=self.snake_iterations,
                boundary_condition="periodic",
            )
            rows, cols = polygon(snake[:, 0], snake[:, 1], refined.shape)
            refined[rows, cols] = True
        refined = _keep_largest(ndimage.binary_fill_holes(refined), 2, 0.0)[pad:-pad, pad:-pad]
        back = [n / f for n, f in zip(mask.shape, fine_shape, strict=True)]
        return ndimage.zoom(refined.astype(np.float32), back, order=1) > 0.5

    def __call__(
        self, img: np.ndarray | torch.Tensor, spacing: Sequence[float] | None = None
    ) -> np.ndarray | torch.Tensor:
        """Segment the lungs.

        Args:
            img: (1, X, Y, Z) CT in HU, axial axis last.
            spacing: voxel size (mm); read from a ``MetaTensor``'s affine when not given.

        Returns:
            (1, X, Y, Z) float mask (1 inside the lungs) of the input's type (a ``MetaTensor`` keeps its meta data).

        Raises:
            ValueError: for an input that is not (1, X, Y, Z).
        """
        if img.ndim != 4 or img.shape[0] != 1:
            raise ValueError(f"expected a (1, X, Y, Z) CT volume, got shape {tuple(img.shape)}")
        if spacing is None:
            spacing = tuple(float(s) for s in img.pixdim) if isinstance(img, MetaTensor) else self.default_spacing
        hu = np.asarray(img.detach().cpu() if isinstance(img, torch.Tensor) else img, dtype=np.float32)[0]
        mask = self.candidates(hu)
        if mask.any():  # refine within the lungs' in-plane box (plus the closing's reach): the rest stays empty
            margin = [int(np.ceil(self.closing_mm / s)) + 2 for s in spacing[:2]]
            (x0, x1), (y0, y1) = (
                (max(int(i.min()) - m, 0), min(int(i.max()) + m + 1, n))
                for i, m, n in zip(np.nonzero(mask.any(axis=2)), margin, mask.shape[:2], strict=True)
            )
            for k in np.flatnonzero(mask.any(axis=(0, 1))):
                box = (slice(x0, x1), slice(y0, y1), k)
                mask[box] = self.refine_slice(hu[box], mask[box], spacing[:2])
        erosion, closing = _ball(self.final_erosion_mm, spacing), _ball(self.final_closing_mm, spacing)
        if erosion is not None:
            mask = ndimage.binary_erosion(mask, erosion)
        if closing is not None:
            mask = ndimage.binary_closing(np.pad(mask, [(r, r) for r in closing.shape]), closing)
            mask = mask[tuple(slice(r, -r) for r in closing.shape)]
        out, *_ = convert_to_dst_type(mask[None].astype(np.float32), img, dtype=torch.float32)
        return out


class CTLungMaskd(MapTransform):
    """Dictionary wrapper of :class:`CTLungMask`: writes the lung mask of ``keys`` to ``mask_key``.

    Args:
        keys: the CT image key (one key).
        mask_key: where the (1, X, Y, Z) mask goes; it shares the image's affine.
        allow_missing_keys: skip a missing image instead of raising ``KeyError``.
        kwargs: :class:`CTLungMask` arguments.
    """

    backend = CTLungMask.backend

    def __init__(
        self, keys: KeysCollection, mask_key: str = "lung_mask", allow_missing_keys: bool = False, **kwargs
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"CTLungMaskd segments one image, got keys {self.keys}")
        self.mask_key = mask_key
        self.segmenter = CTLungMask(**kwargs)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        """Return a copy of ``data`` with the lung mask added."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.mask_key] = self.segmenter(d[key])
        return d
