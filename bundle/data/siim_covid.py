"""SIIM-FISABIO-RSNA COVID-19 adapter: the published Kaggle layout -> a validated datalist with study-level folds.

Layout read (the competition's ``train`` part)::

    <root>/train_study_level.csv   id (<StudyInstanceUID>_study) and the four one-hot columns of APPEARANCE_COLUMNS
    <root>/train_image_level.csv   id (<image>_image), boxes, label, StudyInstanceUID
    <root>/train/<study>/<series>/<image>.dcm

Records are images; the appearance class is the study's, and the opacity boxes (``[x, y, width, height]`` in pixels of
the stored image) are the image's. Segmentation labels are explicit: boxes -> a filled mask; no boxes on a negative
study -> a known empty mask (``[]``); no boxes on a positive study -> unknown (``None``). In the published data the
latter are mostly the extra images of multi-image studies of which only one was annotated, so calling them empty
would teach a decoder that a typical study's opacities are background.

Every row is validated; a bad one becomes a :class:`~bundle.data.datalist.Rejection` in ``FILE.rejected.csv`` while
the good rows are kept. The dataset has no patient id, so the study groups the folds (``patient`` = study).
"""

from __future__ import annotations

import ast
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bundle.data.datalist import (
    AdapterResult,
    DatasetLayoutError,
    RowRejected,
    collect_rows,
    load_datalist,
    read_table,
    readable_dicom,
    rejected_report_path,
    write_datalist,
    write_rejected,
)
from bundle.data.dicom import read_cxr_header
from bundle.data.splits import assign_folds, cv_split

__all__ = ["APPEARANCE_CLASSES", "APPEARANCE_COLUMNS", "parse_boxes", "prepare_siim_covid", "siim_split"]

DATASET = "siim_covid"
APPEARANCE_CLASSES: tuple[str, ...] = ("negative", "typical", "indeterminate", "atypical")
"""Class names in the order of the ``appearance`` index (the ``covid_appearance`` target)."""
APPEARANCE_COLUMNS: tuple[str, ...] = (
    "Negative for Pneumonia",
    "Typical Appearance",
    "Indeterminate Appearance",
    "Atypical Appearance",
)
"""The one-hot columns of ``train_study_level.csv``, in the order of :data:`APPEARANCE_CLASSES`."""
STUDY_SHEET = "train_study_level.csv"
IMAGE_SHEET = "train_image_level.csv"
IMAGE_COLUMNS: tuple[str, ...] = ("id", "boxes", "label", "StudyInstanceUID")
BOX_KEYS: tuple[str, ...] = ("x", "y", "width", "height")
NO_OPACITY = "none 1 0 0 1 1"
"""The ``label`` of an image without opacity boxes."""
LABEL_TOLERANCE_PX = 0.01
"""How far a ``label`` corner may be from its box (the Kaggle CSVs round both to 5 decimals)."""


def parse_boxes(cell: str) -> list[list[float]]:
    """Parse a ``boxes`` cell (``"[{'x': .., 'y': .., 'width': .., 'height': ..}, ...]"``) into ``[x, y, w, h]`` lists.

    The cell is a Python literal, read with :func:`ast.literal_eval` (never ``eval``: the sheet is untrusted input).

    Args:
        cell: the cell text; empty or ``"nan"`` (how pandas writes a missing cell) means no box.

    Returns:
        One ``[x, y, width, height]`` of floats per box, in the cell's order.

    Raises:
        RowRejected: ``bad_boxes`` for anything but a list of such dicts with finite numbers and a positive size.
    """
    text = cell.strip()
    if text.lower() in ("", "nan"):
        return []
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as error:
        raise RowRejected("bad_boxes", f"boxes {cell!r} is not a list literal ({type(error).__name__})") from error
    if not isinstance(value, list):
        raise RowRejected("bad_boxes", f"boxes {cell!r} is not a list of boxes")
    boxes = []
    for box in value:
        if not isinstance(box, dict) or set(box) != set(BOX_KEYS):
            raise RowRejected("bad_boxes", f"box {box!r} does not have exactly the keys {', '.join(BOX_KEYS)}")
        numbers = [box[key] for key in BOX_KEYS]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
            raise RowRejected("bad_boxes", f"box {box!r} has a value that is not a finite number")
        if box["width"] <= 0 or box["height"] <= 0:
            raise RowRejected("bad_boxes", f"box {box!r} has no area (width and height must be > 0)")
        boxes.append([float(v) for v in numbers])
    return boxes


def _label_boxes(cell: str) -> list[list[float]]:
    """The boxes a ``label`` cell states (``"opacity 1 x0 y0 x1 y1 ..."`` or ``"none 1 0 0 1 1"``), as ``[x, y, w, h]``.

    Raises:
        RowRejected: ``bad_label`` when the cell is neither form.
    """
    if " ".join(cell.split()) == NO_OPACITY:
        return []
    tokens = cell.split()
    groups = [tokens[i : i + 6] for i in range(0, len(tokens), 6)]
    if not groups or len(tokens) % 6 or any(group[0] != "opacity" for group in groups):
        raise RowRejected("bad_label", f"label {cell!r} is neither {NO_OPACITY!r} nor 'opacity 1 x0 y0 x1 y1' groups")
    try:
        corners = [[float(v) for v in group[2:]] for group in groups]
    except ValueError as error:
        raise RowRejected("bad_label", f"label {cell!r} has a corner that is not a number") from error
    return [[x0, y0, x1 - x0, y1 - y0] for x0, y0, x1, y1 in corners]


def _check_label_agrees(boxes: list[list[float]], label: str, appearance: int) -> None:
    """Refuse an image whose ``label`` states other boxes than ``boxes``, or whose negative study has boxes.

    Raises:
        RowRejected: ``label_mismatch`` (or ``bad_label`` for a malformed label).
    """
    stated = _label_boxes(label)
    if len(stated) != len(boxes) or not np.allclose(sorted(stated), sorted(boxes), atol=LABEL_TOLERANCE_PX):
        raise RowRejected("label_mismatch", f"label {label!r} does not state the {len(boxes)} box(es) of 'boxes'")
    if boxes and appearance == 0:
        raise RowRejected(
            "label_mismatch", f"{len(boxes)} opacity box(es) on a study labelled {APPEARANCE_COLUMNS[0]!r}"
        )


def _strip_suffix(cell: str, suffix: str, column: str) -> str:
    """``"<uid><suffix>"`` -> ``"<uid>"``; the Kaggle ids carry ``_study`` / ``_image``.

    Raises:
        RowRejected: ``bad_id`` when the suffix or the uid is missing.
    """
    uid = cell.removesuffix(suffix)
    if uid == cell or not uid:
        raise RowRejected("bad_id", f"{column} {cell!r} is not '<uid>{suffix}'")
    return uid


def _read_studies(sheet: Path) -> tuple[dict[str, int], AdapterResult]:
    """Read the study sheet: study -> appearance index, and the rejected study rows.

    A study listed twice keeps its first row; the later ones are rejected (``duplicate_study``).
    """
    seen: set[str] = set()

    def parse(cells: Mapping[str, str]) -> dict[str, Any]:
        study = _strip_suffix(cells["id"], "_study", "id")
        if study in seen:
            raise RowRejected("duplicate_study", f"study {study} is listed again")
        seen.add(study)
        try:
            flags = [float(cells[column]) for column in APPEARANCE_COLUMNS]
        except ValueError as error:
            raise RowRejected("bad_study_label", f"a class cell is not a number ({error})") from error
        if any(flag not in (0.0, 1.0) for flag in flags) or sum(flags) != 1.0:
            stated = ", ".join(f"{column}={cells[column]}" for column in APPEARANCE_COLUMNS)
            raise RowRejected("bad_study_label", f"the classes are not exactly one-hot ({stated})")
        return {"study": study, "appearance": flags.index(1.0)}

    result = collect_rows(sheet, read_table(sheet, ["id", *APPEARANCE_COLUMNS]), "id", parse)
    return {record["study"]: record["appearance"] for record in result.records}, result


def _index_dicoms(train: Path) -> dict[str, list[Path]]:
    """Every ``train/<study>/<series>/<image>.dcm`` by image uid (a uid may, wrongly, be in several places)."""
    if not train.is_dir():
        raise DatasetLayoutError(f"{train}: no such folder (the DICOMs are train/<study>/<series>/<image>.dcm)")
    index: dict[str, list[Path]] = {}
    for path in sorted(train.glob("*/*/*.dcm")):
        index.setdefault(path.stem, []).append(path)
    return index


def _locate(image: str, study: str, index: Mapping[str, list[Path]]) -> Path:
    """The DICOM of ``image`` inside its study's folder.

    Raises:
        RowRejected: ``missing_file``, ``wrong_folder`` (it is under another study) or ``duplicate_file``.
    """
    found = index.get(image, [])
    inside = [path for path in found if path.parent.parent.name == study]
    if len(inside) == 1:
        return inside[0]
    if len(inside) > 1:
        raise RowRejected("duplicate_file", f"{image}.dcm is in several series of study {study}: {inside}")
    if found:
        raise RowRejected("wrong_folder", f"{found[0]} is not under the folder of its study train/{study}")
    raise RowRejected("missing_file", f"no train/{study}/<series>/{image}.dcm")


def _check_boxes_in_image(path: Path, boxes: list[list[float]]) -> None:
    """Refuse boxes that do not overlap the stored image (its header's Rows and Columns): wrong coordinates.

    Raises:
        RowRejected: ``bad_boxes``.
    """
    if not boxes:
        return
    header = read_cxr_header(path)
    rows, columns = int(header.Rows), int(header.Columns)
    for x, y, width, height in boxes:
        if x >= columns or y >= rows or x + width <= 0 or y + height <= 0:
            raise RowRejected("bad_boxes", f"box {[x, y, width, height]} lies outside the {columns}x{rows} image")


def prepare_siim_covid(
    root: str | os.PathLike[str], out: str | os.PathLike[str], n_folds: int = 5, seed: int = 0
) -> AdapterResult:
    """Validate a dataset in the SIIM-FISABIO-RSNA layout and write its datalist and rejected-rows report.

    Rejection kinds: ``bad_id``, ``duplicate_study``, ``bad_study_label`` (not exactly one-hot) for study rows;
    ``bad_id``, ``duplicate_image``, ``unknown_study`` (absent or rejected), ``bad_boxes``, ``bad_label``,
    ``label_mismatch`` (``label`` and ``boxes`` disagree, or boxes on a negative study), ``missing_file``,
    ``wrong_folder``, ``duplicate_file``, ``unreadable_file`` (the bundle's DICOM reader refuses it) for image rows.
    Every image row becomes a record or a rejection, and a rejected study row is one more rejection, so
    ``rows_read == len(records) + len(rejected)``. Every accepted image is decoded once here, so that none fails
    during training.

    Args:
        root: the folder holding the two CSVs and ``train/``.
        out: the datalist JSON to write; the report is ``FILE.rejected.csv`` beside it.
        n_folds: study-level cross-validation folds, stratified by appearance class.
        seed: the seed of the fold assignment.

    Returns:
        The accepted image records (with their ``fold``) and the rejected rows. With no accepted record only the
        report is written.

    Raises:
        DatasetLayoutError: a sheet, a required column or ``train/`` is missing.
        ValueError: fewer studies than folds are left.
    """
    root = Path(root)
    appearance_of, studies = _read_studies(root / STUDY_SHEET)
    index = _index_dicoms(root / "train")
    seen: set[str] = set()

    def parse(cells: Mapping[str, str]) -> dict[str, Any]:
        image = _strip_suffix(cells["id"], "_image", "id")
        if image in seen:
            raise RowRejected("duplicate_image", f"image {image} is listed again")
        seen.add(image)
        study = cells["StudyInstanceUID"]
        if study not in appearance_of:
            raise RowRejected("unknown_study", f"study {study!r} has no accepted row in {STUDY_SHEET}")
        appearance = appearance_of[study]
        boxes = parse_boxes(cells["boxes"])
        _check_label_agrees(boxes, cells["label"], appearance)
        path = _locate(image, study, index)
        readable_dicom(path)
        _check_boxes_in_image(path, boxes)
        opacity_boxes = boxes if boxes or appearance == 0 else None
        return {
            "image": str(path),
            "dataset": DATASET,
            "patient": study,
            "study": study,
            "appearance": appearance,
            "opacity_boxes": opacity_boxes,
        }

    sheet = root / IMAGE_SHEET
    images = collect_rows(sheet, read_table(sheet, IMAGE_COLUMNS), "id", parse)
    result = AdapterResult(images.records, [*studies.rejected, *images.rejected], images.rows_read)
    result.rows_read += len(studies.rejected)
    write_rejected(rejected_report_path(out), result.rejected)
    if not result.records:
        return result
    labels = [str(record["appearance"]) for record in result.records]
    folds = assign_folds(labels, [record["patient"] for record in result.records], n_folds, seed)
    for record, fold in zip(result.records, folds, strict=True):
        record["fold"] = fold
    write_datalist(out, DATASET, result.records, n_folds)
    return result


def siim_split(
    datalist: str | os.PathLike[str], fold: int = 0, label_budget: int | None = None, seed: int = 0
) -> dict[str, list[dict[str, Any]]]:
    """The records of one cross-validation run, with the labelled training set cut to a per-class budget.

    Args:
        datalist: a datalist written by :func:`prepare_siim_covid`.
        fold: the test fold; validation is the next fold, training the rest.
        label_budget: labelled training images drawn per appearance class (``None``: all). A class with fewer
            images keeps them all, with a warning.
        seed: the seed of the draw.

    Returns:
        ``train`` (the drawn labelled images), ``val``, ``test``, and ``unlabeled``: every train and validation image,
        for pre-training that must never see the test fold. Records are in datalist order and are unchanged, so a
        preprocessing cache keyed by the record is shared by every split.

    Raises:
        ValueError: the datalist is not a SIIM datalist, the fold does not exist, or the budget is below 1.
    """
    header, records = load_datalist(datalist)
    if header.get("dataset") != DATASET:
        raise ValueError(f"{datalist}: dataset is {header.get('dataset')!r}, not {DATASET!r}")
    if label_budget is not None and label_budget < 1:
        raise ValueError(f"label_budget must be a number of images per class >= 1 (or None), got {label_budget}")
    split = cv_split(records, fold, n_folds=int(header["num_folds"]))
    train = split["train"]
    if label_budget is not None:
        rng = np.random.default_rng(seed)
        chosen: list[int] = []
        for appearance, name in enumerate(APPEARANCE_CLASSES):
            members = [i for i, record in enumerate(train) if record["appearance"] == appearance]
            if len(members) < label_budget:
                warnings.warn(
                    f"{datalist}: fold {fold} has {len(members)} {name} training images, fewer than the budget "
                    f"{label_budget}; all are used",
                    stacklevel=2,
                )
            chosen += rng.choice(members, size=min(label_budget, len(members)), replace=False).tolist()
        train = [train[i] for i in sorted(chosen)]
    unlabeled = [record for record in records if record["fold"] != fold]
    return {"train": train, "val": split["val"], "test": split["test"], "unlabeled": unlabeled}
