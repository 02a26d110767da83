"""MultiMix data: adapters for the published PNG/JPEG layouts, their datalists, label budgets and training streams.

MultiMix (Haque et al., 2021) learns pneumonia classification and lung segmentation from two datasets, each with few
labels and many unlabeled images. The adapters read the layouts the datasets are distributed in::

    classification (Kermany "Chest X-Ray Images (Pneumonia)"):
      <root>/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg|jpg|png
    segmentation, layout "images_masks" (JSRT with SCR masks, as most PNG releases ship it):
      <root>/images/X.png   <root>/masks/X.png
    segmentation, layout "montgomery":
      <root>/CXR_png/X.png  <root>/ManualMask/leftMask/X.png  <root>/ManualMask/rightMask/X.png
    segmentation, layout "shenzhen" (an image without a mask is kept, unlabeled):
      <root>/CXR_png/X.png  <root>/mask/X_mask.png

and :func:`prepare_multimix` writes one datalist per dataset (``{"dataset", "task", "data"}``, paths relative to the
datalist) with its ``FILE.rejected.csv``. :func:`multimix_streams` turns a classification and a segmentation
datalist into the four training streams of :data:`STREAMS` plus validation and test records, under the label budgets
of the paper (classification 100 / 1000 / all, segmentation 10 / 50 / all).
"""

from __future__ import annotations

import os
import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bundle.data.datalist import (
    AdapterResult,
    DatasetLayoutError,
    Rejection,
    RowRejected,
    load_datalist,
    rejected_report_path,
    write_records,
    write_rejected,
)

__all__ = [
    "SEGMENTATION_LAYOUTS",
    "STREAMS",
    "load_multimix_datalist",
    "multimix_streams",
    "multimix_test_records",
    "prepare_multimix",
    "read_kermany",
    "read_segmentation",
    "to_grayscale",
]

STREAMS: tuple[str, ...] = ("cls_labeled", "cls_unlabeled", "seg_labeled", "seg_unlabeled")
"""The training streams, one batch of each per MultiMix step."""

TARGETS: dict[str, str] = {"classification": "pneumonia", "segmentation": "mask"}
"""The record field that holds each task's label (the targets of ``configs/multimix/common.yaml``)."""

KERMANY_SPLITS: dict[str, str] = {"train": "train", "val": "train", "test": "test"}
"""Kermany's split folders and the split they give; its 16-image ``val`` folder is merged into training."""

KERMANY_CLASSES: tuple[str, ...] = ("NORMAL", "PNEUMONIA")
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpeg", ".jpg")

# Kermany's file names carry the patient: "person12_bacteria_47.jpeg", "IM-0115-0001.jpeg", "NORMAL2-IM-0135-0001.jpeg".
_KERMANY_PATIENT = re.compile(r"^(person\d+)_|^((?:NORMAL2-)?IM-\d+)-")
_GREY_MODES = ("L", "I", "I;16", "I;16B", "I;16L", "F")
_PATH_KEYS = ("image", "mask")
_LABELED = {"classification": "cls_labeled", "segmentation": "seg_labeled"}
_UNLABELED = {"classification": "cls_unlabeled", "segmentation": "seg_unlabeled"}


@dataclass(frozen=True)
class _MaskLayout:
    """Where a segmentation layout keeps its images and the mask file(s) of each image.

    Attributes:
        dataset: the dataset name its records get unless another is given.
        images: the image folder, relative to the root.
        masks: one folder per mask part (Montgomery: the left and the right lung), relative to the root.
        mask_suffix: added to the image's stem to name its mask (Shenzhen: ``X_mask.png``).
        optional: an image without its mask is kept as an unlabeled record instead of being rejected.
    """

    dataset: str
    images: str
    masks: tuple[str, ...]
    mask_suffix: str = ""
    optional: bool = False


_LAYOUTS: dict[str, _MaskLayout] = {
    "images_masks": _MaskLayout("jsrt", "images", ("masks",)),
    "montgomery": _MaskLayout("montgomery", "CXR_png", ("ManualMask/leftMask", "ManualMask/rightMask")),
    "shenzhen": _MaskLayout("shenzhen", "CXR_png", ("mask",), mask_suffix="_mask", optional=True),
}
SEGMENTATION_LAYOUTS: tuple[str, ...] = tuple(_LAYOUTS)


def to_grayscale(image: Image.Image) -> Image.Image:
    """One grey channel for ``PILReader(converter=...)``, keeping the bit depth of grey images.

    ``Image.convert("L")`` would clip a 16-bit PNG (mode ``I;16``, as JSRT's 12-bit images are often shipped) to
    8 bits, so grey modes are returned as they are and only colour, palette, alpha and bilevel images are converted.
    """
    return image if image.mode in _GREY_MODES else image.convert("L")


def read_kermany(root: str | os.PathLike[str], dataset: str = "kermany") -> AdapterResult:
    """Read the Kermany layout ``<root>/{train,val,test}/{NORMAL,PNEUMONIA}/<image>``.

    Hidden files (``.DS_Store``) are skipped; a file with another suffix or that does not decode as an image is
    rejected with its path and reason.

    Args:
        root: the dataset folder (the one holding ``train/`` and ``test/``).
        dataset: the dataset name of the records (a Kermany-style copy of another dataset names itself).

    Returns:
        Records ``{"image", "dataset", "patient", "split", "pneumonia"}`` (``pneumonia``: 0 NORMAL, 1 PNEUMONIA;
        ``split``: ``"train"`` or ``"test"``) and the rejected files.

    Raises:
        DatasetLayoutError: no ``<split>/<class>`` folder under ``root``.
    """
    root = Path(root)
    folders = [
        (root / split / name, split, label)
        for split in KERMANY_SPLITS
        for label, name in enumerate(KERMANY_CLASSES)
        if (root / split / name).is_dir()
    ]
    if not folders:
        raise DatasetLayoutError(
            f"{root}: not a Kermany layout (expected {{train,val,test}}/{{{','.join(KERMANY_CLASSES)}}}/ folders)"
        )
    result = AdapterResult()
    for folder, split, label in folders:
        for path in _visible_files(folder):
            result.rows_read += 1
            try:
                _check_image(path, "unreadable_file")
            except RowRejected as error:
                result.rejected.append(Rejection(str(root), None, path.relative_to(root).as_posix(), str(error)))
                continue
            record = {
                "image": str(path.resolve()),
                "dataset": dataset,
                "patient": _kermany_patient(path.name),
                "split": KERMANY_SPLITS[split],
                "pneumonia": label,
            }
            result.records.append(record)
    return result


def read_segmentation(
    root: str | os.PathLike[str], layout: str = "images_masks", dataset: str | None = None
) -> AdapterResult:
    """Read a lung-segmentation layout (:data:`SEGMENTATION_LAYOUTS`, see the module docstring).

    Args:
        root: the dataset folder.
        layout: ``"images_masks"`` (JSRT), ``"montgomery"`` or ``"shenzhen"``.
        dataset: the dataset name of the records (default: the layout's dataset, ``jsrt`` for ``images_masks``).

    Returns:
        Records ``{"image", "mask", "dataset", "patient", "split"}``: ``mask`` is one path, a list of paths (the
        Montgomery lungs, merged by the preprocessing) or ``None`` (a Shenzhen image without mask); ``patient`` is
        the file stem (one image per patient in these datasets); ``split`` is ``None`` until
        :func:`prepare_multimix` draws the test share. Images without their mask(s), with an unreadable mask or a
        mask of another aspect ratio are rejected.

    Raises:
        DatasetLayoutError: an unknown layout, or the layout's folders are missing under ``root``.
    """
    if layout not in _LAYOUTS:
        raise DatasetLayoutError(f"unknown segmentation layout {layout!r}: expected one of {SEGMENTATION_LAYOUTS}")
    spec = _LAYOUTS[layout]
    root = Path(root)
    missing = [name for name in (spec.images, *spec.masks) if not (root / name).is_dir()]
    if missing:
        raise DatasetLayoutError(f"{root}: not a {layout!r} layout (missing folder(s) {', '.join(missing)})")
    result = AdapterResult()
    for path in _visible_files(root / spec.images):
        result.rows_read += 1
        try:
            mask = _find_mask(root, spec, path)
        except RowRejected as error:
            result.rejected.append(Rejection(str(root), None, path.relative_to(root).as_posix(), str(error)))
            continue
        result.records.append(
            {
                "image": str(path.resolve()),
                "mask": mask,
                "dataset": dataset or spec.dataset,
                "patient": path.stem,
                "split": None,
            }
        )
    return result


def prepare_multimix(
    task: str,
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    layout: str = "images_masks",
    dataset: str | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> AdapterResult:
    """Read one dataset, write its datalist (when any image is usable) and its rejected-files report.

    Kermany keeps its published test split. A segmentation set gets a seeded, patient-level test share of its
    labeled patients (only images with a mask can be scored); the rest, and every image without mask, is training.

    Args:
        task: ``"classification"`` (Kermany layout) or ``"segmentation"``.
        root: the dataset folder in its published layout.
        out: the datalist JSON; the report goes to ``FILE.rejected.csv`` beside it.
        layout: the segmentation layout (:data:`SEGMENTATION_LAYOUTS`).
        dataset: the dataset name of the records (default: ``kermany`` or the layout's dataset).
        test_fraction: segmentation only, the share of labeled patients held out for testing (1: a test-only set).
        seed: seed of the segmentation test draw.

    Returns:
        The adapter's result, the segmentation records with their ``split``.

    Raises:
        DatasetLayoutError: the layout cannot be read.
        ValueError: an unknown task or a ``test_fraction`` outside [0, 1].
    """
    if task == "classification":
        result = read_kermany(root, dataset or "kermany")
    elif task == "segmentation":
        if not 0.0 <= test_fraction <= 1.0:
            raise ValueError(f"test_fraction {test_fraction} is not in [0, 1]")
        result = read_segmentation(root, layout, dataset)
        labeled = [record for record in result.records if record["mask"] is not None]
        test = _draw_patients(labeled, [None] * len(labeled), test_fraction, np.random.default_rng(seed))
        for record in result.records:
            record["split"] = "test" if record["patient"] in test else "train"
    else:
        raise ValueError(f"unknown task {task!r}: expected one of {tuple(TARGETS)}")
    write_rejected(rejected_report_path(out), result.rejected)
    if result.records:
        _write_multimix_datalist(Path(out), result.records[0]["dataset"], task, result.records)
    return result


def load_multimix_datalist(
    path: str | os.PathLike[str], task: str | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read a datalist written by :func:`prepare_multimix`: its header and its records with absolute paths.

    Args:
        path: the datalist.
        task: the task the datalist must hold (default: either).

    Returns:
        The header (``dataset``, ``task``) and the records.

    Raises:
        ValueError: not a MultiMix datalist, another task than ``task``, or a record without a required field.
    """
    header, records = load_datalist(path, path_keys=_PATH_KEYS)
    found = header.get("task")
    if found not in TARGETS or (task is not None and found != task):
        raise ValueError(f"{path}: a MultiMix {task or 'classification or segmentation'} datalist needs task {found!r}")
    required = {"image", "patient", "split", TARGETS[found]}
    for index, record in enumerate(records):
        if missing := required - set(record):
            raise ValueError(f"{path}: record {index} ({record.get('image')}) lacks {', '.join(sorted(missing))}")
    return header, records


def multimix_streams(
    datalists: Mapping[str, str | os.PathLike[str]],
    cls_labels: int | str = 100,
    seg_labels: int | str = 10,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> dict[str, list[dict[str, Any]]]:
    """The MultiMix training streams, validation and test records under the label budgets.

    For each dataset, a seeded, class-stratified ``val_fraction`` of the labeled training patients is held out for
    validation (all images of a patient on one side), then ``cls_labels`` classification images (class-stratified)
    and ``seg_labels`` segmentation images keep their label; the other training images lose it and form the
    unlabeled streams (``pneumonia`` set to ``None``, ``mask`` removed, so no transform can read it).

    Args:
        datalists: ``{"classification": path, "segmentation": path}``.
        cls_labels: labeled classification images, an integer or ``"all"`` (a numeric string is read as one).
        seg_labels: labeled segmentation images, an integer or ``"all"``.
        val_fraction: share of each dataset's labeled training patients held out for validation (at least one
            patient when positive).
        seed: seed of the hold-out and of the budget draws; same seed, same streams.

    Returns:
        ``{stream: records}`` for every stream of :data:`STREAMS`, plus ``"val"`` and ``"test"`` (labeled records
        of both tasks); every record carries its ``stream`` (``cls_labeled`` or ``seg_labeled`` in ``val`` and
        ``test``), in datalist order.

    Raises:
        ValueError: a budget that is neither a non-negative integer nor ``"all"``, or larger than the labeled
            training images; a ``val_fraction`` outside [0, 1); a datalist missing from ``datalists``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction {val_fraction} is not in [0, 1)")
    streams: dict[str, list[dict[str, Any]]] = {name: [] for name in (*STREAMS, "val", "test")}
    for index, (task, budget) in enumerate((("classification", cls_labels), ("segmentation", seg_labels))):
        records = _task_records(datalists, task)
        rng = np.random.default_rng([seed, index])
        for name, part in _dataset_streams(records, task, budget, val_fraction, rng).items():
            streams[name] += part
        streams["test"] += _test_records(records, task)
    return streams


def multimix_test_records(datalists: Mapping[str, str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """The labeled test records of a classification and a segmentation datalist, tagged with their stream.

    Args:
        datalists: ``{"classification": path, "segmentation": path}``, in-domain or cross-domain.

    Returns:
        The classification test records (``stream`` ``cls_labeled``) then the segmentation ones (``seg_labeled``).

    Raises:
        ValueError: a datalist is missing from ``datalists``, or holds no labeled test record.
    """
    records = []
    for task in TARGETS:
        found = _test_records(_task_records(datalists, task), task)
        if not found:
            raise ValueError(f"{datalists[task]}: no labeled {task} record with split 'test'")
        records += found
    return records


def _visible_files(folder: Path) -> list[Path]:
    """The files of ``folder`` in name order, without hidden files (``.DS_Store``, ``._X.png`` of macOS copies)."""
    return sorted(path for path in folder.iterdir() if path.is_file() and not path.name.startswith("."))


def _check_image(path: Path, kind: str) -> tuple[int, int]:
    """Decode ``path`` once, so that a truncated or mislabelled file is rejected now rather than during training.

    Returns:
        The image's (width, height).

    Raises:
        RowRejected: ``unsupported_file`` for a suffix other than :data:`IMAGE_SUFFIXES`, ``kind`` when it does not
            decode.
    """
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise RowRejected("unsupported_file", f"{path}: suffix {path.suffix!r} is not one of {IMAGE_SUFFIXES}")
    try:
        with Image.open(path) as image:
            image.load()
            return image.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise RowRejected(kind, f"{path}: {type(error).__name__}: {error}") from error


def _find_mask(root: Path, spec: _MaskLayout, image: Path) -> str | list[str] | None:
    """The mask file(s) of ``image``, checked to decode and to have the image's aspect ratio.

    SCR masks of JSRT are released at half the image size, so only the aspect ratio has to agree: the preprocessing
    resizes image and mask to the network size separately.

    Raises:
        RowRejected: the image does not decode, a mask file is missing (unless the layout's masks are optional),
            does not decode, or has another aspect ratio.
    """
    width, height = _check_image(image, "unreadable_file")
    name = f"{image.stem}{spec.mask_suffix}{image.suffix}"
    paths = [root / folder / name for folder in spec.masks]
    absent = [path for path in paths if not path.is_file()]
    if absent and spec.optional and len(absent) == len(paths):
        return None
    if absent:
        listed = ", ".join(path.relative_to(root).as_posix() for path in absent)
        raise RowRejected("missing_mask", f"{image.name}: no {listed}")
    for path in paths:
        mask_width, mask_height = _check_image(path, "unreadable_mask")
        if abs(mask_height * width - height * mask_width) > 0.01 * height * mask_width:
            raise RowRejected(
                "mask_mismatch", f"{path}: mask {mask_width}x{mask_height}, image {width}x{height} (W x H)"
            )
    masks = [str(path.resolve()) for path in paths]
    return masks[0] if len(masks) == 1 else masks


def _kermany_patient(name: str) -> str:
    """The patient of a Kermany file name, or its stem when the name follows neither convention."""
    match = _KERMANY_PATIENT.match(name)
    return (match.group(1) or match.group(2)) if match else Path(name).stem


def _write_multimix_datalist(path: Path, dataset: str, task: str, records: Sequence[Mapping[str, Any]]) -> None:
    """Write ``{"dataset", "task", "data"}`` atomically (no fold header: these datasets are not cross-validated)."""
    write_records(path, {"dataset": dataset, "task": task}, records, _PATH_KEYS)


def _task_records(datalists: Mapping[str, str | os.PathLike[str]], task: str) -> list[dict[str, Any]]:
    """The records of the ``task`` datalist of ``datalists``."""
    if task not in datalists:
        raise ValueError(f"no {task!r} datalist in {dict(datalists)}: MultiMix needs one per task")
    return load_multimix_datalist(datalists[task], task)[1]


def _dataset_streams(
    records: Sequence[Mapping[str, Any]], task: str, budget: int | str, val_fraction: float, rng: np.random.Generator
) -> dict[str, list[dict[str, Any]]]:
    """The labeled, unlabeled and validation records of one dataset (see :func:`multimix_streams`)."""
    target = TARGETS[task]
    labeled_stream, unlabeled_stream = _LABELED[task], _UNLABELED[task]
    training = [record for record in records if record["split"] != "test"]
    labeled = [i for i, record in enumerate(training) if record[target] is not None]
    strata = [training[i][target] if task == "classification" else None for i in labeled]
    val_patients = _draw_patients([training[i] for i in labeled], strata, val_fraction, rng, val_fraction > 0)
    held_out = {i for i, record in enumerate(training) if record["patient"] in val_patients}
    pool = [(i, stratum) for i, stratum in zip(labeled, strata, strict=True) if i not in held_out]
    count = _budget(budget, len(pool), task)
    kept = {pool[j][0] for j in _stratified_draw([stratum for _, stratum in pool], count, rng)}
    return {
        labeled_stream: [{**training[i], "stream": labeled_stream} for i in sorted(kept)],
        unlabeled_stream: [_unlabeled(r, task) for i, r in enumerate(training) if i not in kept | held_out],
        "val": [{**training[i], "stream": labeled_stream} for i in labeled if i in held_out],
    }


def _test_records(records: Sequence[Mapping[str, Any]], task: str) -> list[dict[str, Any]]:
    """The labeled test records of one task, tagged with the labeled stream of that task."""
    return [{**r, "stream": _LABELED[task]} for r in records if r["split"] == "test" and r[TARGETS[task]] is not None]


def _unlabeled(record: Mapping[str, Any], task: str) -> dict[str, Any]:
    """A training record without its label, tagged with the unlabeled stream of its task."""
    if task == "classification":
        return {**record, "pneumonia": None, "stream": _UNLABELED[task]}
    return {**{k: v for k, v in record.items() if k != "mask"}, "stream": _UNLABELED[task]}


def _budget(value: int | str, available: int, task: str) -> int:
    """The number of labeled images a budget asks for; ``"all"`` is every labeled training image."""
    if isinstance(value, str) and value.strip().lower() == "all":
        return available
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{task} label budget {value!r}: expected a non-negative integer or 'all'")
    if value > available:
        raise ValueError(f"{task} label budget {value} exceeds the {available} labeled training images")
    return int(value)


def _draw_patients(
    records: Sequence[Mapping[str, Any]],
    strata: Sequence[Hashable],
    fraction: float,
    rng: np.random.Generator,
    at_least_one: bool = False,
) -> set[str]:
    """A stratified draw of ``round(fraction * patients)`` patients; a patient's stratum is that of its first record.

    Args:
        records: records with a ``patient`` field.
        strata: the stratum of each record (its class, or ``None`` for no stratification).
        fraction: the share of patients to draw.
        rng: the random generator.
        at_least_one: draw one patient even when the share rounds to none (a validation set must not be empty).
    """
    patients: dict[str, Hashable] = {}
    for record, stratum in zip(records, strata, strict=True):
        patients.setdefault(record["patient"], stratum)
    count = round(fraction * len(patients))
    if at_least_one and patients:
        count = max(count, 1)
    names = list(patients)
    return {names[i] for i in _stratified_draw(list(patients.values()), count, rng)}


def _stratified_draw(strata: Sequence[Hashable], count: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``count`` items drawn without replacement, each stratum in proportion to its size.

    Each stratum gets the floor of its proportional share and the remaining items go to the largest remainders, so
    exactly ``count`` items are drawn (``sklearn``'s stratified splitters round the held-out side up instead).
    """
    if count == 0:
        return np.zeros(0, dtype=int)
    _, inverse = np.unique(np.array([repr(s) for s in strata]), return_inverse=True)
    sizes = np.bincount(inverse)
    quota = count * sizes / sizes.sum()
    take = np.floor(quota).astype(int)
    take[np.argsort(take - quota, kind="stable")[: count - take.sum()]] += 1
    chosen = [rng.permutation(np.flatnonzero(inverse == k))[:n] for k, n in enumerate(take)]
    return np.sort(np.concatenate(chosen))
