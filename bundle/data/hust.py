"""HUST-19 (COVID-MTL's chest CT dataset) adapter: ``labels.csv`` -> validated records, NAT-stratified folds, split.

Expected layout (the synthetic demo data of :mod:`bundle.data.synthetic_ct` is written in it)::

    <root>/labels.csv        PatientID, Centre, Morbidity, NAT, Radiology, Series, NIfTI
    <root>/<Series>/         the patient's DICOM series folder (one file per slice)
    <root>/<NIfTI>           or the same scan as a NIfTI volume

``Morbidity`` is one of Control, Suspected, Mild, Regular, Severe, Critically ill (COVID-MTL's three severity
classes: control/suspected, mild/regular, severe/critical); ``NAT`` (nucleic-acid test) and ``Radiology`` (the
radiologists' reading of the CT) are Positive or Negative. An empty label cell is a missing label, kept as ``null``:
the multi-task loss skips it. Paths in ``Series`` and ``NIfTI`` are relative to ``<root>``.

COVID-MTL splits HUST-19 70/30 stratified on the NAT label. Here every patient gets one of 10 folds stratified on
NAT; folds 7-9 are the test split and one of the training folds 0-6 is the validation set, so the 7-fold
cross-validation over the training patients is a matter of ``val_fold``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
from pydicom.misc import is_dicom

from bundle.data.datalist import (
    AdapterResult,
    RowRejected,
    collect_rows,
    load_datalist,
    read_table,
    rejected_report_path,
    write_datalist,
    write_rejected,
)
from bundle.data.splits import assign_folds
from bundle.data.synthetic_ct import DATASET_FOLDER, generate_ct_demo_data

__all__ = ["COLUMNS", "NUM_FOLDS", "TEST_FOLDS", "ensure_hust_datalist", "hust_split", "prepare_hust", "read_hust"]

DATASET = "hust19"
LABELS_FILE = "labels.csv"
COLUMNS = ("PatientID", "Centre", "Morbidity", "NAT", "Radiology", "Series", "NIfTI")
NUM_FOLDS = 10
TEST_FOLDS = (7, 8, 9)
SEVERITY = {"control": 0, "suspected": 0, "mild": 1, "regular": 1, "severe": 2, "critically ill": 2}
DETECTION = {"negative": 0, "positive": 1}
IMAGE_COLUMNS = {"nifti": "NIfTI", "dicom": "Series"}


def _label(cells: Mapping[str, str], column: str, classes: Mapping[str, int]) -> int | None:
    """The class index of a label cell, ``None`` when empty; a :class:`RowRejected` for any other text."""
    text = cells[column]
    if not text:
        return None
    if text.lower() not in classes:
        names = ", ".join(name.capitalize() for name in classes)
        raise RowRejected(f"bad_{column.lower()}", f"{column} {text!r} is not one of {names}")
    return classes[text.lower()]


def _image(root: Path, cells: Mapping[str, str], image_source: str) -> Path:
    """The row's scan (series folder or NIfTI file) after checking that it can be read."""
    column = IMAGE_COLUMNS[image_source]
    if not cells[column]:
        raise RowRejected("missing_value", f"{column} is empty")
    path = root / cells[column]
    if image_source == "dicom":
        if not path.is_dir():
            raise RowRejected("missing_file", f"series folder {path} does not exist")
        if not any(file.is_file() and is_dicom(file) for file in path.iterdir()):
            raise RowRejected("unreadable_file", f"series folder {path} holds no DICOM file")
        return path
    if not path.is_file():
        raise RowRejected("missing_file", f"{path} does not exist")
    try:
        nib.load(path)  # reads the header only
    except Exception as error:  # nibabel raises several unrelated types for a file that is not a volume
        raise RowRejected(
            "unreadable_file", f"{path} is not a NIfTI volume ({type(error).__name__}: {error})"
        ) from error
    return path


def read_hust(root: str | os.PathLike[str], image_source: Literal["nifti", "dicom"] = "nifti") -> AdapterResult:
    """Read ``<root>/labels.csv`` into records (without folds) and rejected rows.

    Args:
        root: the HUST-19 folder.
        image_source: which scan each record names as its ``image``: the NIfTI file or the DICOM series folder.

    Returns:
        Records ``{image, dataset, centre, patient, morbidity, radiology, nat, ct_severity}`` and the rejections
        (``missing_value``, ``duplicate_patient``, ``bad_morbidity``, ``bad_nat``, ``bad_radiology``, ``no_label``,
        ``missing_file``, ``unreadable_file``).

    Raises:
        DatasetLayoutError: ``labels.csv`` is missing, not a table or lacks a column.
        ValueError: an unknown ``image_source``.
    """
    if image_source not in IMAGE_COLUMNS:
        raise ValueError(f"image_source must be one of {', '.join(IMAGE_COLUMNS)}, got {image_source!r}")
    root = Path(root)
    sheet = root / LABELS_FILE
    column = IMAGE_COLUMNS[image_source]
    accepted: dict[str, int] = {}  # patient -> the row that gave its record

    def parse(cells: Mapping[str, str]) -> dict[str, Any]:
        patient = cells["PatientID"]
        if not patient:
            raise RowRejected("missing_value", "PatientID is empty")
        if patient in accepted:
            raise RowRejected(
                "duplicate_patient", f"{patient} already has a scan in {LABELS_FILE} row {accepted[patient]}"
            )
        labels = {
            "radiology": _label(cells, "Radiology", DETECTION),
            "nat": _label(cells, "NAT", DETECTION),
            "ct_severity": _label(cells, "Morbidity", SEVERITY),
        }
        if all(value is None for value in labels.values()):
            raise RowRejected("no_label", "Morbidity, NAT and Radiology are all empty")
        return {
            "image": str(_image(root, cells, image_source)),
            "dataset": DATASET,
            "centre": cells["Centre"] or None,
            "patient": patient,
            "morbidity": cells["Morbidity"] or None,
            **labels,
        }

    result = AdapterResult()
    for number, cells in read_table(sheet, COLUMNS):
        row = collect_rows(sheet, [(number, cells)], column, parse)
        accepted.update((record["patient"], number) for record in row.records)
        result += row
    return result


def prepare_hust(
    root: str | os.PathLike[str],
    datalist: str | os.PathLike[str],
    image_source: Literal["nifti", "dicom"] = "nifti",
    seed: int = 0,
) -> AdapterResult:
    """Read HUST-19, assign NAT-stratified patient folds and write the datalist and its rejected-rows report.

    Each record gets ``fold`` (0-9) and ``split`` (``test`` for :data:`TEST_FOLDS`, else ``train``).

    Args:
        root: the HUST-19 folder (see the module docstring).
        datalist: the JSON to write; rejected rows go to ``<datalist stem>.rejected.csv`` beside it.
        image_source: ``nifti`` or ``dicom``: what each record's ``image`` is.
        seed: the seed of the fold assignment.

    Returns:
        The records (with their folds) and the rejected rows.

    Raises:
        DatasetLayoutError: ``labels.csv`` cannot be read.
        ValueError: fewer usable patients than folds (the report is written first).
    """
    result = read_hust(root, image_source)
    write_rejected(rejected_report_path(datalist), result.rejected)
    strata = ["missing" if record["nat"] is None else str(record["nat"]) for record in result.records]
    try:
        folds = assign_folds(strata, [record["patient"] for record in result.records], n_folds=NUM_FOLDS, seed=seed)
    except ValueError as error:
        raise ValueError(
            f"{Path(root) / LABELS_FILE}: {error} (rejected rows: {rejected_report_path(datalist)})"
        ) from error
    for record, fold in zip(result.records, folds, strict=True):
        record["fold"] = fold
        record["split"] = "test" if fold in TEST_FOLDS else "train"
    write_datalist(datalist, DATASET, result.records, num_folds=NUM_FOLDS)
    return result


def _generated_with(path: Path) -> tuple[str, int]:
    """The size and seed a synthetic cohort was generated with, from its completion record."""
    content = json.loads(path.read_text())
    return content["size"], content["seed"]


def ensure_hust_datalist(
    datalist: str | os.PathLike[str],
    demo: bool = True,
    root: str | os.PathLike[str] | None = None,
    size: str = "small",
    seed: int = 0,
    image_source: Literal["nifti", "dicom"] = "nifti",
) -> Path:
    """Make sure the HUST-19 datalist exists; with ``demo``, generate the synthetic cohort and prepare it first.

    An existing datalist is used as it is. Synthetic scans already generated with the same size and seed (their
    completion record present) are reused.

    Args:
        datalist: the datalist JSON.
        demo: generate synthetic data when the datalist is missing (otherwise that is an error).
        root: where the synthetic ``HUST19/`` folder goes (default: the datalist's folder).
        size: synthetic cohort size (a key of ``CT_DEMO_SIZES``).
        seed: the seed of the synthetic cohort and of the folds.
        image_source: ``nifti`` or ``dicom``: what the records name as their image.

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
            f"{datalist}: no HUST-19 datalist. Lay HUST-19 out as bundle/data/hust.py describes and run "
            f"prepare_hust(ROOT, '{datalist}'), or set demo_data true for synthetic scans"
        )
    out = Path(root) if root is not None else datalist.parent
    complete = out / DATASET_FOLDER / "synthetic" / "complete.json"
    if not complete.is_file() or _generated_with(complete) != (size, seed):
        generate_ct_demo_data(out, size=size, seed=seed)
    prepare_hust(out / DATASET_FOLDER, datalist, image_source=image_source, seed=seed)
    return datalist


def hust_split(datalist: str | os.PathLike[str], val_fold: int = 0) -> dict[str, list[dict[str, Any]]]:
    """The train / validation / test records of a HUST-19 datalist.

    Args:
        datalist: a datalist written by :func:`prepare_hust`.
        val_fold: the training fold used for validation (0-6).

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``: test = folds 7-9, validation = ``val_fold``, train = the
        other training folds; records in datalist order, image paths absolute.

    Raises:
        ValueError: ``val_fold`` is a test fold or no fold, or a record's fold is outside 0-9.
    """
    header, records = load_datalist(datalist)
    num_folds = int(header.get("num_folds", NUM_FOLDS))
    training = [fold for fold in range(num_folds) if fold not in TEST_FOLDS]
    if val_fold not in training:
        raise ValueError(
            f"val_fold={val_fold} must be a training fold ({training[0]}-{training[-1]}); {TEST_FOLDS} are test"
        )
    split: dict[str, list[dict[str, Any]]] = {"train": [], "val": [], "test": []}
    for record in records:
        fold = record.get("fold")
        if fold not in range(num_folds):
            raise ValueError(f"{datalist}: record {record.get('image')} has fold {fold!r}, not in 0..{num_folds - 1}")
        split["test" if fold in TEST_FOLDS else "val" if fold == val_fold else "train"].append(record)
    return split
