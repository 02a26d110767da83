"""AIforCOVID adapter: the published layout (``AIforCOVID*.xlsx`` and ``imgs*/``) -> validated records + rejected rows.

Soda et al. 2021 release the admission radiographs of COVID-19 patients from six hospitals (A-F) in up to three
releases: ``AIforCOVID.xlsx`` with ``imgs/``, then ``AIforCOVID_r2.xlsx`` with ``imgs_r2/`` and ``AIforCOVID_r3.xlsx``
with ``imgs_r3/``. One row per patient names its DICOM (``ImageFile``, with or without ``.dcm``), its hospital and its
outcome (``Prognosis`` MILD/SEVERE). The clinical variables are not carried into the records: only age and sex, for
subgroup analyses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from bundle.data.datalist import (
    AdapterResult,
    DatasetLayoutError,
    FirstListings,
    RowRejected,
    collect_rows,
    existing_file,
    image_in_folder,
    read_table,
    readable_dicom,
)

RELEASES: tuple[tuple[str, str], ...] = (
    ("AIforCOVID.xlsx", "imgs"),
    ("AIforCOVID_r2.xlsx", "imgs_r2"),
    ("AIforCOVID_r3.xlsx", "imgs_r3"),
)
"""(sheet, image folder) of each release; the first must be present, the others are read when found."""

PROGNOSIS_CLASSES: dict[str, int] = {"MILD": 0, "SEVERE": 1}
REQUIRED_COLUMNS: tuple[str, ...] = ("ImageFile", "Hospital", "Prognosis")
SEXES: tuple[str, ...] = ("M", "F")
MAX_AGE = 130.0


def read_aiforcovid(root: str | Path) -> AdapterResult:
    """Read every AIforCOVID release found in ``root``, validating each row and its image.

    A row is rejected (and reported with the sheet's row number) for a missing value, an unknown prognosis, a bad
    age or sex, an image name that leads outside the image folder, an image listed twice (the first listing is
    kept), a missing file or a file the DICOM reader cannot decode.

    Args:
        root: the dataset folder in its published layout.

    Returns:
        Records ``image`` (absolute), ``dataset``, ``centre``, ``patient``, ``prognosis`` (0 MILD, 1 SEVERE),
        ``brixia_zones`` (``None``), ``fold`` (``None`` until folds are assigned), ``age``, ``sex``; the rejected
        rows; the number of rows read.

    Raises:
        DatasetLayoutError: ``AIforCOVID.xlsx`` is missing or unreadable, a column is missing, or the image folder
            of a release is missing.
    """
    root = Path(root)
    if not (root / RELEASES[0][0]).is_file():
        raise DatasetLayoutError(f"{root}: no {RELEASES[0][0]} (the AIforCOVID clinical sheet)")
    listings = FirstListings()
    result = AdapterResult()
    for sheet_name, folder_name in RELEASES:
        sheet, folder = root / sheet_name, root / folder_name
        if not sheet.is_file():
            continue
        rows = read_table(sheet, REQUIRED_COLUMNS)
        if not folder.is_dir():
            raise DatasetLayoutError(f"{folder}: no image folder for {sheet}")
        locate = partial(_image_path, folder)
        listings.add(sheet, rows, locate)
        result += collect_rows(sheet, rows, "ImageFile", partial(_record, locate=locate, listings=listings))
    return result


def _image_path(folder: Path, cells: Mapping[str, str]) -> Path:
    """The DICOM a row names (``ImageFile`` with or without ``.dcm``) inside the release's image folder."""
    name = cells["ImageFile"]
    if not name:
        raise RowRejected("missing_value", "no ImageFile")
    return image_in_folder(folder, name if name.lower().endswith(".dcm") else f"{name}.dcm")


def _record(
    cells: Mapping[str, str], locate: Callable[[Mapping[str, str]], Path], listings: FirstListings
) -> dict[str, Any]:
    """The record of one sheet row, or :class:`RowRejected` naming the first problem found."""
    path = locate(cells)
    listings.check(path, cells)
    missing = [column for column in REQUIRED_COLUMNS[1:] if not cells[column]]
    if missing:
        raise RowRejected("missing_value", f"no {' and no '.join(missing)}")
    prognosis = cells["Prognosis"].upper()
    if prognosis not in PROGNOSIS_CLASSES:
        raise RowRejected("unknown_prognosis", f"Prognosis {cells['Prognosis']!r} is not one of MILD, SEVERE")
    age, sex = _age(cells.get("Age", "")), _sex(cells.get("Sex", ""))
    image = existing_file(path)
    readable_dicom(image)
    return {
        "image": str(image),
        "dataset": "aiforcovid",
        "centre": cells["Hospital"],
        "patient": path.stem,
        "prognosis": PROGNOSIS_CLASSES[prognosis],
        "brixia_zones": None,
        "fold": None,
        "age": age,
        "sex": sex,
    }


def _age(text: str) -> float | None:
    """The age in years, ``None`` when the cell is empty; :class:`RowRejected` when it is no plausible age."""
    if not text:
        return None
    try:
        age = float(text)
    except ValueError:
        age = math.nan
    if not 0.0 <= age <= MAX_AGE:  # NaN fails too
        raise RowRejected("bad_value", f"Age {text!r} is not an age in years (0-{MAX_AGE:g})")
    return age


def _sex(text: str) -> str | None:
    """``M`` or ``F``, ``None`` when the cell is empty; :class:`RowRejected` for anything else."""
    if not text:
        return None
    if text.upper() not in SEXES:
        raise RowRejected("bad_value", f"Sex {text!r} is not one of {', '.join(SEXES)}")
    return text.upper()
