"""Synthetic chest CT scans in Hounsfield units with COVID-like lesions, written in a HUST-19-like layout.

HUST-19 cannot be shipped, so the COVID-MTL family trains, evaluates and is tested on phantoms that carry what the
method relies on: CT physics (air, fat, soft tissue, bone and aerated lung at their HU), an anatomy that makes lung
segmentation a real problem (ribs and spine around the lungs, heart and mediastinum between them, trachea and main
bronchi, diaphragm domes, vessel trees inside), and lesions as COVID-19 shows them: ground glass and consolidation,
peripheral, posterior and basal, whose burden (share of the lung volume) drives the severity label. The three labels
disagree the way HUST-19's do: the radiologists read the CT (and sometimes err), the nucleic-acid test (NAT) misses
some infected patients, some infected patients have clear lungs, and other diseases put lesions in uninfected lungs.

Layout written under ``<out>/HUST19`` (read by :func:`bundle.data.hust.prepare_hust`)::

    labels.csv                  PatientID, Centre, Morbidity, NAT, Radiology, Series, NIfTI
    dicom/<PatientID>/NNNN.dcm  one CT Image Storage file per axial slice (HU = stored value - 1024)
    nifti/<PatientID>.nii.gz    the same volume, int16 HU, RAS affine
    synthetic/masks/<PatientID>.nii.gz  ground-truth lungs: 1 right, 2 left (lesions and vessels included)
    synthetic/latents.csv       lesion burden and the hidden causes of the labels (never in a datalist)

Volumes are in RAS array order, as after ``Orientationd(axcodes="RAS")``: axis 0 runs to the patient's right,
axis 1 to the front, axis 2 (the axial axis) upwards.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from scipy import ndimage
from skimage.measure import block_reduce

__all__ = [
    "CONSOLIDATION_HU",
    "CT_DEMO_SIZES",
    "DATASET_FOLDER",
    "GGO_HU",
    "CTDemoSize",
    "ScanPlan",
    "generate_ct_demo_data",
    "plan_scan",
    "ras_affine",
    "render_scan",
    "scan_labels",
    "write_dicom_series",
]

DATASET_FOLDER = "HUST19"
GGO_HU = (-700.0, -300.0)
"""Ground-glass opacity: hazy lung whose vessels stay visible."""
CONSOLIDATION_HU = (-100.0, 50.0)
"""Consolidation: air spaces filled, as dense as soft tissue."""
RESCALE_INTERCEPT = -1024
STORED_MAX = 4095  # 12 bits stored: HU -1024..3071
LUNG_HU = (-880.0, -830.0)  # aerated parenchyma of an adult, before the gravity gradient
FINE_VOXEL_MM = 4.0  # the anatomy is drawn on a grid at least this fine, then averaged (partial volume)

# Severity from the lesion burden of an infected patient (HUST-19 morbidity, Chinese guideline categories).
MILD_BELOW = 0.01
SEVERE_FROM = 0.12
CRITICAL_FROM = 0.30
MORBIDITIES = ("Control", "Suspected", "Mild", "Regular", "Severe", "Critically ill")

# Label noise of the cohort (docs/covid_mtl_ct.md, Data).
INFECTED_SHARE = 0.55
CLEAR_LUNGS_WHEN_INFECTED = 0.15
OTHER_LESIONS_WHEN_NOT_INFECTED = 0.20
NAT_FALSE_NEGATIVE = 0.12
READING_ERROR = 0.04
# COVID-19 lesion extent: barely visible, regular, severe, critical (share of patients, burden range).
COVID_STAGES = (0.1, 0.5, 0.27, 0.13)
COVID_STAGE_BURDEN = ((0.002, 0.008), (0.015, 0.10), (0.14, 0.28), (0.32, 0.42))
GOLDEN_RATIO_CONJUGATE = (5**0.5 - 1) / 2  # (i * this) mod 1 spreads evenly over [0, 1) for any run of indices
HIDDEN_CAUSES = ("infected", "lesion_cause", "target_burden", "nat_false_negative", "reading_error")


@dataclass(frozen=True)
class CTDemoSize:
    """A synthetic cohort: number of scans, voxels per scan (RAS order) and voxel size in mm."""

    scans: int
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]


CT_DEMO_SIZES: dict[str, CTDemoSize] = {
    "tiny": CTDemoSize(24, (48, 48, 40), (7.5, 7.5, 7.2)),
    "small": CTDemoSize(100, (48, 48, 40), (7.5, 7.5, 7.2)),
}


@dataclass(frozen=True)
class Centre:
    """Acquisition differences between the two hospitals: quantum noise and reconstruction blur."""

    noise_hu: float
    blur_mm: float


CENTRES: dict[str, Centre] = {"Union": Centre(noise_hu=12.0, blur_mm=2.5), "Liyuan": Centre(noise_hu=28.0, blur_mm=5.0)}


@dataclass(frozen=True)
class ScanPlan:
    """Everything that decides one synthetic scan and its labels, drawn by :func:`plan_scan`.

    Plain numbers only, so that two plans compare equal when they would render the same scan.
    """

    patient: str
    centre: str
    sex: str
    age: int
    half_width_mm: float  # lateral semi-axis of the trunk
    half_depth_mm: float  # antero-posterior semi-axis of the trunk
    fat_mm: float
    lung_hu: float
    right_dome_mm: float  # height of the right diaphragm dome above the costophrenic recesses (liver)
    left_dome_mm: float
    heart_scale: float
    infected: bool
    lesion_cause: str  # "covid", "other" (a pneumonia of another cause) or "none"
    target_burden: float  # share of the lung volume the lesions should fill
    consolidation_share: float  # share of the lesions that is consolidation rather than ground glass
    ggo_hu: float
    consolidation_hu: float
    nat_false_negative: bool
    reading_error: bool
    texture_seed: int


def plan_scan(index: int, rng: np.random.Generator) -> ScanPlan:
    """Draw patient ``index``'s scan: anatomy, centre, infection, lesions and the label errors.

    Args:
        index: the patient's position in the cohort (``HUST0001`` is index 0).
        rng: the patient's own generator; the same generator state gives the same plan.

    Returns:
        The plan :func:`render_scan` draws and :func:`scan_labels` labels.
    """
    sex = "M" if rng.random() < 0.55 else "F"
    size = 1.0 if sex == "M" else 0.92
    infected = bool(rng.random() < INFECTED_SHARE)
    if infected:
        cause = "none" if rng.random() < CLEAR_LUNGS_WHEN_INFECTED else "covid"
    else:
        cause = "other" if rng.random() < OTHER_LESIONS_WHEN_NOT_INFECTED else "none"
    if cause == "covid":  # the extent's stage is stratified over the cohort, so a small cohort has every stage
        stage = int(np.searchsorted(np.cumsum(COVID_STAGES), (index + 1) * GOLDEN_RATIO_CONJUGATE % 1.0, side="right"))
        low, high = COVID_STAGE_BURDEN[stage]
        burden, consolidation = rng.uniform(low, high), rng.uniform(0.05, 0.2) + 0.1 * stage
    elif cause == "other":  # a lobar pneumonia: mostly consolidation
        burden, consolidation = rng.uniform(0.02, 0.10), rng.uniform(0.4, 0.7)
    else:
        burden, consolidation = 0.0, 0.0
    return ScanPlan(
        patient=f"HUST{index + 1:04d}",
        centre=str(rng.choice(sorted(CENTRES))),
        sex=sex,
        age=int(rng.integers(25, 86)),
        half_width_mm=float(rng.uniform(140.0, 158.0) * size),
        half_depth_mm=float(rng.uniform(98.0, 112.0) * size),
        fat_mm=float(rng.uniform(6.0, 18.0)),
        lung_hu=float(rng.uniform(*LUNG_HU)),
        right_dome_mm=float(rng.uniform(45.0, 60.0)),
        left_dome_mm=float(rng.uniform(30.0, 45.0)),
        heart_scale=float(rng.uniform(0.9, 1.1) * size),
        infected=infected,
        lesion_cause=cause,
        target_burden=float(burden),
        consolidation_share=float(consolidation),
        ggo_hu=float(rng.uniform(-620.0, -420.0)),
        consolidation_hu=float(rng.uniform(-60.0, 30.0)),
        nat_false_negative=bool(infected and rng.random() < NAT_FALSE_NEGATIVE),
        reading_error=bool(rng.random() < READING_ERROR),
        texture_seed=int(rng.integers(2**31)),
    )


def scan_labels(plan: ScanPlan, burden: float) -> dict[str, str]:
    """HUST-19 labels of a rendered scan: morbidity from the lesion burden, NAT, and the radiologists' reading.

    Args:
        plan: the scan's plan (infection, test and reading errors).
        burden: the lesion burden the rendering achieved (``render_scan``'s ``latents["burden"]``).

    Returns:
        ``Morbidity`` (Control / Suspected / Mild / Regular / Severe / Critically ill), ``NAT`` and ``Radiology``
        (``Positive`` / ``Negative``).
    """
    if not plan.infected:
        morbidity = "Suspected" if burden > 0 else "Control"
    elif burden < MILD_BELOW:
        morbidity = "Mild"
    elif burden < SEVERE_FROM:
        morbidity = "Regular"
    else:
        morbidity = "Severe" if burden < CRITICAL_FROM else "Critically ill"
    nat = plan.infected and not plan.nat_false_negative
    radiology = (burden > 0) != plan.reading_error
    return {
        "Morbidity": morbidity,
        "NAT": "Positive" if nat else "Negative",
        "Radiology": "Positive" if radiology else "Negative",
    }


def _grid(size: CTDemoSize) -> tuple[tuple[np.ndarray, ...], int, tuple[float, ...]]:
    """Open-mesh coordinates (mm, volume centre at 0) of the fine drawing grid, its factor and voxel size."""
    factor = max(1, int(np.ceil(max(size.spacing) / FINE_VOXEL_MM)))
    axes = []
    for n, step in zip(size.shape, size.spacing, strict=True):
        fine = (np.arange(n * factor) + 0.5) / factor - 0.5  # fine voxel centres in output-voxel units
        axes.append((fine - (n - 1) / 2.0) * step)
    return tuple(np.ix_(*axes)), factor, tuple(s / factor for s in size.spacing)


def _segment_distance(points: tuple[np.ndarray, ...], start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Distance (mm) of every grid point to the segment ``start``-``end``."""
    direction = end - start
    along = sum((p - s) * d for p, s, d in zip(points, start, direction, strict=True))
    t = np.clip(along / max(float(direction @ direction), 1e-9), 0.0, 1.0)  # nearest point's place on the segment
    return np.sqrt(sum((p - s - t * d) ** 2 for p, s, d in zip(points, start, direction, strict=True)))


def _draw_tube(
    hu: np.ndarray,
    grid: tuple[np.ndarray, ...],
    start: Sequence[float],
    end: Sequence[float],
    radius: float,
    value: float,
) -> np.ndarray:
    """Set ``value`` inside a capsule of ``radius`` mm around a segment; returns the capsule's mask."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    axes = [coords.ravel() for coords in grid]
    box = tuple(
        slice(int(np.searchsorted(c, min(a, b) - radius)), int(np.searchsorted(c, max(a, b) + radius, side="right")))
        for c, a, b in zip(axes, start, end, strict=True)
    )  # only the capsule's bounding box is computed
    mask = np.zeros(hu.shape, dtype=bool)
    if any(b.start >= b.stop for b in box):
        return mask
    inside = _segment_distance(np.ix_(*(c[b] for c, b in zip(axes, box, strict=True))), start, end) <= radius
    hu[tuple(box)][inside] = value
    mask[tuple(box)] = inside
    return mask


def _vessel_tree(
    rng: np.random.Generator, root: np.ndarray, direction: np.ndarray, radius: float, length: float, depth: int
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Segments of a randomly branching vessel tree: each branch splits in two, thinner and shorter."""
    direction = direction / np.linalg.norm(direction)
    end = root + direction * length
    segments = [(root, end, radius)]
    if depth > 0:
        for sign in (-1.0, 1.0):
            turn = rng.normal(size=3)
            turn -= (turn @ direction) * direction
            child = direction + sign * 0.6 * turn / max(np.linalg.norm(turn), 1e-9)
            segments += _vessel_tree(rng, end, child, radius * 0.72, length * rng.uniform(0.7, 0.9), depth - 1)
    return segments


def _smooth_noise(
    rng: np.random.Generator, shape: tuple[int, ...], sigma_mm: float, voxel: Sequence[float]
) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation and a correlation length of ``sigma_mm``."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), [sigma_mm / v for v in voxel], mode="wrap")
    return field / max(float(field.std()), 1e-9)


def _anatomy(plan: ScanPlan, grid: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The trunk without lesions, texture or vessels: HU, lung labels (1 right, 2 left) and landmarks (mm)."""
    x, y, z = grid
    shape = np.broadcast_shapes(x.shape, y.shape, z.shape)
    hu = np.full(shape, -1000.0, dtype=np.float32)
    a, b = plan.half_width_mm, plan.half_depth_mm
    hu[np.broadcast_to((x / a) ** 2 + (y / b) ** 2 <= 1.0, shape)] = -100.0  # subcutaneous fat
    wall_a, wall_b = a - plan.fat_mm, b - plan.fat_mm
    hu[np.broadcast_to((x / wall_a) ** 2 + (y / wall_b) ** 2 <= 1.0, shape)] = 45.0  # muscle and the organs within
    cav_a, cav_b = wall_a - 22.0, wall_b - 18.0  # inner surface of the rib cage
    cavity = (x / cav_a) ** 2 + (y / cav_b) ** 2 <= 1.0
    spine_y = -cav_b + 14.0  # vertebral body centre: the spine bulges into the back of the cavity
    z_low = float(z.min())
    recess = z_low + 22.0  # costophrenic recesses, the lowest lung
    apex = recess + 235.0 * plan.heart_scale**0.3
    # lungs: the cavity above the diaphragm domes, below the apices, around mediastinum, heart, spine and aorta
    lung_cx, lung_a = (cav_a + 22.0) / 2.0, (cav_a - 22.0) / 2.0
    dome = np.where(x > 0, plan.right_dome_mm, plan.left_dome_mm) * np.clip(
        1.0 - ((np.abs(x) - lung_cx) / (lung_a * 1.3)) ** 2 - ((y + 10.0) / (cav_b * 1.1)) ** 2, 0.0, None
    )
    taper = 1.6 * np.clip((apex - z) / 120.0, 0.0, None)  # the apices narrow towards the neck
    apex_shape = ((np.abs(x) - lung_cx) / (lung_a + 4.0)) ** 2 + ((y + 0.1 * cav_b) / (cav_b * 0.75)) ** 2
    heart_c = np.array([-18.0, 0.35 * cav_b, recess + max(plan.left_dome_mm, plan.right_dome_mm) + 38.0])
    heart_r = np.array([62.0, 50.0, 55.0]) * plan.heart_scale
    heart = sum(((p - c) / r) ** 2 for p, c, r in zip(grid, heart_c, heart_r, strict=True)) <= 1.0
    mediastinum = np.abs(x + 4.0) < 20.0 + 10.0 * np.clip(y / cav_b, 0.0, 1.0)
    spine_zone = x**2 + (y - spine_y) ** 2 <= 30.0**2
    aorta_c = (-24.0, spine_y + 12.0)
    aorta_zone = (x - aorta_c[0]) ** 2 + (y - aorta_c[1]) ** 2 <= 17.0**2
    lungs = cavity & (z > recess + dome) & (z < apex) & (apex_shape <= taper)
    lungs &= ~heart & ~mediastinum & ~spine_zone & ~aorta_zone
    labels = np.where(lungs, np.where(x > 0, 1, 2), 0).astype(np.uint8)
    below = cavity & (z <= recess + dome)
    hu[below & (x > -15.0)] = 58.0  # liver under the right dome
    hu[below & (x <= -15.0)] = 42.0  # spleen and stomach under the left one
    hu[heart] = 40.0
    hu[lungs] = plan.lung_hu
    landmarks = {
        "spine_y": spine_y,
        "cav_a": cav_a,
        "cav_b": cav_b,
        "recess": recess,
        "apex": apex,
        "aorta": aorta_c,
        "heart_top": heart_c[2] + heart_r[2] * 0.6,
        "lung_cx": lung_cx,
    }
    return hu, labels, landmarks


def _bones(hu: np.ndarray, grid: tuple[np.ndarray, ...], marks: dict[str, Any]) -> None:
    """Draw vertebrae (bodies, discs, canal, arches, processes), ribs with costal cartilage and the sternum."""
    x, y, z = grid
    sy, cav_a, cav_b = marks["spine_y"], marks["cav_a"], marks["cav_b"]
    disc = np.mod(z - marks["recess"], 30.0) < 6.0  # a disc every 30 mm
    body_r = np.sqrt(x**2 + (y - sy) ** 2)
    vertebra = np.broadcast_to(body_r <= 17.0, hu.shape)
    hu[vertebra] = np.broadcast_to(np.where(disc, 80.0, np.where(body_r > 14.0, 900.0, 260.0)), hu.shape)[vertebra]
    canal_y = sy - 27.0
    canal_r = np.sqrt(x**2 + (y - canal_y) ** 2)
    arch = (canal_r <= 14.0) | ((np.abs(x) <= 5.0) & (y <= canal_y) & (y >= canal_y - 30.0))
    arch |= (np.abs(y - canal_y) <= 5.0) & (np.abs(x) <= 34.0)  # transverse processes
    arch = np.broadcast_to(arch & ~disc, hu.shape)
    hu[arch] = 750.0
    hu[np.broadcast_to(canal_r <= 8.0, hu.shape)] = 15.0  # spinal canal (cord and CSF)
    # ribs: bands just outside the cavity, sloping down from the spine to the front, cartilage near the sternum
    ring_a, ring_b = cav_a + 9.0, cav_b + 9.0
    radial = np.sqrt((x / ring_a) ** 2 + (y / ring_b) ** 2)
    angle = np.arccos(np.clip(-y / ring_b / np.maximum(radial, 1e-6), -1.0, 1.0))  # 0 at the back, pi at the front
    in_ring = np.abs(radial - 1.0) * min(ring_a, ring_b) <= 5.5
    top = marks["apex"] + 5.0
    for k in range(12):
        rib_z = top - 28.0 * k - 70.0 * (1.0 - np.cos(angle)) / 2.0
        band = in_ring & (np.abs(z - rib_z) <= 5.0) & (angle < 2.75)
        band = np.broadcast_to(band, hu.shape)
        cartilage = np.broadcast_to(angle > 2.35, hu.shape)
        hu[band & cartilage] = 120.0
        hu[band & ~cartilage] = 850.0
    sternum = (np.abs(x) <= 14.0) & (np.abs(y - (cav_b + 11.0)) <= 6.0) & (z >= marks["recess"] + 60.0)
    hu[np.broadcast_to(sternum & (z <= marks["apex"] - 20.0), hu.shape)] = 600.0


def _airways_and_vessels(
    hu: np.ndarray, labels: np.ndarray, grid: tuple[np.ndarray, ...], marks: dict[str, Any], rng: np.random.Generator
) -> None:
    """Draw the aorta, the pulmonary vessel trees (inside the lungs only), the trachea and the main bronchi."""
    top, sy = float(grid[2].max()), marks["spine_y"]
    ax, ay = marks["aorta"]
    arch_z = marks["heart_top"] + 45.0
    descending, arch, ascending = (ax, ay, marks["recess"]), (ax, ay, arch_z), (-5.0, 25.0, arch_z + 8.0)
    root = (5.0, 35.0, marks["heart_top"] - 10.0)
    for start, end in ((descending, arch), (arch, ascending), (ascending, root)):
        labels[_draw_tube(hu, grid, start, end, 13.0, 40.0)] = 0
    vessels = np.full(hu.shape, np.nan, dtype=np.float32)
    carina = np.array([0.0, sy + 45.0, marks["heart_top"] + 15.0])
    for side in (1.0, -1.0):
        hilum = np.array([side * (marks["lung_cx"] - 25.0), sy + 50.0, carina[2] - 25.0])
        for direction in ([side * 0.4, 0.6, 0.7], [side * 0.6, -0.5, -0.6], [side * 0.8, 0.3, -0.4]):
            for start, end, radius in _vessel_tree(rng, hilum, np.array(direction), 5.0, 42.0, 4):
                _draw_tube(vessels, grid, start, end, radius, 35.0)
        tube = _draw_tube(hu, grid, carina, hilum, 7.0, 30.0)  # main bronchus with its wall
        _draw_tube(hu, grid, carina, hilum, 5.0, -990.0)
        labels[tube] = 0
    tube = _draw_tube(hu, grid, (0.0, sy + 45.0, top + 10.0), carina, 11.0, 30.0)  # trachea and its wall
    _draw_tube(hu, grid, (0.0, sy + 45.0, top + 10.0), carina, 9.0, -990.0)
    labels[tube] = 0
    inside = (labels > 0) & ~np.isnan(vessels)
    hu[inside] = vessels[inside]


def _lesions(
    plan: ScanPlan,
    hu: np.ndarray,
    labels: np.ndarray,
    grid: tuple[np.ndarray, ...],
    voxel: Sequence[float],
    rng: np.random.Generator,
) -> tuple[float, float]:
    """Ground glass and consolidation filling ``plan.target_burden`` of the lungs; returns (burden, consolidation)."""
    lungs = labels > 0
    if plan.lesion_cause == "none" or not lungs.any():
        return 0.0, 0.0
    _, y, z = grid
    field = _smooth_noise(rng, hu.shape, 14.0, voxel)
    if plan.lesion_cause == "covid":  # multifocal, bilateral, peripheral, posterior and basal
        depth = ndimage.distance_transform_edt(lungs, sampling=voxel)
        zn = (z - z.min()) / max(float(np.ptp(z)), 1e-9)
        field = field + 1.6 * np.exp(-depth / 12.0) - 0.8 * np.clip(y / 80.0, -1, 1) - 0.8 * zn
    else:  # one lobe of one lung: a focus with a noisy edge
        side = 1 if rng.random() < 0.5 else 2
        focus = np.unravel_index(rng.choice(np.flatnonzero(labels == side)), labels.shape)
        centre = [float(c.ravel()[i]) for c, i in zip(grid, focus, strict=True)]
        distance = np.sqrt(sum((c - m) ** 2 for c, m in zip(grid, centre, strict=True)))
        field = 0.5 * field - distance / 25.0 + 3.0 * (labels == side)
    values = field[lungs]
    lesion = lungs & (field >= np.quantile(values, 1.0 - plan.target_burden))
    if not lesion.any():
        return 0.0, 0.0
    core = lesion & (field >= np.quantile(field[lesion], 1.0 - plan.consolidation_share))
    texture = _smooth_noise(rng, hu.shape, 3.0, voxel)
    ggo = np.clip(plan.ggo_hu + 60.0 * texture, *GGO_HU)
    consolidation = np.clip(plan.consolidation_hu + 25.0 * texture, *CONSOLIDATION_HU)
    hu[lesion] = np.maximum(hu[lesion], ggo[lesion])  # vessels stay visible through ground glass
    hu[core] = consolidation[core]
    return float(lesion.sum() / lungs.sum()), float(core.sum() / lesion.sum())


def render_scan(plan: ScanPlan, size: CTDemoSize) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Render a planned scan on the grid of ``size``.

    The anatomy is drawn on a grid of at most ``FINE_VOXEL_MM`` and averaged down (partial volume), then blurred and
    made noisy as the patient's centre reconstructs scans.

    Args:
        plan: from :func:`plan_scan`.
        size: voxels and voxel size of the output.

    Returns:
        The volume in HU (float32, RAS order, shape ``size.shape``), the ground-truth lungs (uint8: 0 background,
        1 right lung, 2 left lung; lesions and vessels included, airways excluded) and latent values:
        ``burden`` (lesion share of the lungs), ``consolidation`` (consolidation share of the lesions) and
        ``lung_volume_ml``.
    """
    rng = np.random.default_rng(plan.texture_seed)
    grid, factor, voxel = _grid(size)
    hu, labels, marks = _anatomy(plan, grid)
    gravity = np.clip(-grid[1] / marks["cav_b"], -1.0, 1.0)  # dependent (posterior) lung is denser
    parenchyma = plan.lung_hu + 30.0 * gravity + 18.0 * _smooth_noise(rng, hu.shape, 4.0, voxel)
    hu[labels > 0] = parenchyma[labels > 0]
    _airways_and_vessels(hu, labels, grid, marks, rng)
    _bones(hu, grid, marks)
    burden, consolidation = _lesions(plan, hu, labels, grid, voxel, rng)
    block = (factor, factor, factor)
    volume = block_reduce(hu, block, np.mean)
    truth = np.zeros(size.shape, dtype=np.uint8)
    for label in (1, 2):
        truth[block_reduce(labels == label, block, np.mean) >= 0.5] = label
    centre = CENTRES[plan.centre]
    volume = ndimage.gaussian_filter(volume, [centre.blur_mm / 2.355 / s for s in size.spacing])  # FWHM -> sigma
    volume += centre.noise_hu * rng.standard_normal(volume.shape)
    volume = np.clip(volume, RESCALE_INTERCEPT, RESCALE_INTERCEPT + STORED_MAX).astype(np.float32)
    latents = {
        "burden": burden,
        "consolidation": consolidation,
        "lung_volume_ml": float((truth > 0).sum() * np.prod(size.spacing) / 1000.0),
    }
    return volume, truth, latents


def ras_affine(size: CTDemoSize) -> np.ndarray:
    """The RAS affine of a synthetic volume: ``size.spacing`` on the diagonal, the volume centred on the origin."""
    affine = np.diag([*size.spacing, 1.0])
    affine[:3, 3] = [-(n - 1) / 2.0 * s for n, s in zip(size.shape, size.spacing, strict=True)]
    return affine


def write_dicom_series(folder: Path, hu: np.ndarray, size: CTDemoSize, plan: ScanPlan, seed: int) -> None:
    """Write a volume as one CT Image Storage file per axial slice, with synthetic PHI and deterministic UIDs.

    Geometry: slice ``k`` holds ``hu[::-1, ::-1, k].T`` (rows run to the patient's back, columns to the left, as
    ``ImageOrientationPatient`` 1\\0\\0\\0\\1\\0 says in DICOM's LPS space) and ``ImagePositionPatient`` is the
    LPS position of its first pixel, so MONAI's reader followed by ``Orientationd("RAS")`` gives back ``hu`` with
    :func:`ras_affine`. Pixels are HU + 1024 (``RescaleIntercept`` -1024), 12 bits stored.
    """
    folder.mkdir(parents=True, exist_ok=True)
    origin = ras_affine(size)[:3, 3]
    uid = {part: generate_uid(entropy_srcs=[str(seed), plan.patient, part]) for part in ("study", "series", "frame")}
    stored = (np.rint(hu).astype(np.int32) - RESCALE_INTERCEPT).astype(np.uint16)
    for k in range(size.shape[2]):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(
            entropy_srcs=[str(seed), plan.patient, "slice", str(k)]
        )
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.Modality = "CT"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.Manufacturer = "SYNTHETIC"
        ds.InstitutionName = f"SYNTH {plan.centre}"
        ds.PatientName = f"SYNTH^{plan.patient}"
        ds.PatientID = plan.patient
        ds.PatientBirthDate = f"{2020 - plan.age}0101"
        ds.PatientSex = plan.sex
        ds.PatientAge = f"{plan.age:03d}Y"
        ds.StudyDate = ds.SeriesDate = "20200215"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = uid["study"], uid["series"], uid["frame"]
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, k + 1
        ds.BodyPartExamined = "CHEST"
        ds.KVP = 120
        ds.SliceThickness = size.spacing[2]
        ds.SpacingBetweenSlices = size.spacing[2]
        ds.PixelSpacing = [size.spacing[1], size.spacing[0]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        z = origin[2] + k * size.spacing[2]
        ds.ImagePositionPatient = [float(origin[0]), float(origin[1]), float(z)]
        ds.SliceLocation = float(z)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = size.shape[1], size.shape[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = RESCALE_INTERCEPT, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = -600, 1500
        ds.PixelData = np.ascontiguousarray(stored[::-1, ::-1, k].T).tobytes()
        ds.save_as(folder / f"{k + 1:04d}.dcm", enforce_file_format=True)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def generate_ct_demo_data(out: str | os.PathLike[str], size: str = "small", seed: int = 0) -> dict[str, Any]:
    """Write a synthetic HUST-19-like cohort under ``<out>/HUST19`` (see the module docstring for the layout).

    Patient ``i`` is drawn from ``numpy.random.default_rng([seed, i])``: the same seed and size give the same files.
    ``synthetic/complete.json`` is written last, so a cohort cut short is recognised and made again.

    Args:
        out: the folder that receives ``HUST19/``.
        size: a key of :data:`CT_DEMO_SIZES`.
        seed: the cohort's seed.

    Returns:
        A summary: root, size, seed, number of scans and counts per label.

    Raises:
        ValueError: an unknown size.
    """
    if size not in CT_DEMO_SIZES:
        raise ValueError(f"unknown CT demo size {size!r}; choose one of {', '.join(sorted(CT_DEMO_SIZES))}")
    spec = CT_DEMO_SIZES[size]
    root = Path(out) / DATASET_FOLDER
    masks = root / "synthetic" / "masks"
    masks.mkdir(parents=True, exist_ok=True)
    (root / "nifti").mkdir(exist_ok=True)
    complete = root / "synthetic" / "complete.json"
    complete.unlink(missing_ok=True)  # until every file of this cohort is written
    affine = ras_affine(spec)
    label_rows, latent_rows = [], []
    for index in range(spec.scans):
        plan = plan_scan(index, np.random.default_rng([seed, index]))
        hu, truth, latents = render_scan(plan, spec)
        hu = np.rint(hu).astype(np.int16)  # integer HU in both files, as scanners store them
        write_dicom_series(root / "dicom" / plan.patient, hu, spec, plan, seed)
        for array, path in ((hu, root / "nifti"), (truth, masks)):
            image = nib.Nifti1Image(array, affine)
            image.header.set_xyzt_units("mm")
            image.set_qform(affine, code=1)
            image.set_sform(affine, code=1)
            nib.save(image, path / f"{plan.patient}.nii.gz")
        images = {"Series": f"dicom/{plan.patient}", "NIfTI": f"nifti/{plan.patient}.nii.gz"}
        label_rows.append(
            {"PatientID": plan.patient, "Centre": plan.centre, **scan_labels(plan, latents["burden"]), **images}
        )
        latent_rows.append({"PatientID": plan.patient, **latents, **{key: getattr(plan, key) for key in HIDDEN_CAUSES}})
    _write_csv(root / "labels.csv", label_rows)
    _write_csv(root / "synthetic" / "latents.csv", latent_rows)
    pairs = [(row["NAT"], row["Radiology"]) for row in label_rows]
    summary = {
        "root": str(root),
        "size": size,
        "seed": seed,
        "scans": spec.scans,
        "nat_positive": sum(nat == "Positive" for nat, _ in pairs),
        "radiology_positive": sum(radiology == "Positive" for _, radiology in pairs),
        "nat_positive_radiology_negative": pairs.count(("Positive", "Negative")),
        "radiology_positive_nat_negative": pairs.count(("Negative", "Positive")),
        "morbidity": {m: sum(row["Morbidity"] == m for row in label_rows) for m in MORBIDITIES},
    }
    complete.write_text(json.dumps(summary, indent=1))
    return summary
