"""Classical lung-field mask and square lung-box crop for 2D chest X-rays.

The MDMT preprocessing (methods.md, section 1) crops every radiograph to the bounding box of both lungs, enlarged by
5% and made square with real image pixels. The paper takes its lung masks from a U-Net trained on public lung
datasets; no pretrained weights can be downloaded here, so :class:`LungFieldMask` segments the lung fields with
classical image processing (thresholds, connected components, morphology). It needs no training, takes a fraction of
a second on a 2k x 2k image and, when it finds nothing lung-like, returns a documented central box and says so, so
that one odd image never stops a training run or an inference batch.

Images are channel-first 2D arrays ``(C, H, W)`` with air dark (the DICOM reader's contract), row 0 at the top and
column 0 on the patient's right.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import BorderPad, MapTransform, Resize, SpatialCrop, Transform
from monai.utils import MetaKeys, TransformBackends, convert_to_tensor, ensure_tuple_rep
from scipy import ndimage as ndi
from skimage import filters, measure, morphology, segmentation

__all__ = [
    "FALLBACK_BOX",
    "FALLBACK_META_KEY",
    "LungBoxCrop",
    "LungBoxCropd",
    "LungFieldMask",
    "LungFieldMaskd",
]

#: Box returned when no plausible lung field is found, as fractions of the image height and width:
#: ``(top, bottom, left, right)``. It covers where both lungs lie on a typical PA/AP chest radiograph, so that the
#: lung crop still keeps the lungs (with some extra border) when the segmentation gives up.
FALLBACK_BOX: tuple[float, float, float, float] = (0.08, 0.85, 0.08, 0.92)

#: Meta-data key of the mask, and suffix of the dictionary key, that says the fallback box was used.
FALLBACK_META_KEY = "lung_mask_fallback"

# Segmentation parameters, for the working image (long side ``_WORK_SIZE`` pixels; disk radii in its pixels).
_WORK_SIZE = 256
_QUANTILES = np.linspace(0.05, 0.8, 21)  # dark-threshold sweep, as quantiles of the normalised working image
_LUNG_AREA = (0.01, 0.3)  # plausible area of one lung, as a fraction of the image
_LUNG_CENTROID_ROWS = (0.15, 0.75)  # plausible centroid row of a lung, as a fraction of the height
_MAX_ACROSS_MIDLINE = 0.1  # a lung lies on one side of the spine: at most this fraction of it across the midline
_OPEN_RADIUS = 3  # cuts dark bridges thinner than ~7 px (trachea, gaps between ribs and soft tissue)
_CLOSE_RADIUS = 15  # fills notches up to ~30 px that opacities bite into the lung outline
_FRAGMENT_AREA = 0.001  # smallest dark piece of a broken-up lung, as a fraction of the image
_FRAGMENT_ROWS = (0.1, 0.8)  # rows, as fractions of the height, where such pieces may lie
_HULL_COVERAGE = 0.5  # below this coverage of the pieces' convex hull by the largest piece, use the hull
_MIRROR_RATIO = 0.6  # a lung smaller than this fraction of its mirrored partner is completed with the mirror image
_FAINT_OUTLINE = 0.25  # a lung whose outline edge is below this fraction of the other lung's is not a lung
_REFINE_BAND = 10  # the watershed may move the lung border up to ~10 px (4% of the working size) outwards
_MARKER_EROSION = 3  # the lung markers of the watershed: the lungs eroded by this radius


class LungFieldMask(Transform):
    """Segment both lung fields of a chest radiograph with classical image processing.

    The lung fields are the two large dark regions enclosed by the brighter body (chest wall, mediastinum,
    diaphragm). The algorithm runs on a copy downsampled (area averaging) to 256 pixels on the long side, which makes
    it fast on 2k x 2k detector images and every size below relative to the image:

    1. normalise the 1st-99th percentile range to [0, 1] and smooth, so that noise and burnt-in text do not matter;
    2. find the midline as the brightest vertical band (spine and mediastinum) in the central part of the image;
    3. sweep a dark threshold; at each level, open the dark mask (cuts thin bridges such as the trachea or a gap
       between ribs), drop components touching the left, right or bottom border (outside air; apices may be cut by
       the top border) and keep, on each side of the midline, the largest component with a lung-like area and
       centroid that does not cross the spine; per side, keep the level whose component scores highest on area
       times mean edge strength (Sobel) along its outline: the lung grows with the threshold, and its outline sits
       on strong edges only while it follows the lung border, not once it spreads into soft tissue;
    4. patchy consolidation breaks a lung into dark pieces: the other dark pieces on the lung's side are added to it,
       and when the largest piece covers less than half of the convex hull of all of them, the hull is the lung;
    5. symmetry: a lung that is not found (e.g. whitened by consolidation or effusion) is the mirror image of the
       other about the midline, and a lung smaller than 0.6 of its mirrored partner is the convex hull of itself
       and that mirror image, so that a whited-out zone is not cut off;
    6. per lung, close, keep the largest part, open and fill holes, so that opacities (the very findings the model
       must see) do not punch holes or notches into the mask;
    7. move the border onto the strongest edges with a marker-controlled watershed of the gradient magnitude: the
       eroded lungs are the lung markers, everything more than 10 px outside the lungs and their mirrored
       partners' convex hull is background; this recovers the thin, brighter bases and costophrenic angles that a
       dark threshold cuts off;
    8. upsample the mask to the full image size (bilinear, then 0.5 threshold, for smooth edges).

    Limitations: when both lungs are largely opacified, neither side nor its mirror shows the whole lung and the
    mask keeps only the dark parts (plus the watershed band); the mirror image of the patient's right lung can
    spill into the heart on the patient's left. The lung box and its margin usually still keep the lungs (see
    ``scripts/lung_dice.py``, which reports the crop's lung coverage).

    When no component passes the checks (a blank or constant image, a failed exposure, no dark region enclosed by
    brighter tissue), the mask is the central :data:`FALLBACK_BOX` and the output's meta-data carries
    ``lung_mask_fallback=True``.

    Args:
        fallback_box: ``(top, bottom, left, right)`` fractions of the image used when nothing plausible is found.

    Raises:
        ValueError: if ``fallback_box`` is not four increasing fractions in [0, 1].
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, fallback_box: Sequence[float] = FALLBACK_BOX) -> None:
        box = tuple(float(f) for f in fallback_box)
        if len(box) != 4 or not (0 <= box[0] < box[1] <= 1 and 0 <= box[2] < box[3] <= 1):
            raise ValueError(f"fallback_box must be (top, bottom, left, right) fractions in [0, 1], got {box}.")
        self.fallback_box = box

    def __call__(self, img: NdarrayOrTensor) -> MetaTensor:
        """Segment the lungs of ``img``.

        Args:
            img: channel-first 2D image ``(C, H, W)``, air dark; channels are averaged.

        Returns:
            A :class:`~monai.data.MetaTensor` ``(1, H, W)``, dtype uint8 (1 = lung), with the input's meta-data and
            affine when it is a MetaTensor, plus ``meta["lung_mask_fallback"]`` (bool).

        Raises:
            ValueError: if ``img`` is not channel-first 2D.
        """
        if img.ndim != 3:
            raise ValueError(f"LungFieldMask expects a channel-first 2D image (C, H, W), got shape {tuple(img.shape)}.")
        image = convert_to_tensor(img, dtype=torch.float32, track_meta=False).mean(dim=0, keepdim=True)
        shape = tuple(image.shape[1:])
        small = Resize(_WORK_SIZE, size_mode="longest", mode="area")(image)[0].numpy()
        lungs = _segment_lungs(small)
        fallback = not lungs.any()
        if fallback:
            mask = self._fallback_mask(shape)
        else:
            upsampled = Resize(shape, mode="bilinear")(torch.from_numpy(lungs[None].astype(np.float32)))
            mask = (upsampled > 0.5).to(torch.uint8)
        meta = {**img.meta, MetaKeys.AFFINE: img.affine.clone()} if isinstance(img, MetaTensor) else {}
        meta[FALLBACK_META_KEY] = fallback
        return MetaTensor(mask, meta=meta)

    def _fallback_mask(self, shape: tuple[int, ...]) -> torch.Tensor:
        """The central :attr:`fallback_box` as a ``(1, H, W)`` uint8 mask."""
        top, bottom, left, right = self.fallback_box
        rows = slice(int(top * shape[0]), max(int(top * shape[0]) + 1, round(bottom * shape[0])))
        cols = slice(int(left * shape[1]), max(int(left * shape[1]) + 1, round(right * shape[1])))
        mask = torch.zeros((1, *shape), dtype=torch.uint8)
        mask[0, rows, cols] = 1
        return mask


def _midline(image: np.ndarray) -> int:
    """Column of the brightest vertical band (spine, mediastinum) in the central 40% of the image."""
    h, w = image.shape
    profile = ndi.uniform_filter1d(image[int(0.2 * h) : int(0.8 * h)].mean(axis=0), size=max(3, w // 30))
    return int(0.3 * w) + int(np.argmax(profile[int(0.3 * w) : int(0.7 * w)]))


def _lung_candidates(dark: np.ndarray, midline: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Lung candidates of a dark mask, per side of the midline (0 = image left, 1 = image right).

    Returns:
        side -> ``(lung, fragments)``: the largest component with a lung-like area and position, and the union of
        all dark components on that side large and central enough to be pieces of a lung broken up by opacities.
    """
    h, w = dark.shape
    labels = measure.label(dark)
    best: dict[int, tuple[int, int]] = {}
    fragments: dict[int, list[int]] = {0: [], 1: []}
    for region in measure.regionprops(labels):
        top, left, bottom, right = region.bbox
        if left == 0 or bottom == h or right == w or region.area > _LUNG_AREA[1] * h * w:
            continue  # outside air (lung apices may be cut by the top border), or a merged body-sized region
        row, col = region.centroid
        side = int(col >= midline)
        across = np.mean(region.coords[:, 1] >= midline) if side == 0 else np.mean(region.coords[:, 1] < midline)
        if across > _MAX_ACROSS_MIDLINE:
            continue
        if region.area >= _FRAGMENT_AREA * h * w and _FRAGMENT_ROWS[0] * h <= row <= _FRAGMENT_ROWS[1] * h:
            fragments[side].append(region.label)
        plausible = (
            region.area >= _LUNG_AREA[0] * h * w and _LUNG_CENTROID_ROWS[0] * h <= row <= _LUNG_CENTROID_ROWS[1] * h
        )
        if plausible and (side not in best or region.area > best[side][0]):
            best[side] = (region.area, region.label)
    return {side: (labels == label, np.isin(labels, fragments[side])) for side, (_, label) in best.items()}


def _complete_lung(lung: np.ndarray, fragments: np.ndarray) -> np.ndarray:
    """One lung from its largest dark component and the dark fragments around it.

    Patchy consolidation breaks a lung into dark pieces; when the largest piece covers less than
    ``_HULL_COVERAGE`` of the convex hull of all pieces, the hull is the better estimate of the lung field.
    """
    pieces = lung | fragments
    hull = morphology.convex_hull_image(pieces)
    return hull if lung.sum() < _HULL_COVERAGE * hull.sum() else pieces


def _segment_lungs(image: np.ndarray) -> np.ndarray:
    """Lung fields of a small air-dark image ``(h, w)``; all False when nothing plausible is found."""
    low, high = np.percentile(image, (1, 99))
    if not high - low > 1e-6 * max(abs(low), abs(high), 1.0):
        return np.zeros(image.shape, dtype=bool)
    x = filters.gaussian(np.clip((image - low) / (high - low), 0, 1), sigma=1.0)
    midline = _midline(x)
    edges = filters.sobel(x)
    best: dict[int, tuple[float, np.ndarray, np.ndarray]] = {}
    for threshold in np.quantile(x, _QUANTILES):
        dark = morphology.isotropic_opening(x < threshold, _OPEN_RADIUS)
        for side, (lung, fragments) in _lung_candidates(dark, midline).items():
            score = lung.sum() * edges[lung & ~ndi.binary_erosion(lung)].mean()
            if side not in best or score > best[side][0]:
                best[side] = (score, lung, fragments)
    if len(best) == 2:  # a "lung" whose outline is much fainter than the other's is noise in a whited-out side
        strength = {side: score / lung.sum() for side, (score, lung, _) in best.items()}
        best = {side: b for side, b in best.items() if strength[side] >= _FAINT_OUTLINE * strength[1 - side]}
    lungs = {side: _complete_lung(lung, fragments) for side, (_, lung, fragments) in best.items()}
    if not lungs:
        return np.zeros(image.shape, dtype=bool)
    found = set(lungs)
    lungs, envelope = _complete_by_symmetry(lungs, midline)
    mask = np.zeros(image.shape, dtype=bool)
    for lung in lungs:  # each lung alone, so that closing never bridges the mediastinum
        closed = measure.label(morphology.isotropic_closing(lung, _CLOSE_RADIUS))
        largest = closed == np.argmax(np.bincount(closed.ravel(), minlength=2)[1:]) + 1
        mask |= ndi.binary_fill_holes(morphology.isotropic_opening(largest, _OPEN_RADIUS))
    refined = _refine_border(edges, mask, envelope | mask)
    if len(found) == 1:  # a lung with no dark trace has no border to refine: keep the plain mirror image
        columns = np.arange(x.shape[1])[None, :]
        stand_in = columns < midline if 0 not in found else columns >= midline
        refined = np.where(stand_in, mask, refined)
    return refined


def _mirror(mask: np.ndarray, midline: int) -> np.ndarray:
    """``mask`` reflected about the column ``midline`` (what falls outside the image is dropped)."""
    source = 2 * midline - np.arange(mask.shape[1])
    inside = (source >= 0) & (source < mask.shape[1])
    mirrored = np.zeros_like(mask)
    mirrored[:, inside] = mask[:, source[inside]]
    return mirrored


def _complete_by_symmetry(lungs: dict[int, np.ndarray], midline: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Complete opacified lungs with the contralateral lung reflected about the midline.

    Args:
        lungs: side (0 = image left, 1 = image right) -> lung estimate; one or both sides.
        midline: column of the spine.

    Returns:
        ``(lungs, envelope)``: both lungs, where a missing lung is the mirror image of the other and a lung smaller
        than ``_MIRROR_RATIO`` of its mirrored partner is the convex hull of itself and that mirror image; and, per
        side, the convex hull of the lung and its mirrored partner (the region the lung's border may grow into).
    """
    shape = next(iter(lungs.values())).shape
    own_side = {0: np.arange(shape[1])[None, :] < midline}
    own_side[1] = ~own_side[0]
    if len(lungs) == 1:  # one lung found: its mirror image about the midline stands in for the other
        ((side, lung),) = lungs.items()
        lungs[1 - side] = _mirror(lung, midline) & own_side[1 - side]
    partners = {side: _mirror(lungs[1 - side], midline) & own_side[side] for side in (0, 1)}
    completed, envelope = [], np.zeros(shape, dtype=bool)
    for side in (0, 1):
        lung, partner = lungs[side], partners[side]
        hull = morphology.convex_hull_image(lung | partner) & own_side[side] if partner.any() else lung
        completed.append(hull if lung.sum() < _MIRROR_RATIO * partner.sum() else lung)
        envelope |= hull
    return completed, envelope


def _refine_border(edges: np.ndarray, mask: np.ndarray, envelope: np.ndarray) -> np.ndarray:
    """Move the lung border onto the strongest edges: a marker-controlled watershed of the gradient magnitude.

    The eroded lungs are the lung markers and everything farther than ``_REFINE_BAND`` pixels from ``envelope`` is
    the background marker; the watershed places the border on the gradient ridge in between, which follows the
    lung's outline even where the dark-threshold mask stops short of it (the thin, brighter costophrenic angles and
    bases, and lung edges softened by ground glass). A lung whose new outline has a weaker mean edge than the old
    one (a flat region without a lung border, e.g. a whited-out lung) keeps its old outline.
    """
    labels = measure.label(mask)
    markers = np.where(morphology.isotropic_erosion(mask, _MARKER_EROSION), labels, 0)
    if not markers.any():
        return mask
    background = labels.max() + 1
    markers[~morphology.isotropic_dilation(envelope, _REFINE_BAND)] = background
    basins = segmentation.watershed(edges, markers)
    refined = np.zeros_like(mask)
    for label in range(1, background):  # keep a new border only where it lies on stronger edges than the old one
        before, after = labels == label, ndi.binary_fill_holes(basins == label)
        refined |= after if after.any() and _border_edge(edges, after) >= _border_edge(edges, before) else before
    return refined


def _border_edge(edges: np.ndarray, region: np.ndarray) -> float:
    """Mean gradient magnitude along the inner outline of ``region``."""
    return float(edges[region & ~ndi.binary_erosion(region)].mean())


class LungFieldMaskd(MapTransform):
    """Dictionary wrapper of :class:`LungFieldMask`: writes the lung mask and its fallback flag into the record.

    Args:
        keys: key(s) of the images to segment.
        mask_key: key(s) the masks are written to, one per key (a single name is used for a single key).
        fallback_box: see :class:`LungFieldMask`.
        allow_missing_keys: don't raise an exception if a key is missing.

    The record also gets ``f"{mask_key}_fallback"`` (bool), True when the fallback box was used, so that callers
    (data preparation reports, inference results) can list those images.
    """

    backend = LungFieldMask.backend

    def __init__(
        self,
        keys: KeysCollection = "image",
        mask_key: str | Sequence[str] = "lung_mask",
        fallback_box: Sequence[float] = FALLBACK_BOX,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_keys = ensure_tuple_rep(mask_key, len(self.keys))
        self.segmenter = LungFieldMask(fallback_box=fallback_box)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with ``mask_key`` and ``f"{mask_key}_fallback"`` added."""
        d = dict(data)
        for key, mask_key in self.key_iterator(d, self.mask_keys):
            mask = self.segmenter(d[key])
            d[mask_key] = mask
            d[f"{mask_key}_fallback"] = mask.meta[FALLBACK_META_KEY]
        return d


class LungBoxCrop(Transform):
    """Crop an image to the square bounding box of the lungs, enlarged by a margin.

    MDMT crops to the box of both lungs enlarged by 5% and made square "with real image pixels": the short side of
    the box is extended symmetrically and the square is shifted to stay inside the image, so that the later resize
    to 256 x 256 keeps the aspect ratio and no artificial border is shown to the network. The margin is added on each
    side as a fraction of the box's own height and width, but never beyond the image. Only when the square is larger
    than the image itself along an axis is the image padded, symmetrically, with the image minimum (air). An empty
    mask crops nothing: the square is then the whole image, padded on its short side.

    Cropping and padding use :class:`monai.transforms.SpatialCrop` and :class:`monai.transforms.BorderPad`, so a
    MetaTensor's affine and applied operations are updated.

    Args:
        margin: fraction of the lung box's height (width) added above and below (left and right).

    Raises:
        ValueError: if ``margin`` is negative.
    """

    backend = SpatialCrop.backend

    def __init__(self, margin: float = 0.05) -> None:
        if margin < 0:
            raise ValueError(f"margin must be non-negative, got {margin}.")
        self.margin = margin

    def compute_box(self, mask: NdarrayOrTensor) -> tuple[np.ndarray, np.ndarray]:
        """Square box (start, end) of the lung mask in pixel coordinates.

        Args:
            mask: channel-first lung mask ``(C, H, W)``; any non-zero channel is lung.

        Returns:
            ``(start, end)``, each an int array ``(row, column)``, with ``end - start`` equal on both axes. The box
            lies inside the image except along an axis shorter than the square, where it extends symmetrically past
            both ends (the part to pad).
        """
        fg = np.asarray(convert_to_tensor(mask, track_meta=False).detach().cpu().numpy() != 0).any(axis=0)
        shape = np.asarray(fg.shape)
        if fg.any():
            coords = np.argwhere(fg)
            low, high = coords.min(axis=0), coords.max(axis=0) + 1
            extra = self.margin * (high - low)
            start = np.maximum(np.floor(low - extra), 0).astype(int)
            end = np.minimum(np.ceil(high + extra), shape).astype(int)
        else:
            start, end = np.zeros(2, dtype=int), shape.astype(int)
        side = int((end - start).max())
        start -= (side - (end - start)) // 2
        start = np.where(side <= shape, np.clip(start, 0, shape - side), -((side - shape) // 2))
        return start, start + side

    def crop_pad(self, img: NdarrayOrTensor, start: np.ndarray, end: np.ndarray) -> NdarrayOrTensor:
        """Crop ``img`` ``(C, H, W)`` to ``[start, end)`` and pad the part outside the image with its minimum."""
        shape = np.asarray(img.shape[1:])
        cropped = SpatialCrop(roi_start=np.maximum(start, 0), roi_end=np.minimum(end, shape))(img)
        before, after = np.maximum(-start, 0), np.maximum(end - shape, 0)
        if not (before.any() or after.any()):
            return cropped
        border = [int(b) for pair in zip(before, after, strict=True) for b in pair]
        return BorderPad(spatial_border=border, mode="constant", value=float(img.min()))(cropped)

    def __call__(self, img: NdarrayOrTensor, mask: NdarrayOrTensor) -> NdarrayOrTensor:
        """Crop ``img`` ``(C, H, W)`` to the square lung box of ``mask`` ``(C, H, W)`` (same H and W).

        Raises:
            ValueError: if the image and the mask differ in height or width.
        """
        if tuple(img.shape[1:]) != tuple(mask.shape[1:]):
            raise ValueError(f"image {tuple(img.shape)} and lung mask {tuple(mask.shape)} differ in H, W.")
        return self.crop_pad(img, *self.compute_box(mask))


class LungBoxCropd(MapTransform):
    """Dictionary wrapper of :class:`LungBoxCrop`: one square lung box, from ``mask_key``, crops every key alike.

    Include ``mask_key`` in ``keys`` to crop the mask too (e.g. ``keys=("image", "lung_mask")``); as in MONAI's
    ``CropForegroundd``, the source of the box is only cropped when it is listed.

    Args:
        keys: keys of the channel-first images to crop; all must have the mask's height and width.
        mask_key: key of the lung mask ``(C, H, W)`` (e.g. from :class:`LungFieldMaskd`).
        margin: see :class:`LungBoxCrop`.
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    backend = LungBoxCrop.backend

    def __init__(
        self,
        keys: KeysCollection = ("image",),
        mask_key: str = "lung_mask",
        margin: float = 0.05,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key
        self.cropper = LungBoxCrop(margin=margin)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with every key cropped to the lung box of ``mask_key``.

        Raises:
            ValueError: if a key's height and width differ from the mask's.
        """
        d = dict(data)
        mask = d[self.mask_key]
        start, end = self.cropper.compute_box(mask)
        for key in self.key_iterator(d):
            if tuple(d[key].shape[1:]) != tuple(mask.shape[1:]):
                raise ValueError(
                    f"{key!r} {tuple(d[key].shape)} and {self.mask_key!r} {tuple(mask.shape)} differ in H, W."
                )
            d[key] = self.cropper.crop_pad(d[key], start, end)
        return d
