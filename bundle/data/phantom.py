"""Synthetic chest radiograph phantoms with exact lung masks and COVID-like opacities per Brixia zone.

Real radiographs cannot be shipped, and a test or a demo needs images whose lungs and findings are known exactly. A
phantom is rendered as a projection: every structure adds (or, for lung air, removes) attenuation along the beam,
and the detector value is ``1 - exp(-k * attenuation)``, air dark. The structures are those a reader and the
classical lung-field step rely on: the body outline with neck and shoulders, two lung fields of varying size, shape
and position, the heart and mediastinum with the aortic knob, the spine, posterior and anterior ribs, clavicles, the
diaphragm domes (the right one usually higher), hilar shadows and vessel markings.

COVID-like opacities replace lung air, patchy and with peripheral predominance. Their extent and density follow the
Brixia score of each zone (A-C the patient's right lung, on the image left; D-F the left lung; upper, middle and
lower thirds of each lung), as the score defines them: 1 interstitial (reticular ground glass), 2 interstitial and
alveolar (wider ground glass with some consolidation), 3 alveolar dominant (consolidation over much of the zone).
Zones blend over a few percent of the height. The random fields behind the opacities are drawn whatever the scores,
so that one generator state gives the same anatomy and texture for any scores: raising a score only ever adds
opacity, and only inside the lungs.

Geometry is expressed in fractions of the image height (rows) and width (columns), so one :class:`Anatomy` renders
at any size. Images with a long side above 640 pixels are rendered at 640 and upsampled, which keeps the demo's
2000-pixel images fast (the anatomy is smooth; the detector adds the fine grain), while the lung mask is always
evaluated at full size. The detector (contrast, noise, blur) is applied afterwards by
:func:`bundle.data.synthetic.simulate_detector`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.special import expit, ndtr

__all__ = ["Anatomy", "lung_fields", "make_phantom", "sample_anatomy"]


# Opacity of a zone scored 0-3: ground glass replaces part of the air, consolidation nearly all of it.
_GGO_THRESHOLD = (np.inf, 0.62, 0.42, 0.2)  # patch-field level where ground glass starts (lower: wider)
_GGO_FRACTION = (0.0, 0.3, 0.4, 0.5)  # fraction of the lung air it replaces at its densest
_GGO_RAMP = 0.3  # ground glass fades in over this range of the patch field: a haze with ill-defined borders
_CONSOLIDATION_THRESHOLD = (np.inf, np.inf, 0.86, 0.6)
_CONSOLIDATION_FRACTION = 0.8
_CONSOLIDATION_RAMP = 0.12  # consolidation is denser and better defined
_RETICULAR = (0.0, 0.6, 0.45, 0.3)  # weight of the fine reticular texture (interstitial pattern)
_ZONE_BLEND = 0.012  # width of the blend between zones, as a fraction of the image height
_PERIPHERAL_BIAS = 0.25  # COVID opacities favour the lung periphery

_CONTRAST = np.log(4.0)  # detector value 0.75 for the body's full soft-tissue thickness
_COARSE_SIZE = 96  # long side of the grid of the smooth random fields, upsampled to the image
_RENDER_SIZE = 640  # larger images are rendered at this long side and upsampled (the lung mask stays exact)


@dataclass(frozen=True)
class Anatomy:
    """Geometry and densities of one phantom, in fractions of the image height (rows) and width (columns).

    Pairs are ``(right lung, left lung)``, i.e. (image left, image right). Distances from the midline are measured
    in the thorax frame, which is the image frame rotated by ``tilt_deg`` and scaled by ``scale`` about ``center``.

    Attributes:
        center: ``(row, column)`` of the thorax centre: the hilum level and the midline.
        tilt_deg: rotation of the patient in the image plane, degrees.
        scale: size of the thorax relative to the image (below 1: a wider field of view).
        body_half_width: half width of the chest wall.
        shoulder_row: row where the neck widens into the shoulders.
        lung_apex: row of each lung apex.
        lung_base: row of each costophrenic angle, the lowest point of the lung.
        dome_height: rise of each hemidiaphragm dome above the costophrenic angle.
        lung_lateral: distance of each lung's lateral border from the midline.
        mediastinum_half_width: distance of the lungs' medial borders from the midline.
        heart_extent: ``(right, left)`` extent of the heart from the midline.
        heart_top: row of the top of the heart.
        rib_spacing: vertical distance between consecutive posterior ribs.
        rib_thickness: half height of a rib.
        rib_drop: how much the posterior ribs descend from the spine to the lateral chest wall.
        clavicle_row: row of the clavicles' medial ends.
        soft_tissue: attenuation of the full body thickness.
        lung_air: attenuation removed by the full depth of lung air.
        bone: attenuation of a full rib, clavicle or vertebra.
    """

    center: tuple[float, float]
    tilt_deg: float
    scale: float
    body_half_width: float
    shoulder_row: float
    lung_apex: tuple[float, float]
    lung_base: tuple[float, float]
    dome_height: tuple[float, float]
    lung_lateral: tuple[float, float]
    mediastinum_half_width: float
    heart_extent: tuple[float, float]
    heart_top: float
    rib_spacing: float
    rib_thickness: float
    rib_drop: float
    clavicle_row: float
    soft_tissue: float
    lung_air: float
    bone: float


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw a plausible adult PA/AP chest anatomy.

    The ranges keep the lungs apart (each on its side of the image centre) and inside the body, so that every draw
    is a valid radiograph for the lung-field step and the Brixia zones.

    Args:
        rng: random generator; the same state gives the same anatomy.

    Returns:
        The sampled :class:`Anatomy`.
    """
    apex = rng.uniform(0.13, 0.18)
    base = rng.uniform(0.72, 0.8)
    right_dome_lift = rng.uniform(0.005, 0.03)  # the liver pushes the right hemidiaphragm up
    return Anatomy(
        center=(float(rng.uniform(0.44, 0.5)), float(rng.uniform(0.485, 0.515))),
        tilt_deg=float(rng.uniform(-2.0, 2.0)),
        scale=float(rng.uniform(0.92, 1.04)),
        body_half_width=float(rng.uniform(0.43, 0.47)),
        shoulder_row=float(rng.uniform(-0.08, 0.03)),
        lung_apex=(float(apex + rng.uniform(-0.01, 0.01)), float(apex + rng.uniform(-0.01, 0.01))),
        lung_base=(float(base - right_dome_lift), float(base)),
        dome_height=(float(rng.uniform(0.05, 0.09)), float(rng.uniform(0.05, 0.09))),
        lung_lateral=(float(rng.uniform(0.35, 0.4)), float(rng.uniform(0.35, 0.4))),
        mediastinum_half_width=float(rng.uniform(0.05, 0.065)),
        heart_extent=(float(rng.uniform(0.07, 0.09)), float(rng.uniform(0.14, 0.18))),
        heart_top=float(base - rng.uniform(0.27, 0.32)),
        rib_spacing=float(rng.uniform(0.055, 0.068)),
        rib_thickness=float(rng.uniform(0.011, 0.015)),
        rib_drop=float(rng.uniform(0.16, 0.22)),
        clavicle_row=float(apex + rng.uniform(0.01, 0.04)),
        soft_tissue=float(rng.uniform(0.95, 1.05)),
        lung_air=float(rng.uniform(0.62, 0.72)),
        bone=float(rng.uniform(0.2, 0.28)),
    )


def _smoothstep(t: np.ndarray) -> np.ndarray:
    """0 at ``t <= 0`` rising smoothly (zero slope at both ends) to 1 at ``t >= 1``: soft borders of findings."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _quarter_circle(t: np.ndarray) -> np.ndarray:
    """0 at ``t <= 0`` rising like a quarter circle to 1 at ``t >= 1``: the rounded top of a lung."""
    t = np.clip(t, 0.0, 1.0)
    return np.sqrt(1.0 - (1.0 - t) ** 2)


def _thorax_frame(
    anatomy: Anatomy, shape: tuple[int, int], rows: np.ndarray | None = None, cols: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(u, v)`` of pixels: distance from the midline (positive towards the patient's left) and thorax-frame row.

    Args:
        anatomy: gives the centre, tilt and scale of the thorax frame.
        shape: ``(height, width)`` of the image.
        rows: pixel row indices, broadcastable with ``cols``; every row (as a column vector) when None.
        cols: pixel column indices; every column (as a row vector) when None.
    """
    height, width = shape
    rows = np.arange(height)[:, None] if rows is None else rows
    cols = np.arange(width)[None, :] if cols is None else cols
    row0, col0 = anatomy.center
    angle = np.deg2rad(anatomy.tilt_deg)
    dy = (rows.astype(np.float32) + 0.5) / height - row0
    dx = (cols.astype(np.float32) + 0.5) / width - col0
    u = (np.cos(angle) * dx + np.sin(angle) * dy) / anatomy.scale
    v = row0 + (np.cos(angle) * dy - np.sin(angle) * dx) / anatomy.scale
    return u.astype(np.float32), v.astype(np.float32)


def _heart(anatomy: Anatomy, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Depth (0-1) of the heart silhouette: an ellipse, wider to the patient's left, resting on the diaphragm."""
    bottom = max(anatomy.lung_base) + 0.02
    half_height = (bottom - anatomy.heart_top) / 2
    middle = anatomy.heart_top + half_height
    offset = (anatomy.heart_extent[1] - anatomy.heart_extent[0]) / 2
    half_width = (anatomy.heart_extent[0] + anatomy.heart_extent[1]) / 2
    r2 = ((u - offset) / half_width) ** 2 + ((v - middle) / half_height) ** 2
    return np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))


def _lungs(
    anatomy: Anatomy, u: np.ndarray, v: np.ndarray, with_depth: bool = True
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per lung: its exact field (bool) and, when asked, its air depth (0-1, steep at the borders, 0 outside)."""
    heart = _heart(anatomy, u, v) > 0
    medial = anatomy.mediastinum_half_width
    fields, depths = [], []
    for side in (0, 1):
        q = -u if side == 0 else u  # distance from the midline towards this lung's side
        apex, base, lateral = anatomy.lung_apex[side], anatomy.lung_base[side], anatomy.lung_lateral[side]
        t = (v - apex) / (base - apex)
        apex_col = medial + 0.35 * (lateral - medial)
        inner = apex_col - (apex_col - medial) * _quarter_circle(t / 0.22)
        outer = apex_col + (lateral - apex_col) * _quarter_circle(t / 0.55)
        across = np.clip((q - medial) / (lateral - medial), 0.0, 1.0)
        floor = base - anatomy.dome_height[side] * np.clip(np.sin(np.pi * across), 0.0, 1.0) ** 0.6
        field = (t > 0) & (q > inner) & (q < outer) & (v < floor) & ~heart
        if side == 1:  # the aortic knob bulges into the upper left lung
            knob_row = apex + 0.28 * (base - apex)
            field &= ((u - medial - 0.005) / 0.032) ** 2 + ((v - knob_row) / 0.03) ** 2 > 1
        fields.append(field)
        if not with_depth:
            continue
        width = np.maximum(outer - inner, 1e-6)
        position = np.clip((q - inner) / width, 0.0, 1.0)
        depth = (
            (4 * position * (1 - position)) ** 0.3
            * np.clip((floor - v) / 0.05, 0.0, 1.0) ** 0.5
            * np.clip(t / 0.12, 0.0, 1.0) ** 0.5
        )
        depths.append(np.where(field, depth, 0.0).astype(np.float32))
    return fields, depths


def lung_fields(anatomy: Anatomy, shape: tuple[int, int]) -> np.ndarray:
    """The exact lung mask of ``anatomy`` at ``shape``, without rendering the radiograph.

    The mask is the visible lung field as lung-segmentation datasets annotate it: the heart, the mediastinum and
    the region below the diaphragm domes are not lung.

    Args:
        anatomy: the phantom's geometry.
        shape: ``(height, width)`` in pixels.

    Returns:
        ``(height, width)`` bool array, True in either lung.
    """
    shape = _check_shape(shape)
    rows, cols = _lung_box(anatomy, shape)
    u, v = _thorax_frame(anatomy, shape, np.arange(rows.start, rows.stop)[:, None], np.arange(cols.start, cols.stop))
    fields, _ = _lungs(anatomy, u, v, with_depth=False)
    mask = np.zeros(shape, dtype=bool)
    mask[rows, cols] = fields[0] | fields[1]
    return mask


def _lung_box(anatomy: Anatomy, shape: tuple[int, int]) -> tuple[slice, slice]:
    """Pixel rows and columns that can hold lung: the image-frame bounding box of the thorax-frame lung rectangle."""
    row0, col0 = anatomy.center
    angle = np.deg2rad(anatomy.tilt_deg)
    lateral = max(anatomy.lung_lateral)
    u = np.array([-lateral, lateral, -lateral, lateral])
    v = np.array([min(anatomy.lung_apex)] * 2 + [max(anatomy.lung_base)] * 2) - row0
    rows = (row0 + anatomy.scale * (np.sin(angle) * u + np.cos(angle) * v)) * shape[0]
    cols = (col0 + anatomy.scale * (np.cos(angle) * u - np.sin(angle) * v)) * shape[1]
    return tuple(
        slice(max(0, int(np.floor(edges.min())) - 1), min(size, int(np.ceil(edges.max())) + 1))
        for edges, size in ((rows, shape[0]), (cols, shape[1]))
    )


def _render_shape(shape: tuple[int, int]) -> tuple[int, int]:
    """The shape a phantom is rendered at: ``shape`` itself, or scaled to a long side of ``_RENDER_SIZE``."""
    factor = min(1.0, _RENDER_SIZE / max(shape))
    return max(16, round(shape[0] * factor)), max(16, round(shape[1] * factor))


def _check_shape(shape: Sequence[int]) -> tuple[int, int]:
    """``(height, width)`` as ints; the smallest phantom that still has room for both lungs is 16 x 16."""
    if len(shape) != 2 or min(int(s) for s in shape) < 16:
        raise ValueError(f"shape must be (height, width) of at least 16 x 16 pixels, got {tuple(shape)}.")
    return int(shape[0]), int(shape[1])


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """A smooth Gaussian random field with standard normal marginals, drawn on a coarse grid and upsampled.

    Args:
        rng: random generator.
        shape: output ``(height, width)``.
        sigma: correlation length in coarse-grid pixels (the coarse grid has ``_COARSE_SIZE`` on its long side).
    """
    factor = max(shape) / _COARSE_SIZE
    coarse_shape = tuple(max(4, round(s / factor)) for s in shape)
    field = ndimage.gaussian_filter(rng.standard_normal(coarse_shape), sigma, mode="wrap")
    field = (field - field.mean()) / max(field.std(), 1e-12)
    return _resize(field, shape)


def _bands(coordinate: np.ndarray, count: int, half_thickness: np.ndarray) -> np.ndarray:
    """Cross-section (0-1) of ``count`` parallel bones centred where ``coordinate`` is ``0, 1, ..., count - 1``.

    Args:
        coordinate: position across the bones, in units of their spacing.
        count: number of bones.
        half_thickness: half thickness of a bone, in units of the spacing.

    Returns:
        A cylinder-like profile with brighter cortical edges, 0 between the bones and outside the first and last.
    """
    offset = (coordinate - np.clip(np.rint(coordinate), 0, count - 1)) / half_thickness
    inside = np.clip(1 - offset**2, 0.0, 1.0)
    return np.sqrt(inside) * (0.55 + 0.45 * offset**2)


def _bone(anatomy: Anatomy, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Attenuation (in bone units) of the spine, the posterior and anterior ribs and the clavicles."""
    q = np.abs(u)
    spine_half_width = 0.032
    vertebrae = 0.85 + 0.15 * np.cos(2 * np.pi * v / (anatomy.rib_spacing * 0.95))
    spine = np.sqrt(np.clip(1 - (u / spine_half_width) ** 2, 0.0, 1.0)) * vertebrae
    lateral = max(anatomy.lung_lateral) + 0.03
    reach = np.clip(q / lateral, 0.0, 1.2)
    in_cage = np.clip((lateral + 0.02 - q) / 0.04, 0.0, 1.0) * np.clip((q - 0.02) / 0.03, 0.0, 1.0)
    first_rib = min(anatomy.lung_apex) - 0.015
    thickness = anatomy.rib_thickness * (1 + 0.3 * reach) / anatomy.rib_spacing

    posterior_row = (v - first_rib + 0.06 * reach - anatomy.rib_drop * reach**2) / anatomy.rib_spacing
    posterior = _bands(posterior_row, 10, thickness) * (1 - 0.04 * np.clip(posterior_row, 0, 10))

    anterior_spacing = anatomy.rib_spacing * 1.2
    anterior_row = (v - first_rib - 0.06 - 0.14 * (1 - reach)) / anterior_spacing
    anterior = _bands(anterior_row, 6, thickness * anatomy.rib_spacing / anterior_spacing)
    anterior *= np.clip((reach - 0.3) / 0.15, 0.0, 1.0) * 0.45

    clavicle_q = np.clip((q - 0.03) / 0.28, 0.0, 1.0)
    clavicle_row = anatomy.clavicle_row - 0.06 * clavicle_q + 0.008 * np.sin(2 * np.pi * clavicle_q)
    clavicle = 0.8 * _bands((v - clavicle_row) / 0.014, 1, np.float32(1.0))
    clavicle *= np.clip((q - 0.03) / 0.01, 0.0, 1.0) * np.clip((0.32 - q) / 0.01, 0.0, 1.0)

    return spine + np.maximum(posterior, anterior) * in_cage + clavicle


def _zone_weights(anatomy: Anatomy, v: np.ndarray, side: int) -> list[np.ndarray]:
    """Soft weights (summing to 1) of the upper, middle and lower third of one lung along the thorax-frame rows."""
    apex, base = anatomy.lung_apex[side], anatomy.lung_base[side]
    upper = expit((v - (apex + (base - apex) / 3)) / _ZONE_BLEND)
    lower = expit((v - (apex + 2 * (base - apex) / 3)) / _ZONE_BLEND)
    return [1 - upper, upper - lower, lower]


def _zone_opacity(patches: np.ndarray, reticular: np.ndarray, score: int) -> np.ndarray:
    """Fraction (0-1) of lung air replaced in a zone with Brixia ``score``; pointwise non-decreasing in the score."""
    if score == 0:
        return np.zeros_like(patches)
    ground_glass = _smoothstep((patches - _GGO_THRESHOLD[score]) / _GGO_RAMP) * _GGO_FRACTION[score]
    ground_glass *= 1 - _RETICULAR[score] + _RETICULAR[score] * reticular
    consolidation = _smoothstep((patches - _CONSOLIDATION_THRESHOLD[score]) / _CONSOLIDATION_RAMP)
    return np.maximum(ground_glass, consolidation * _CONSOLIDATION_FRACTION)


def make_phantom(
    rng: np.random.Generator,
    shape: Sequence[int],
    zone_scores: Sequence[int] = (0, 0, 0, 0, 0, 0),
    anatomy: Anatomy | None = None,
    opacity: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render a chest radiograph phantom and its exact lung mask.

    Args:
        rng: random generator for the anatomy (when not given) and the tissue and opacity textures.
        shape: ``(height, width)`` in pixels.
        zone_scores: Brixia score 0-3 of the zones A-F (A-C the patient's right lung, upper to lower).
        anatomy: geometry to render; drawn with :func:`sample_anatomy` from ``rng`` when None.
        opacity: optional extra ``(height, width)`` fraction (0-1) of lung air replaced, for generators that draw
            their own findings (e.g. boxes of a detection dataset); it acts only inside the lungs.

    Returns:
        ``(image, lungs)``: the air-dark radiograph ``(height, width)`` float32 in [0, 1], and the exact lung mask
        ``(height, width)`` bool.

    Raises:
        ValueError: if the shape is not 2D and at least 16 x 16, a zone score is not an integer 0-3 or there are not
            six of them, or ``opacity`` has another shape or values outside [0, 1].
    """
    shape = _check_shape(shape)
    scores = tuple(zone_scores)
    if len(scores) != 6 or not all(isinstance(s, (int, np.integer)) and 0 <= s <= 3 for s in scores):
        raise ValueError(f"zone_scores must be six integers 0-3 (zones A-F), got {scores}.")
    if opacity is not None and (opacity.shape != shape or not (np.min(opacity) >= 0 and np.max(opacity) <= 1)):
        raise ValueError(f"opacity must be a {shape} array of fractions in [0, 1], got shape {opacity.shape}.")
    anatomy = sample_anatomy(rng) if anatomy is None else anatomy
    work_shape = _render_shape(shape)
    # Every random field is drawn whatever the scores, so that the scores change nothing but the opacities.
    textures = (
        _smooth_field(rng, work_shape, sigma=0.8),
        ndtr(_smooth_field(rng, work_shape, sigma=3.0)),  # uniform marginals: thresholds are coverage fractions
        ndtr(_smooth_field(rng, work_shape, sigma=0.4)),
    )
    if work_shape == shape:
        return _render(anatomy, shape, scores, textures, opacity)
    if opacity is not None:
        opacity = _resize(opacity, work_shape)
    image, _ = _render(anatomy, work_shape, scores, textures, opacity)
    return np.clip(_resize(image, shape), 0.0, 1.0), lung_fields(anatomy, shape)


def _resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resampling of a smooth ``(h, w)`` map to ``shape``."""
    zoom = tuple(s / c for s, c in zip(shape, image.shape, strict=True))
    return ndimage.zoom(image, zoom, order=1, mode="nearest", grid_mode=True).astype(np.float32)[: shape[0], : shape[1]]


def _render(
    anatomy: Anatomy,
    shape: tuple[int, int],
    scores: tuple[int, ...],
    textures: tuple[np.ndarray, np.ndarray, np.ndarray],
    opacity: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The radiograph and lung mask of :func:`make_phantom` at ``shape``, from drawn texture fields.

    Args:
        anatomy: geometry and densities.
        shape: ``(height, width)`` to render.
        scores: Brixia zone scores A-F.
        textures: vessel markings (standard normal), opacity patches and reticular pattern (both uniform 0-1).
        opacity: optional extra fraction of lung air replaced, at ``shape``.
    """
    markings, patches, reticular = textures
    u, v = _thorax_frame(anatomy, shape)
    fields, depths = _lungs(anatomy, u, v)
    shoulders = _quarter_circle((v - anatomy.shoulder_row) / 0.2)
    waist = 1 - 0.08 * np.clip((v - max(anatomy.lung_base)) / 0.3, 0.0, 1.0)
    half_width = anatomy.body_half_width * (0.25 + 0.75 * shoulders) * waist
    body = np.sqrt(np.clip(1 - np.abs(u / half_width) ** 3, 0.0, 1.0))
    trachea = np.exp(-((u / 0.012) ** 2)) * np.clip((anatomy.center[0] - 0.05 - v) / 0.03, 0.0, 1.0)

    filled = np.zeros(shape, dtype=np.float32)
    medial = anatomy.mediastinum_half_width
    for side, depth in enumerate(depths):
        position = np.clip((np.abs(u) - medial) / (anatomy.lung_lateral[side] - medial), 0.0, 1.0)
        level = patches + _PERIPHERAL_BIAS * (position - 0.5)
        lung = sum(
            weight * _zone_opacity(level, reticular, scores[3 * side + third])
            for third, weight in enumerate(_zone_weights(anatomy, v, side))
        )
        filled += depth * lung
    if opacity is not None:
        filled = np.maximum(filled, opacity.astype(np.float32) * (depths[0] + depths[1]))
    air = depths[0] + depths[1]

    hila = sum(
        np.exp(-(((u - sign * (medial + 0.035)) / 0.04) ** 2 + ((v - anatomy.center[0]) / 0.05) ** 2))
        for sign in (-1, 1)
    )
    vessels = (0.07 + 0.35 * hila) * (1 + 0.5 * markings)
    lung_air = air * (1 - np.clip(vessels, 0.0, 0.6)) - filled
    above_diaphragm = np.clip((min(anatomy.lung_base) - 0.04 - v) / 0.04, 0.0, 1.0)
    retrocardiac = 0.2 * np.sqrt(_heart(anatomy, u, v)) * above_diaphragm  # lung behind the heart
    attenuation = (
        anatomy.soft_tissue * body
        - anatomy.lung_air * retrocardiac
        - anatomy.lung_air * np.clip(lung_air, 0.0, 1.0)
        - 0.25 * trachea
        + anatomy.bone * _bone(anatomy, u, v) * (body > 0)
    )
    image = -np.expm1(-_CONTRAST * np.clip(attenuation, 0.0, None))
    return np.clip(image, 0.0, 1.0).astype(np.float32), fields[0] | fields[1]
