"""Datalist JSON and rejected-rows report: what the dataset adapters produce, how it is written, read and split.

An adapter reads a dataset's published sheet with :func:`read_table`, turns each row into a record or a
:class:`Rejection` with :func:`collect_rows` (its row parser raising :class:`RowRejected`, with the shared checks
:func:`image_in_folder`, :func:`existing_file`, :func:`readable_dicom` and :class:`FirstListings`), and returns an
:class:`AdapterResult`. The records become a datalist JSON (:func:`write_datalist`, image paths relative to the JSON's
folder so a dataset folder can be moved with its datalists) and the rejections a ``FILE.rejected.csv`` beside it
(:func:`write_rejected`), so that a bad row is reported with its sheet, row number and reason instead of stopping the
preparation or silently vanishing. :func:`select_split` reads a datalist back as one protocol run's splits.
"""

from __future__ import annotations

import csv
import io
import json
import numbers
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from bundle.atomic import write_text_atomic
from bundle.data.dicom import DicomInputError, read_cxr
from bundle.data.splits import cv_split, loco_split

PATH_KEYS: tuple[str, ...] = ("image",)
"""Record fields that hold file paths: relative to the datalist's folder on disk, absolute once loaded."""

REJECTED_COLUMNS: tuple[str, ...] = ("source", "row", "image", "reason")


class DatasetLayoutError(ValueError):
    """The dataset folder cannot be read at all (missing sheet, folder or column, a sheet that is no table).

    Unlike a bad row, which is rejected and reported while the good rows are kept, this stops the preparation.
    """


class RowRejected(ValueError):
    """A row cannot become a record; ``str(error)`` is the report's reason, ``"<kind>: <message>"``.

    Args:
        kind: a short machine-readable reason (``missing_file``, ``bad_brixia_score``...), counted by the scripts.
        message: what is wrong with the row, naming the offending value.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class Rejection:
    """One rejected row of a dataset sheet (or one rejected file of a folder layout).

    Attributes:
        source: the sheet (or folder) the row comes from.
        row: the row number as a spreadsheet program shows it (header = 1), ``None`` for a file without a sheet.
        image: the image the row names, as written in the sheet.
        reason: ``"<kind>: <message>"``.
    """

    source: str
    row: int | None
    image: str
    reason: str

    @property
    def kind(self) -> str:
        """The machine-readable part of the reason, before the first colon."""
        return self.reason.split(":", 1)[0]


@dataclass
class AdapterResult:
    """What an adapter read: the accepted records, the rejected rows, and how many rows there were.

    ``rows_read == len(records) + len(rejected)``: every non-blank row is accounted for.
    """

    records: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    rows_read: int = 0

    def __add__(self, other: AdapterResult) -> AdapterResult:
        """Concatenate two results (for example two releases of one dataset), keeping their order."""
        return AdapterResult(
            [*self.records, *other.records], [*self.rejected, *other.rejected], self.rows_read + other.rows_read
        )


def read_table(path: Path, required: Sequence[str], sep: str = ",") -> list[tuple[int, dict[str, str]]]:
    """Read an ``.xlsx`` or delimited text sheet as text cells, numbering rows as a spreadsheet program does.

    Cells are read as text (so ``001000`` keeps its zeros), stripped, ``""`` where empty; blank rows are skipped but
    keep their place in the numbering, so a reported row number points at the row a person sees.

    Args:
        path: the sheet; ``.xlsx``/``.xls`` is read as a workbook (first sheet), anything else as delimited text.
        required: columns that must be present.
        sep: the delimiter of a text sheet.

    Returns:
        ``(row number, {column: cell})`` for every non-blank row, the header being row 1.

    Raises:
        DatasetLayoutError: the sheet is missing, cannot be parsed as a table, or lacks a required column.
    """
    if not path.is_file():
        raise DatasetLayoutError(f"{path}: no such sheet")
    try:
        if path.suffix.lower() in (".xlsx", ".xls"):
            table = pd.read_excel(path, dtype=str, keep_default_na=False)
        else:
            table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except Exception as error:  # the parsers raise many types on a malformed file: ParserError, BadZipFile, KeyError...
        raise DatasetLayoutError(f"{path}: cannot be read as a table ({type(error).__name__}: {error})") from error
    if not isinstance(table.index, pd.RangeIndex):  # pandas made the surplus first cells an index
        raise DatasetLayoutError(f"{path}: cannot be read as a table (row 2 has more cells than the header)")
    table.columns = [str(column).strip() for column in table.columns]
    missing = [column for column in required if column not in table.columns]
    if missing:
        found = ", ".join(repr(column) for column in table.columns)
        raise DatasetLayoutError(f"{path}: missing column(s) {', '.join(map(repr, missing))} (found {found})")
    rows = []
    for index, values in zip(table.index, table.to_dict("records"), strict=True):
        cells = {str(column): str(value).strip() for column, value in values.items()}
        if any(cells.values()):
            rows.append((int(index) + 2, cells))
    return rows


def collect_rows(
    source: Path,
    rows: Iterable[tuple[int, Mapping[str, str]]],
    image_column: str,
    parse: Callable[[Mapping[str, str]], dict[str, Any]],
) -> AdapterResult:
    """Turn each row into a record with ``parse``, or into a :class:`Rejection` when ``parse`` raises.

    Args:
        source: the sheet the rows come from (named in the report).
        rows: ``(row number, cells)`` as :func:`read_table` gives them.
        image_column: the column whose cell names the image, copied to the rejection.
        parse: builds the record of one row from its cells; raises :class:`RowRejected` for a row it cannot accept.

    Returns:
        The records and rejections, in row order.
    """
    result = AdapterResult()
    for number, cells in rows:
        result.rows_read += 1
        try:
            result.records.append(parse(cells))
        except RowRejected as error:
            result.rejected.append(Rejection(str(source), number, cells.get(image_column, ""), str(error)))
    return result


def image_in_folder(folder: Path, name: str) -> Path:
    """The path a sheet's image name stands for inside ``folder``, refusing names that lead elsewhere.

    The check is lexical (``..`` and absolute names are refused), so that a sheet cannot make the preparation read
    arbitrary files; the file itself is not looked at (see :func:`existing_file`).

    Raises:
        RowRejected: ``bad_path`` for a name with a null character or one that leads outside ``folder``.
    """
    if "\0" in name:
        raise RowRejected("bad_path", f"{name!r} contains a null character")
    folder = folder.absolute()
    path = Path(os.path.normpath(folder / name))
    if path == folder or not path.is_relative_to(folder):
        raise RowRejected("bad_path", f"{name!r} leads outside the image folder {folder}")
    return path


def existing_file(path: Path) -> Path:
    """``path`` resolved, if it is a file.

    Raises:
        RowRejected: ``missing_file`` when it is not a file or cannot be looked at (a name too long, no permission).
    """
    try:
        if path.is_file():
            return path.resolve()
    except OSError as error:
        raise RowRejected("missing_file", f"{path} cannot be accessed ({error.strerror})") from error
    raise RowRejected("missing_file", f"{path} is not a file")


def readable_dicom(path: Path) -> None:
    """Check that the DICOM reader of training and inference decodes ``path``, so no accepted row fails later.

    The reader's warnings (spacing fallback, an ignored window) are not repeated here: they come again, naming the
    file, wherever the image is used, and would otherwise flood the preparation's output for a whole dataset.

    Raises:
        RowRejected: ``unreadable_file`` with the reader's reason.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            read_cxr(path)
    except DicomInputError as error:
        raise RowRejected("unreadable_file", f"{path}: {error.reason}") from error


class FirstListings:
    """Where each image of one or more sheets is first listed, so that a later listing is rejected naming the first.

    The first listing wins even when that row is rejected for another reason: which row stands for an image must not
    depend on the other cells of its duplicates.
    """

    def __init__(self) -> None:
        self._first: dict[Path, tuple[str, Mapping[str, str]]] = {}

    def add(
        self, sheet: Path, rows: Sequence[tuple[int, Mapping[str, str]]], locate: Callable[[Mapping[str, str]], Path]
    ) -> None:
        """Record the rows of ``sheet``; ``locate`` gives a row's image path (rows it rejects are not images)."""
        for number, cells in rows:
            try:
                self._first.setdefault(locate(cells), (f"{sheet.name} row {number}", cells))
            except RowRejected:
                continue

    def check(self, path: Path, cells: Mapping[str, str]) -> None:
        """Raise :class:`RowRejected` (``duplicate_image``) unless ``cells`` is the first row listing ``path``."""
        where, first = self._first[path]
        if first is not cells:
            raise RowRejected("duplicate_image", f"{path.name} is already listed in {where}")


def rejected_report_path(datalist: str | os.PathLike[str]) -> Path:
    """The rejected-rows report that belongs to a datalist: ``FILE.json`` -> ``FILE.rejected.csv``."""
    return Path(datalist).with_suffix(".rejected.csv")


def write_rejected(path: str | os.PathLike[str], rejected: Sequence[Rejection]) -> Path:
    """Write the rejected-rows report (``source,row,image,reason``) atomically, a header alone when empty.

    Returns:
        The report's path.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(REJECTED_COLUMNS)
    for rejection in rejected:
        writer.writerow(
            [rejection.source, "" if rejection.row is None else rejection.row, rejection.image, rejection.reason]
        )
    path = Path(path)
    write_text_atomic(path, buffer.getvalue())
    return path


def read_rejected(path: str | os.PathLike[str]) -> list[Rejection]:
    """Read a report written by :func:`write_rejected` back into rejections.

    Raises:
        ValueError: the file is not such a report.
    """
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != REJECTED_COLUMNS:
            raise ValueError(f"{path}: not a rejected-rows report (columns {reader.fieldnames})")
        return [
            Rejection(row["source"], int(row["row"]) if row["row"] else None, row["image"], row["reason"])
            for row in reader
        ]


def write_records(
    path: str | os.PathLike[str],
    header: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    path_keys: Sequence[str] = PATH_KEYS,
) -> Path:
    """Write ``{**header, "data": records}`` as JSON atomically, the paths relative to the file's folder.

    Relative paths let a dataset folder move together with its datalists; :func:`load_datalist` makes them absolute.

    Args:
        path: the JSON to write (its folder is created).
        header: the top-level fields besides ``data``.
        records: the records, with absolute (or working-directory relative) paths; they are not modified.
        path_keys: the record fields that hold a path or a list of paths.

    Returns:
        The file's path.
    """
    path = Path(path)
    folder = path.parent.absolute()
    data = [
        {key: _map_paths(value, folder, True) if key in path_keys else value for key, value in record.items()}
        for record in records
    ]
    write_text_atomic(path, json.dumps({**header, "data": data}, indent=1))
    return path


def write_datalist(
    path: str | os.PathLike[str],
    dataset: str,
    records: Sequence[Mapping[str, Any]],
    num_folds: int,
    path_keys: Sequence[str] = PATH_KEYS,
) -> Path:
    """Write a cross-validation datalist: header ``dataset``, ``num_folds``, ``centres``; every record in a fold.

    Args:
        path: the JSON to write (its folder is created).
        dataset: the dataset name of the header.
        records: the records, with absolute paths; they are not modified.
        num_folds: the number of cross-validation folds; each record's ``fold`` must be in ``0..num_folds-1``.
        path_keys: the record fields that hold paths.

    Returns:
        The datalist's path.

    Raises:
        ValueError: a record has no fold or a fold outside the range (nothing is written).
    """
    checked = []
    for index, record in enumerate(records):
        fold = record.get("fold")
        if not isinstance(fold, numbers.Integral) or isinstance(fold, bool) or not 0 <= fold < num_folds:
            raise ValueError(
                f"{path}: record {index} ({record.get('image')}) has fold {fold!r}, not in 0..{num_folds - 1}"
            )
        checked.append({**record, "fold": int(fold)})
    centres = sorted({str(record["centre"]) for record in records if record.get("centre") is not None})
    return write_records(path, {"dataset": dataset, "num_folds": num_folds, "centres": centres}, checked, path_keys)


def load_datalist(
    path: str | os.PathLike[str], path_keys: Sequence[str] = PATH_KEYS
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read a datalist JSON: its header and its records with absolute paths.

    Args:
        path: the datalist.
        path_keys: the record fields that hold paths relative to the datalist's folder.

    Returns:
        The header (every top-level field but ``data``) and the records.

    Raises:
        ValueError: the file is not valid JSON or has no ``data`` list of records.
    """
    path = Path(path)
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not a datalist JSON ({error})") from error
    if not isinstance(content, dict) or not isinstance(content.get("data"), list):
        raise ValueError(f"{path}: not a datalist JSON (no 'data' list)")
    folder = path.parent.resolve()
    records = []
    for index, record in enumerate(content["data"]):
        if not isinstance(record, dict):
            raise ValueError(f"{path}: record {index} is not an object")
        records.append(
            {key: _map_paths(value, folder, False) if key in path_keys else value for key, value in record.items()}
        )
    header = {key: value for key, value in content.items() if key != "data"}
    return header, records


def select_split(
    path: str | os.PathLike[str], protocol: Literal["cv", "loco"], run: int | str, seed: int = 0
) -> dict[str, list[dict[str, Any]]]:
    """The train/val/test records of one run of a protocol, read from a datalist.

    Args:
        path: the datalist.
        protocol: ``"cv"`` (``run`` is the test fold) or ``"loco"`` (``run`` is the held-out centre).
        run: the fold or the centre.
        seed: the seed of the leave-one-centre-out validation draw.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``.

    Raises:
        ValueError: an unknown protocol, or a fold/centre the datalist does not have.
    """
    header, records = load_datalist(path)
    if protocol == "cv":
        return cv_split(records, int(run), n_folds=int(header.get("num_folds", 5)))
    if protocol == "loco":
        return loco_split(records, str(run), seed=seed)
    raise ValueError(f"unknown protocol {protocol!r}: expected 'cv' or 'loco'")


def _map_paths(value: Any, folder: Path, relative: bool) -> Any:
    """Make a path (or a list of paths) relative to ``folder`` or absolute from it; ``None`` stays ``None``."""
    if isinstance(value, list):
        return [_map_paths(item, folder, relative) for item in value]
    if value is None:
        return None
    if relative:
        return Path(os.path.relpath(Path(value).absolute(), folder)).as_posix()
    return str((folder / value).resolve())
