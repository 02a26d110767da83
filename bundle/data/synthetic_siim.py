"""Synthetic SIIM-FISABIO-RSNA-like data: the four study appearances with opacity boxes, in the Kaggle layout.

Real radiographs cannot be shipped, so the SSL family's demo data is generated in the layout that
:mod:`bundle.data.siim_covid` reads, with the bundle's phantom (:mod:`bundle.data.phantom`) and DICOM writer
(:mod:`bundle.data.synthetic`). The appearances follow the RSNA/SIIM reporting definitions:

- typical: bilateral, peripheral (against the chest wall), lower-zone ground glass;
- indeterminate: fainter, unilateral, central (perihilar) or upper-zone;
- atypical: a dense lobar consolidation in one zone of one lung, or 3-5 round dense central nodules;
- negative: none.

Each opacity gets a radiologist-style box: where it reaches 30% of its peak, plus a 2% margin. 6% of the studies
hold a second, unannotated image. A shortcut is planted on purpose: ECG electrodes and leads, drawn outside the lungs
but inside the lung box, appear in 10% of negative and 40-60% of positive studies (sicker patients are monitored, as
in real collections), so that the critical evaluation has something to find. The latent variables (pattern,
electrodes, acquisition) go to ``synthetic/latents.csv``, never into the datalist.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.draw import bezier_curve, disk

from bundle.data.phantom import Anatomy, lung_fields, make_phantom, sample_anatomy
from bundle.data.siim_covid import (
    APPEARANCE_CLASSES,
    APPEARANCE_COLUMNS,
    BOX_KEYS,
    IMAGE_SHEET,
    NO_OPACITY,
    STUDY_SHEET,
    prepare_siim_covid,
)
from bundle.data.synthetic import MANUFACTURER_PROTOCOLS, SIDECAR, simulate_detector, write_cxr_dicom

__all__ = ["SIIM_SIZES", "SiimSize", "draw_appearance", "draw_ecg", "ensure_siim_datalist", "generate_siim"]


@dataclass(frozen=True)
class SiimSize:
    """How much synthetic data to write.

    Attributes:
        studies: number of studies (one image each, 6% of them two).
        min_px: smallest image height in pixels.
        max_px: largest image height in pixels.
    """

    studies: int
    min_px: int
    max_px: int


SIIM_SIZES: dict[str, SiimSize] = {
    "tiny": SiimSize(40, 128, 176),  # tests: seconds
    "small": SiimSize(240, 256, 384),  # the configs' default demo data
    "experiment": SiimSize(600, 192, 256),  # scripts/ssl_experiment.py: many studies, small images
}

CLASS_SHARE: tuple[float, ...] = (0.27, 0.47, 0.17, 0.09)
"""Share of negative, typical, indeterminate and atypical studies, close to the SIIM training set."""
MIN_STUDIES_PER_CLASS = 6
"""Enough studies of the rarest class for every fold of a small dataset."""
SECOND_IMAGE_SHARE = 0.06
ECG_SHARE: tuple[float, ...] = (0.10, 0.60, 0.40, 0.50)
"""Share of studies with ECG electrodes, per appearance: the planted shortcut."""
BOX_LEVEL = 0.3
"""A box covers where an opacity reaches this fraction of its peak..."""
BOX_MARGIN = 0.02
"""...plus this fraction of the image size on each side."""
COMPLETE_MARKER = f"{SIDECAR}/complete.json"
"""Written last by :func:`generate_siim`: its presence means a finished synthetic dataset."""
PATTERNS: dict[int, tuple[str, ...]] = {
    0: ("negative",),
    1: ("typical",),
    2: ("indeterminate_unilateral", "indeterminate_central", "indeterminate_upper"),
    3: ("atypical_lobar", "atypical_nodular"),
}


@dataclass(frozen=True)
class _LungGeometry:
    """Per-pixel coordinates of one lung: which pixels, height within it (0 apex, 1 base), lateral position."""

    field: np.ndarray
    zone: np.ndarray
    lateral: np.ndarray
    height: float


def _lung_geometry(lungs: np.ndarray, anatomy: Anatomy) -> tuple[_LungGeometry, _LungGeometry]:
    """Split the lung mask at the midline into (image left, image right) lungs with normalised coordinates.

    ``zone`` is measured within both the lung and the pair (the smaller of the two), so that "lower zone" holds
    for the lung and for the chest; ``lateral`` is 0 at the midline and 1 at the lung's lateral border.
    """
    height, width = lungs.shape
    midline = anatomy.center[1] * width
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    all_rows = np.nonzero(lungs.any(axis=1))[0]
    pair_zone = (rows - all_rows[0]) / max(all_rows[-1] - all_rows[0], 1)
    sides = []
    for field in (lungs & (cols < midline), lungs & (cols >= midline)):
        if not field.any():
            raise ValueError("the lung mask must hold a lung on each side of the anatomy's midline")
        lung_rows = np.nonzero(field.any(axis=1))[0]
        lung_height = max(lung_rows[-1] - lung_rows[0], 1)
        zone = np.minimum((rows - lung_rows[0]) / lung_height, pair_zone)
        distance = np.abs(cols + 0.5 - midline)
        lateral = distance / distance[field].max()
        sides.append(_LungGeometry(field, zone, lateral, float(lung_height)))
    return sides[0], sides[1]


def _pick(rng: np.random.Generator, candidates: np.ndarray, fallback: np.ndarray) -> tuple[int, int]:
    """A random ``(row, column)`` among ``candidates`` (or ``fallback`` when there is none)."""
    points = np.argwhere(candidates if candidates.any() else fallback)
    row, col = points[rng.integers(len(points))]
    return int(row), int(col)


def _blob(shape: tuple[int, int], centre: tuple[int, int], sigma: tuple[float, float]) -> np.ndarray:
    """An anisotropic Gaussian with peak 1 at ``centre`` and ``sigma`` = (rows, columns) in pixels."""
    rows, cols = np.ogrid[0 : shape[0], 0 : shape[1]]
    return np.exp(-0.5 * (((rows - centre[0]) / sigma[0]) ** 2 + ((cols - centre[1]) / sigma[1]) ** 2))


def _nodule(shape: tuple[int, int], centre: tuple[int, int], radius: float) -> np.ndarray:
    """A round, dense, sharply bounded nodule of peak 1."""
    rows, cols = np.ogrid[0 : shape[0], 0 : shape[1]]
    distance = np.hypot(rows - centre[0], cols - centre[1])
    return 1.0 / (1.0 + np.exp((distance - radius) / (0.15 * radius)))


def _box(component: np.ndarray) -> list[float]:
    """The radiologist-style box ``[x, y, width, height]`` of one opacity: its 30%-of-peak extent plus the margin."""
    height, width = component.shape
    rows, cols = np.nonzero(component >= BOX_LEVEL * component.max())
    x0 = max(cols.min() - BOX_MARGIN * width, 0.0)
    y0 = max(rows.min() - BOX_MARGIN * height, 0.0)
    x1 = min(cols.max() + 1 + BOX_MARGIN * width, float(width))
    y1 = min(rows.max() + 1 + BOX_MARGIN * height, float(height))
    return [round(float(x0), 2), round(float(y0), 2), round(float(x1 - x0), 2), round(float(y1 - y0), 2)]


def _sigma(rng: np.random.Generator, lung: _LungGeometry, low: float, high: float) -> tuple[float, float]:
    """Blob sigmas (rows, columns), fractions ``low``-``high`` of the lung height; a little narrower than tall."""
    return rng.uniform(low, high) * lung.height, rng.uniform(0.7, 1.0) * rng.uniform(low, high) * lung.height


def _typical(rng: np.random.Generator, sides: tuple[_LungGeometry, ...], texture: np.ndarray) -> list[np.ndarray]:
    """Ground glass in both lungs (and 0-2 more patches), lower zone, against the chest wall."""
    components = []
    for side in [0, 1, *rng.integers(0, 2, size=rng.integers(0, 3))]:
        lung = sides[side]
        chest_wall = ndimage.distance_transform_edt(lung.field) <= 0.06 * texture.shape[1]
        where = lung.field & (lung.zone >= 0.62) & (lung.lateral >= 0.55)
        centre = _pick(rng, where & chest_wall, where)
        components.append(rng.uniform(0.3, 0.5) * _blob(texture.shape, centre, _sigma(rng, lung, 0.08, 0.14)))
    return [component * texture for component in components]


def _indeterminate(
    rng: np.random.Generator, sides: tuple[_LungGeometry, ...], texture: np.ndarray, pattern: str
) -> list[np.ndarray]:
    """Fainter ground glass: perihilar in one or both lungs, or 1-2 patches in one lung (upper zone or anywhere)."""
    if pattern == "indeterminate_central":
        lungs = [sides[side] for side in rng.permutation(2)[: rng.integers(1, 3)]]
        zones, lateral = (0.3, 0.6), 0.45
    else:
        lungs = [sides[rng.integers(2)]] * int(rng.integers(1, 3))
        zones, lateral = ((0.0, 0.3) if pattern == "indeterminate_upper" else (0.3, 0.9)), 1.0
    components = []
    for lung in lungs:
        where = lung.field & (lung.zone >= zones[0]) & (lung.zone <= zones[1]) & (lung.lateral <= lateral)
        centre = _pick(rng, where, lung.field)
        components.append(rng.uniform(0.18, 0.3) * _blob(texture.shape, centre, _sigma(rng, lung, 0.06, 0.12)))
    return [component * texture for component in components]


def _lobar(rng: np.random.Generator, sides: tuple[_LungGeometry, ...], texture: np.ndarray) -> list[np.ndarray]:
    """One dense consolidation filling one third (upper, middle or lower zone) of one lung."""
    lung = sides[rng.integers(2)]
    third = rng.integers(3)
    band = lung.field & (lung.zone >= third / 3 - 0.04) & (lung.zone <= (third + 1) / 3 + 0.04)
    smooth = ndimage.gaussian_filter(band.astype(np.float32), 0.015 * texture.shape[1])
    return [rng.uniform(0.7, 0.9) * smooth / max(smooth.max(), 1e-12) * texture]


def _nodular(rng: np.random.Generator, sides: tuple[_LungGeometry, ...], shape: tuple[int, int]) -> list[np.ndarray]:
    """3-5 round dense nodules in the central part of either lung, apart so that each has its own box."""
    radius = rng.uniform(0.025, 0.035) * shape[1]
    rows, cols = np.ogrid[0 : shape[0], 0 : shape[1]]
    free = np.ones(shape, dtype=bool)
    components = []
    for _ in range(rng.integers(3, 6)):
        lung = sides[rng.integers(2)]
        where = lung.field & (lung.zone >= 0.25) & (lung.zone <= 0.75) & (lung.lateral <= 0.55)
        where &= ndimage.distance_transform_edt(lung.field) >= radius  # the whole nodule lies in the lung
        centre = _pick(rng, where & free, lung.field)
        free &= np.hypot(rows - centre[0], cols - centre[1]) > 3 * radius
        components.append(rng.uniform(0.75, 0.95) * _nodule(shape, centre, radius))
    return components


def draw_appearance(
    rng: np.random.Generator, appearance: int, lungs: np.ndarray, anatomy: Anatomy
) -> tuple[np.ndarray, list[list[float]], str]:
    """Draw the opacities of one study appearance inside the lungs, with one box per opacity.

    Args:
        rng: random generator.
        appearance: 0 negative, 1 typical, 2 indeterminate, 3 atypical (:data:`APPEARANCE_CLASSES`).
        lungs: ``(height, width)`` bool lung mask of the phantom (:func:`bundle.data.phantom.lung_fields`).
        anatomy: the phantom's anatomy (its midline separates the lungs).

    Returns:
        ``(opacity, boxes, pattern)``: the fraction (0-1) of lung air replaced, zero outside the lungs, ready for
        ``make_phantom(..., opacity=...)``; the boxes ``[x, y, width, height]`` in pixels; the pattern drawn (one of
        :data:`PATTERNS` of the appearance).

    Raises:
        ValueError: an appearance outside 0-3, or a mask without a lung on each side of the midline.
    """
    if appearance not in PATTERNS:
        raise ValueError(f"appearance must be 0-3 ({', '.join(APPEARANCE_CLASSES)}), got {appearance!r}")
    pattern = str(rng.choice(PATTERNS[appearance]))
    if pattern == "negative":
        return np.zeros(lungs.shape, dtype=np.float32), [], pattern
    sides = _lung_geometry(lungs, anatomy)
    texture = ndimage.gaussian_filter(rng.standard_normal(lungs.shape), 0.02 * lungs.shape[1])
    texture = 0.75 + 0.25 * (texture - texture.min()) / max(np.ptp(texture), 1e-12)  # patchy, never absent
    if pattern == "typical":
        components = _typical(rng, sides, texture)
    elif pattern.startswith("indeterminate"):
        components = _indeterminate(rng, sides, texture, pattern)
    elif pattern == "atypical_lobar":
        components = _lobar(rng, sides, texture)
    else:
        components = _nodular(rng, sides, lungs.shape)
    components = [component * lungs for component in components]
    boxes = [_box(component) for component in components if component.max() > 0]
    opacity = np.clip(np.sum(components, axis=0), 0.0, 1.0).astype(np.float32)
    return opacity, boxes, pattern


def draw_ecg(rng: np.random.Generator, lungs: np.ndarray, radiograph: np.ndarray) -> np.ndarray:
    """ECG electrodes and their leads, outside the lungs but inside the lungs' bounding box (so inside a lung crop).

    An electrode is a faint round pad with a bright metal snap; its lead sags from the snap to the bottom of the
    image. Both are blanked over the lungs, so that hiding the lungs leaves the shortcut whole and hiding everything
    else removes it. Electrodes sit on the thinner soft tissue where they can (darker than the image's 80th
    percentile): over the heart or the spine the preprocessing's percentile window would saturate them with it.

    Args:
        rng: random generator.
        lungs: ``(height, width)`` bool lung mask.
        radiograph: the air-dark ``(height, width)`` radiograph the electrodes go on (only read).

    Returns:
        ``(height, width)`` float32 brightening (0 where there is nothing), added to the air-dark radiograph.
    """
    height, width = lungs.shape
    rows, cols = np.nonzero(lungs)
    radius = rng.uniform(0.022, 0.03) * width
    margin = int(np.ceil(radius))
    inside_box = np.zeros_like(lungs)
    inside_box[rows.min() + margin : rows.max() - margin, cols.min() + margin : cols.max() - margin] = True
    where = inside_box & (ndimage.distance_transform_edt(~lungs) > radius + 0.01 * width)
    visible = where & (radiograph < np.percentile(radiograph, 80))
    grid_rows, grid_cols = np.ogrid[0:height, 0:width]
    free = np.ones_like(lungs)
    overlay = np.zeros(lungs.shape, dtype=np.float32)
    leads = np.zeros(lungs.shape, dtype=bool)
    for _ in range(rng.integers(2, 5)):
        row, col = _pick(rng, visible & free, where)
        free &= np.hypot(grid_rows - row, grid_cols - col) > 3 * radius
        pad = disk((row, col), radius, shape=lungs.shape)
        overlay[pad] = np.maximum(overlay[pad], rng.uniform(0.06, 0.1))
        snap = disk((row, col), 0.5 * radius, shape=lungs.shape)
        overlay[snap] = rng.uniform(0.45, 0.6)
        # The lead: a quadratic Bezier curve from the snap down to the bottom edge, sagging sideways.
        control = (row + (height - row) // 2, col + int(rng.uniform(-0.2, 0.2) * width))
        end = (height - 1, col + int(rng.uniform(-0.25, 0.25) * width))
        leads[bezier_curve(row, col, *control, *end, weight=1.0, shape=lungs.shape)] = True
    thickness = max(1, round(0.005 * width))
    leads = ndimage.binary_dilation(leads, np.ones((thickness, thickness), dtype=bool))
    overlay = np.maximum(overlay, leads * rng.uniform(0.2, 0.3))
    overlay[ndimage.binary_dilation(lungs, iterations=2)] = 0.0
    return overlay.astype(np.float32)


def _class_counts(studies: int) -> list[int]:
    """Studies per appearance: :data:`CLASS_SHARE` by largest remainder, at least :data:`MIN_STUDIES_PER_CLASS`."""
    if studies < MIN_STUDIES_PER_CLASS * len(CLASS_SHARE):
        raise ValueError(f"at least {MIN_STUDIES_PER_CLASS * len(CLASS_SHARE)} studies are needed, got {studies}")
    exact = np.array(CLASS_SHARE) * studies
    counts = np.floor(exact).astype(int)
    counts[np.argsort(counts - exact)[: studies - counts.sum()]] += 1
    counts = np.maximum(counts, MIN_STUDIES_PER_CLASS)
    counts[np.argmax(counts)] -= counts.sum() - studies
    return counts.tolist()


def _uid(rng: np.random.Generator, taken: set[str]) -> str:
    """A new anonymised 12-hex-digit id, as the Kaggle release names studies, series and images."""
    while (uid := rng.bytes(6).hex()) in taken:
        pass
    taken.add(uid)
    return uid


def _boxes_cell(boxes: list[list[float]]) -> str:
    """The ``boxes`` cell of the Kaggle image sheet: a Python list of dicts, empty when there is none."""
    return str([dict(zip(BOX_KEYS, box, strict=True)) for box in boxes]) if boxes else ""


def _label_cell(boxes: list[list[float]]) -> str:
    """The ``label`` cell of the Kaggle image sheet: ``opacity 1 x0 y0 x1 y1`` per box, or ``none 1 0 0 1 1``."""
    if not boxes:
        return NO_OPACITY
    return " ".join(f"opacity 1 {x:g} {y:g} {x + w:g} {y + h:g}" for x, y, w, h in boxes)


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    """Write a comma-separated sheet with a header row."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def generate_siim(out: str | os.PathLike[str], size: str = "small", seed: int = 0) -> dict[str, Any]:
    """Write synthetic data in the SIIM-FISABIO-RSNA layout (see :mod:`bundle.data.siim_covid`).

    The same ``size`` and ``seed`` give the same files (ids and images differ between sizes, so a preprocessing
    cache keyed by the record never mixes two datasets). ``synthetic/latents.csv`` records each image's pattern,
    electrodes and acquisition; :data:`COMPLETE_MARKER` (the summary) is written last and marks a finished set.
    Synthetic data written before under ``out`` is replaced; anything else in ``out`` (a datalist, a cache) is kept.

    Args:
        out: the dataset folder (created).
        size: a key of :data:`SIIM_SIZES`.
        seed: random seed.

    Returns:
        A summary: the folder, size and seed, studies, images, studies per class and studies with electrodes per class.

    Raises:
        ValueError: an unknown size.
        FileExistsError: ``out`` holds a dataset that this generator did not write (it is never replaced).
    """
    if size not in SIIM_SIZES:
        raise ValueError(f"size must be one of {', '.join(SIIM_SIZES)}, got {size!r}")
    out = Path(out)
    if any((out / name).exists() for name in (STUDY_SHEET, IMAGE_SHEET, "train")) and not (out / SIDECAR).is_dir():
        raise FileExistsError(f"{out} holds a dataset that is not synthetic (no {SIDECAR}/ folder): not replaced")
    (out / COMPLETE_MARKER).unlink(missing_ok=True)
    shutil.rmtree(out / "train", ignore_errors=True)
    (out / SIDECAR).mkdir(parents=True, exist_ok=True)
    spec = SIIM_SIZES[size]
    rng = np.random.default_rng([seed, list(SIIM_SIZES).index(size)])
    appearances = rng.permutation(np.repeat(np.arange(len(APPEARANCE_CLASSES)), _class_counts(spec.studies)))
    manufacturers = sorted(MANUFACTURER_PROTOCOLS)
    taken: set[str] = set()
    study_rows, image_rows, latents = [], [], []
    ecg_studies: Counter[str] = Counter()
    for number, appearance in enumerate(appearances.tolist()):
        study, series = _uid(rng, taken), _uid(rng, taken)
        manufacturer = str(rng.choice(manufacturers))
        protocol = int(rng.integers(len(MANUFACTURER_PROTOCOLS[manufacturer])))
        height = int(rng.integers(spec.min_px, spec.max_px + 1))
        shape = (height, int(round(height * rng.uniform(0.82, 1.0))))
        acquisition = MANUFACTURER_PROTOCOLS[manufacturer][protocol]
        acquisition = replace(acquisition, blur=acquisition.blur * height / 512)  # the protocols' blur is at 512 px
        anatomy = sample_anatomy(rng)
        lungs = lung_fields(anatomy, shape)
        opacity, boxes, pattern = draw_appearance(rng, appearance, lungs, anatomy)
        radiograph, _ = make_phantom(rng, shape, anatomy=anatomy, opacity=opacity)
        ecg = bool(rng.random() < ECG_SHARE[appearance])
        if ecg:
            ecg_studies[APPEARANCE_CLASSES[appearance]] += 1
            radiograph = np.clip(radiograph + draw_ecg(rng, lungs, radiograph), 0.0, 1.0)
        spacing = float(rng.uniform(350.0, 430.0)) / height  # a 35-43 cm field of view
        study_rows.append([f"{study}_study", *(int(appearance == k) for k in range(len(APPEARANCE_CLASSES)))])
        # A second image of the study (a repeat exposure) carries no boxes, as in the published data.
        for copy in range(2 if rng.random() < SECOND_IMAGE_SHARE else 1):
            image = _uid(rng, taken)
            annotated = boxes if copy == 0 else []
            path = out / "train" / study / series / f"{image}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_cxr_dicom(
                path,
                simulate_detector(radiograph, acquisition, rng),
                acquisition,
                patient_name=f"SYNTH^S{number:05d}",
                patient_id=f"SYNTH-S{number:05d}",
                pixel_spacing_mm=(spacing, spacing),
                uid_key=f"siim-{size}-{seed}-{image}",
            )
            image_rows.append([f"{image}_image", _boxes_cell(annotated), _label_cell(annotated), study])
            latents.append(
                [image, study, APPEARANCE_CLASSES[appearance], pattern, len(annotated), int(ecg), manufacturer,
                 acquisition.modality, shape[0], shape[1]]
            )  # fmt: skip
    latent_header = ["image", "study", "appearance", "pattern", "boxes", "ecg", "manufacturer", "modality"]
    _write_csv(out / SIDECAR / "latents.csv", [*latent_header, "rows", "columns"], latents)
    _write_csv(out / STUDY_SHEET, ["id", *APPEARANCE_COLUMNS], study_rows)
    _write_csv(out / IMAGE_SHEET, ["id", "boxes", "label", "StudyInstanceUID"], image_rows)
    summary = {
        "root": str(out),
        "size": size,
        "seed": seed,
        "studies": len(study_rows),
        "images": len(image_rows),
        "classes": {name: int((appearances == k).sum()) for k, name in enumerate(APPEARANCE_CLASSES)},
        "ecg": {name: ecg_studies[name] for name in APPEARANCE_CLASSES},
    }
    (out / COMPLETE_MARKER).write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def ensure_siim_datalist(
    datalist: str | os.PathLike[str],
    demo: bool = True,
    root: str | os.PathLike[str] | None = None,
    size: str = "small",
    seed: int = 0,
    n_folds: int = 5,
) -> Path:
    """Make sure the SSL family's datalist exists: with ``demo``, generate synthetic data and prepare it when missing.

    An existing datalist is used as it is. Synthetic data already complete under ``root`` is not generated again.

    Args:
        datalist: the datalist JSON the workflows read.
        demo: whether a missing datalist may be made from synthetic data (the configs' ``demo_data``).
        root: the synthetic dataset folder (default: the datalist's folder).
        size: a key of :data:`SIIM_SIZES`.
        seed: the seed of the data and of the folds.
        n_folds: study-level folds of the datalist.

    Returns:
        The datalist's path.

    Raises:
        FileNotFoundError: the datalist is missing and ``demo`` is false.
    """
    datalist = Path(datalist)
    if datalist.is_file():
        return datalist
    if not demo:
        raise FileNotFoundError(
            f"datalist {datalist} does not exist: prepare it with `python scripts/make_demo_siim.py prepare "
            f"--root <SIIM folder> --out {datalist}`, or set demo_data true for synthetic data"
        )
    root = datalist.parent if root is None else Path(root)
    if not (root / COMPLETE_MARKER).is_file():
        generate_siim(root, size=size, seed=seed)
    prepare_siim_covid(root, datalist, n_folds=n_folds, seed=seed)
    return datalist
