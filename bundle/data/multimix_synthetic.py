"""Synthetic MultiMix demo data: Kermany, JSRT, NIH and Montgomery look-alikes written in their published layouts.

Real radiographs cannot be shipped, and the MultiMix workflows need a classification and a segmentation dataset from
one acquisition style (in-domain) and a pair from another (cross-domain, never trained on). Phantoms from
:mod:`bundle.data.phantom` give the anatomy and the exact lung masks; pneumonia is drawn as opacities in one to three
lung zones (middle and lower zones favoured) with Brixia-like scores 1-3, from haze to consolidation. The detector
(contrast, noise, blur) is :func:`bundle.data.synthetic.simulate_detector`; the two styles also differ in field of
view, grey window and aspect ratio. The files are written in the real layouts, so the datalists come from the same
adapters (:func:`bundle.data.multimix_data.prepare_multimix`) that read the real datasets.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from bundle.data.multimix_data import KERMANY_CLASSES, TARGETS, prepare_multimix
from bundle.data.phantom import Anatomy, make_phantom, sample_anatomy
from bundle.data.synthetic import Acquisition, simulate_detector

__all__ = [
    "CROSS_DOMAIN",
    "DEMO_DATASETS",
    "IN_DOMAIN",
    "MULTIMIX_DEMO_SIZES",
    "AcquisitionStyle",
    "DemoDataset",
    "DemoSize",
    "ensure_multimix_datalists",
    "generate_multimix_dataset",
]

logger = logging.getLogger(__name__)

MARKER = "synthetic.json"
"""Written last into a generated dataset folder: the size and seed it was made with."""


@dataclass(frozen=True)
class AcquisitionStyle:
    """How one group of datasets looks.

    Attributes:
        gamma: detector contrast exponent (above 1: darker mid-tones).
        noise: standard deviation of the detector noise, in units of the [0, 1] image.
        blur: Gaussian blur sigma in pixels of a 256-pixel image (scaled with the image size).
        field_of_view: width of the field relative to the thorax (above 1: a smaller thorax in the image).
        window: grey levels ``(low, high)`` of the detector output mapped to black and white; outside, they clip.
        aspect: image height over width.
    """

    gamma: float
    noise: float
    blur: float
    field_of_view: float
    window: tuple[float, float]
    aspect: float


IN_DOMAIN = AcquisitionStyle(gamma=1.0, noise=0.01, blur=0.5, field_of_view=1.0, window=(0.0, 1.0), aspect=1.0)
CROSS_DOMAIN = AcquisitionStyle(gamma=1.5, noise=0.035, blur=1.5, field_of_view=1.3, window=(0.12, 0.85), aspect=1.15)


@dataclass(frozen=True)
class DemoDataset:
    """One synthetic dataset.

    Attributes:
        task: ``"classification"`` (Kermany layout) or ``"segmentation"``.
        folder: its folder under the demo root.
        style: its acquisition style.
        abnormal: share of images with opacities (the PNEUMONIA class, or JSRT / Montgomery abnormal images).
        layout: the segmentation layout read by the adapter (``None``: the Kermany layout).
        test_fraction: the share of segmentation patients held out for testing (1: a test-only set).
    """

    task: str
    folder: str
    style: AcquisitionStyle
    abnormal: float
    layout: str | None = None
    test_fraction: float = 0.2


DEMO_DATASETS: dict[str, DemoDataset] = {
    "kermany": DemoDataset("classification", "Kermany", IN_DOMAIN, abnormal=0.6),
    "jsrt": DemoDataset("segmentation", "JSRT", IN_DOMAIN, abnormal=0.1, layout="images_masks"),
    "nih": DemoDataset("classification", "NIH", CROSS_DOMAIN, abnormal=0.6),
    "montgomery": DemoDataset("segmentation", "Montgomery", CROSS_DOMAIN, 0.4, layout="montgomery", test_fraction=1.0),
}
"""The demo datasets by datalist name (``kermany.json``...): Kermany / JSRT in-domain, NIH / Montgomery cross-domain."""


@dataclass(frozen=True)
class DemoSize:
    """Image width and images per dataset (Kermany: training and test; NIH is a test set)."""

    image_size: int
    kermany_train: int
    kermany_test: int
    jsrt: int
    nih: int
    montgomery: int

    def images(self, name: str) -> tuple[int, int]:
        """``(training, test)`` images of a Kermany-layout dataset, or ``(images, 0)`` of a segmentation dataset."""
        if name == "kermany":
            return self.kermany_train, self.kermany_test
        if name == "nih":
            return 0, self.nih
        return getattr(self, name), 0


MULTIMIX_DEMO_SIZES: dict[str, DemoSize] = {
    "tiny": DemoSize(48, kermany_train=40, kermany_test=10, jsrt=16, nih=8, montgomery=6),
    "small": DemoSize(128, kermany_train=1300, kermany_test=300, jsrt=140, nih=200, montgomery=80),
    "default": DemoSize(256, kermany_train=1300, kermany_test=400, jsrt=247, nih=300, montgomery=138),
}
"""``tiny`` for the tests, ``small`` for the CPU experiment, ``default`` (JSRT's 247 and Montgomery's 138 images)."""

# Zones A-F (upper, middle, lower third of the right lung, then of the left): pneumonia favours the lower zones.
_ZONE_WEIGHTS = np.array([1.0, 2.0, 3.0, 1.0, 2.0, 3.0]) / 12.0


def ensure_multimix_datalists(
    datalists: Sequence[Mapping[str, str | os.PathLike[str]]],
    demo: bool = True,
    root: str | os.PathLike[str] = "data/multimix_demo",
    size: str = "default",
    seed: int = 0,
) -> list[str]:
    """Make the missing datalists from synthetic data (generated under ``root`` on first use).

    A datalist is named after its demo dataset (``kermany.json``, ``jsrt.json``, ``nih.json``, ``montgomery.json``,
    see :data:`DEMO_DATASETS`); existing datalists, real or synthetic, are left alone.

    Args:
        datalists: mappings of datalists, e.g. ``[{"classification": ".../kermany.json", "segmentation":
            ".../jsrt.json"}, {...cross-domain...}]``; a ``classification`` / ``segmentation`` key must name a
            datalist of that task.
        demo: make missing datalists from synthetic data; when False a missing datalist is an error.
        root: folder of the synthetic datasets.
        size: a key of :data:`MULTIMIX_DEMO_SIZES`.
        seed: same seed and size, same files.

    Returns:
        Every datalist path, in the order given.

    Raises:
        FileNotFoundError: a datalist is missing and ``demo`` is False.
        ValueError: a missing datalist names no demo dataset or sits under the wrong task, an unknown size, or
            ``root`` holds a dataset generated with another size or seed.
    """
    paths = []
    for mapping in datalists:
        for key, value in mapping.items():
            path = Path(value)
            paths.append(str(path))
            if path.is_file():
                continue
            if not demo:
                raise FileNotFoundError(
                    f"datalist {path} not found: run scripts/prepare_multimix.py on the dataset, or set demo_data true"
                )
            spec = DEMO_DATASETS.get(path.stem)
            if spec is None:
                raise ValueError(f"{path}: no demo dataset {path.stem!r}; demo datalists are {list(DEMO_DATASETS)}")
            if key in TARGETS and key != spec.task:
                raise ValueError(f"{path}: the {path.stem} demo dataset is a {spec.task} dataset, not {key}")
            folder = generate_multimix_dataset(path.stem, root, size, seed)
            layout = spec.layout or "images_masks"
            prepare_multimix(spec.task, folder, path, layout, path.stem, spec.test_fraction, seed)
    return paths


def generate_multimix_dataset(name: str, root: str | os.PathLike[str], size: str = "default", seed: int = 0) -> Path:
    """Write one synthetic dataset in its published layout, unless it is already there.

    The files are written into a temporary folder that is renamed when complete, so an interrupted run leaves no
    half dataset for the adapters to read.

    Args:
        name: a key of :data:`DEMO_DATASETS`.
        root: the demo root; the dataset goes to ``root/<folder>``.
        size: a key of :data:`MULTIMIX_DEMO_SIZES`.
        seed: same seed and size, same files.

    Returns:
        The dataset folder.

    Raises:
        ValueError: an unknown dataset or size, or the folder holds data of another size or seed.
    """
    if name not in DEMO_DATASETS or size not in MULTIMIX_DEMO_SIZES:
        raise ValueError(
            f"unknown demo dataset {name!r} or size {size!r}: datasets {list(DEMO_DATASETS)}, sizes "
            f"{list(MULTIMIX_DEMO_SIZES)}"
        )
    spec = DEMO_DATASETS[name]
    folder = Path(root) / spec.folder
    settings = {"dataset": name, "size": size, "seed": seed}
    if folder.exists():
        made = json.loads((folder / MARKER).read_text()) if (folder / MARKER).is_file() else None
        if made != settings:
            raise ValueError(f"{folder} exists but was not made as {settings} (its {MARKER}: {made}); remove it")
        return folder
    logger.info(f"generating the synthetic {name} dataset ({size}) in {folder}")
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    writer = _write_kermany_layout if spec.task == "classification" else _write_segmentation_layout
    writer(partial, name, spec, MULTIMIX_DEMO_SIZES[size], seed)
    (partial / MARKER).write_text(json.dumps(settings))
    os.replace(partial, folder)
    return folder


def _write_kermany_layout(folder: Path, name: str, spec: DemoDataset, size: DemoSize, seed: int) -> None:
    """``<split>/{NORMAL,PNEUMONIA}/<image>``; the images of a patient share its anatomy (:func:`_patient_files`)."""
    dataset = list(DEMO_DATASETS).index(name)
    plan = np.random.default_rng([seed, dataset])
    patient = 0
    for split, count in zip(("train", "test"), size.images(name), strict=True):
        pneumonia = round(spec.abnormal * count)
        for label, remaining in enumerate((count - pneumonia, pneumonia)):
            while remaining:
                patient += 1
                files = _patient_files(plan, name, patient, label, remaining)
                rng = np.random.default_rng([seed, dataset, patient])
                anatomy = sample_anatomy(rng)
                for file in files:
                    scores = _pneumonia_scores(rng) if label else (0,) * 6
                    image, _ = _radiograph(rng, spec.style, size.image_size, scores, anatomy)
                    _save(folder / split / KERMANY_CLASSES[label] / file, _to_uint(image, 8))
                remaining -= len(files)


def _patient_files(plan: np.random.Generator, name: str, patient: int, label: int, limit: int) -> list[str]:
    """The file names of one patient, at most ``limit``: Kermany's ``IM-<patient>-0001.jpeg`` (NORMAL) and
    ``person<patient>_<bacteria|virus>_<k>.jpeg`` (PNEUMONIA, one or two images, so that the patient-level
    hold-out matters), or NIH's ``<patient>_000.png``."""
    if name != "kermany":
        return [f"{patient:08d}_000.png"]
    if not label:
        return [f"IM-{patient:04d}-0001.jpeg"]
    kind = "bacteria" if plan.random() < 0.65 else "virus"
    return [f"person{patient}_{kind}_{k}.jpeg" for k in range(1, min(int(plan.integers(1, 3)), limit) + 1)]


def _write_segmentation_layout(folder: Path, name: str, spec: DemoDataset, size: DemoSize, seed: int) -> None:
    """JSRT (``images/`` as 12-bit values in 16-bit PNGs, one mask in ``masks/``) or Montgomery (8-bit ``CXR_png/``,
    the patient's left and right lung in ``ManualMask/leftMask`` and ``rightMask``)."""
    dataset = list(DEMO_DATASETS).index(name)
    count = size.images(name)[0]
    labels = _labels(np.random.default_rng([seed, dataset]), count, spec.abnormal)
    for index, label in enumerate(labels, start=1):
        rng = np.random.default_rng([seed, dataset, index])
        scores = _pneumonia_scores(rng) if label else (0,) * 6
        image, lungs = _radiograph(rng, spec.style, size.image_size, scores, sample_anatomy(rng))
        if spec.layout == "images_masks":
            stem = f"JPCLN{index:03d}" if label else f"JPCNN{index:03d}"
            _save(folder / "images" / f"{stem}.png", _to_uint(image, 12))
            _save(folder / "masks" / f"{stem}.png", lungs.astype(np.uint8) * 255)
            continue
        stem = f"MCUCXR_{index:04d}_{int(label)}"
        _save(folder / "CXR_png" / f"{stem}.png", _to_uint(image, 8))
        # The patient's right lung is on the image left; the phantom keeps each lung on its side of the centre.
        image_left = np.arange(lungs.shape[1]) < lungs.shape[1] // 2
        _save(folder / "ManualMask" / "rightMask" / f"{stem}.png", (lungs & image_left).astype(np.uint8) * 255)
        _save(folder / "ManualMask" / "leftMask" / f"{stem}.png", (lungs & ~image_left).astype(np.uint8) * 255)


def _labels(rng: np.random.Generator, count: int, abnormal: float) -> np.ndarray:
    """``count`` labels, exactly ``round(abnormal * count)`` of them 1, in random order (both classes even in tiny
    sets)."""
    labels = np.zeros(count, dtype=int)
    labels[: round(abnormal * count)] = 1
    return rng.permutation(labels)


def _pneumonia_scores(rng: np.random.Generator) -> tuple[int, ...]:
    """Brixia-like scores of zones A-F: one to three zones, middle and lower favoured, each from haze (1) to
    consolidation (3)."""
    scores = np.zeros(6, dtype=int)
    zones = rng.choice(6, size=int(rng.integers(1, 4)), replace=False, p=_ZONE_WEIGHTS)
    scores[zones] = rng.integers(1, 4, size=len(zones))
    return tuple(int(score) for score in scores)


def _radiograph(
    rng: np.random.Generator, style: AcquisitionStyle, width: int, scores: Sequence[int], anatomy: Anatomy
) -> tuple[np.ndarray, np.ndarray]:
    """A phantom seen through ``style``: ``(image in [0, 1], lung mask)``, ``round(width * aspect)`` x ``width``."""
    shape = (round(width * style.aspect), width)
    anatomy = replace(anatomy, scale=anatomy.scale / style.field_of_view)
    image, lungs = make_phantom(rng, shape, tuple(scores), anatomy)
    acquisition = Acquisition(gamma=style.gamma, noise=style.noise, blur=style.blur * width / 256)
    image = simulate_detector(image, acquisition, rng)
    low, high = style.window
    return np.clip((image - low) / (high - low), 0.0, 1.0), lungs


def _to_uint(image: np.ndarray, bits: int) -> np.ndarray:
    """A [0, 1] image as integers of ``bits`` bits, in uint8 or (above 8 bits) uint16."""
    dtype = np.uint8 if bits <= 8 else np.uint16
    return np.round(image * (2**bits - 1)).astype(dtype)


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
