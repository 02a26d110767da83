"""BrixIA adapter: the published layout (``metadata_global_v2.csv`` and ``dicom_clean/``) -> validated records.

Signoroni et al. 2021 release the radiographs of one hospital in Brescia with a ';'-separated metadata sheet (v2 adds
``Manufacturer`` and ``PhotometricInterpretation`` to v1). ``BrixiaScore`` is six digits 0-3, one per lung zone
A..F; it must be read as text: a spreadsheet that took it for a number turned ``001000`` into ``1000``, so missing
leading zeros are restored, and anything that is still not six digits 0-3 is rejected rather than guessed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
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

METADATA_SHEETS: tuple[str, ...] = ("metadata_global_v2.csv", "metadata_global_v1.csv")
"""The metadata sheets, newest first: the first one found is read."""

IMAGE_FOLDER = "dicom_clean"
CENTRE = "Brescia"
N_ZONES = 6
ZONES = "ABCDEF"
MAX_ZONE_SCORE = 3
REQUIRED_COLUMNS: tuple[str, ...] = ("Filename", "BrixiaScore", "BrixiaScoreGlobal", "ConsensusTestset", "Subject")
CONSENSUS_FLAGS: dict[str, bool] = {"0": False, "1": True}
SEVERITY_BINS: tuple[int, ...] = (4, 9, 14)
"""Upper bounds of the global-score classes 0-4, 5-9, 10-14 (the last class, 15-18, has none)."""
SEVERITY_CLASSES: tuple[str, ...] = ("0-4", "5-9", "10-14", "15-18")


def parse_brixia_score(text: str) -> list[int]:
    """The six zone scores (A..F, each 0-3) of a ``BrixiaScore`` cell.

    Fewer than six digits are taken as a score whose leading zeros a spreadsheet dropped (``1000`` -> ``001000``).

    Args:
        text: the cell, read as text.

    Returns:
        The zone scores in the order A, B, C, D, E, F.

    Raises:
        ValueError: not a string of digits, more than six digits, or a zone above 3.
    """
    if not re.fullmatch(r"[0-9]+", text):
        raise ValueError(f"BrixiaScore {text!r} is not a string of digits")
    if len(text) > N_ZONES:
        raise ValueError(f"BrixiaScore {text!r} has {len(text)} digits, not {N_ZONES}")
    zones = [int(digit) for digit in text.zfill(N_ZONES)]
    for zone, score in zip(ZONES, zones, strict=True):
        if score > MAX_ZONE_SCORE:
            raise ValueError(f"BrixiaScore {text!r} has zone {zone} = {score} (zones are 0-{MAX_ZONE_SCORE})")
    return zones


def severity_class(global_score: int) -> int:
    """The severity class of a global Brixia score (0-18): 0 for <=4, 1 for 5-9, 2 for 10-14, 3 for >=15."""
    return sum(global_score > bound for bound in SEVERITY_BINS)


def read_brixia(root: str | Path) -> AdapterResult:
    """Read the BrixIA metadata of ``root``, validating each row and its image.

    A row is rejected (and reported with its line number in the sheet) for a missing value, a zone score that is
    not six digits 0-3, a global score that is no integer or not the sum of the zones, a bad ``ConsensusTestset``, a
    file name that leads outside ``dicom_clean/``, a file listed twice (the first listing is kept), a missing file
    or a file the DICOM reader cannot decode.

    Args:
        root: the dataset folder in its published layout.

    Returns:
        Records ``image`` (absolute), ``dataset``, ``centre`` (Brescia), ``patient`` (``Subject``), ``prognosis``
        (``None``), ``brixia_zones``, ``fold`` (``None`` until folds are assigned), ``brixia_global``,
        ``manufacturer`` (``None`` when not given) and ``consensus_test``; the rejected rows; the rows read.

    Raises:
        DatasetLayoutError: no metadata sheet, a sheet that is no ';' table, a missing column, or no image folder.
    """
    root = Path(root)
    sheet = next((root / name for name in METADATA_SHEETS if (root / name).is_file()), None)
    if sheet is None:
        raise DatasetLayoutError(f"{root}: no BRIXIA metadata ({' or '.join(METADATA_SHEETS)})")
    rows = read_table(sheet, REQUIRED_COLUMNS, sep=";")
    folder = root / IMAGE_FOLDER
    if not folder.is_dir():
        raise DatasetLayoutError(f"{folder}: no image folder for {sheet}")
    listings = FirstListings()
    listings.add(sheet, rows, partial(_image_path, folder))
    return collect_rows(sheet, rows, "Filename", partial(_record, folder=folder, listings=listings))


def _image_path(folder: Path, cells: Mapping[str, str]) -> Path:
    """The DICOM a row names (``Filename`` includes the suffix) inside ``dicom_clean/``."""
    if not cells["Filename"]:
        raise RowRejected("missing_value", "no Filename")
    return image_in_folder(folder, cells["Filename"])


def _record(cells: Mapping[str, str], folder: Path, listings: FirstListings) -> dict[str, Any]:
    """The record of one sheet row, or :class:`RowRejected` naming the first problem found."""
    path = _image_path(folder, cells)
    listings.check(path, cells)
    missing = [column for column in REQUIRED_COLUMNS[1:] if not cells[column]]
    if missing:
        raise RowRejected("missing_value", f"no {' and no '.join(missing)}")
    try:
        zones = parse_brixia_score(cells["BrixiaScore"])
    except ValueError as error:
        raise RowRejected("bad_brixia_score", str(error)) from error
    if not re.fullmatch(r"[0-9]+", cells["BrixiaScoreGlobal"]):
        raise RowRejected("bad_global_score", f"BrixiaScoreGlobal {cells['BrixiaScoreGlobal']!r} is not an integer")
    global_score = int(cells["BrixiaScoreGlobal"])
    if global_score != sum(zones):
        raise RowRejected(
            "global_mismatch", f"BrixiaScoreGlobal {global_score} != {sum(zones)}, the sum of the zones {zones}"
        )
    if cells["ConsensusTestset"] not in CONSENSUS_FLAGS:
        raise RowRejected("bad_value", f"ConsensusTestset {cells['ConsensusTestset']!r} is neither 0 nor 1")
    image = existing_file(path)
    readable_dicom(image)
    return {
        "image": str(image),
        "dataset": "brixia",
        "centre": CENTRE,
        "patient": cells["Subject"],
        "prognosis": None,
        "brixia_zones": zones,
        "fold": None,
        "brixia_global": global_score,
        "manufacturer": cells.get("Manufacturer") or None,
        "consensus_test": CONSENSUS_FLAGS[cells["ConsensusTestset"]],
    }
