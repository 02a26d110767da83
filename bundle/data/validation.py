"""Preflight validation of datalists: every record and every image a run will read is checked before it starts.

A training run that dies at epoch 40 on a truncated file, or that quietly trains and tests on the same patient,
loses hours and can go unnoticed. :func:`validate_datalists` runs cheap checks on everything a run will read and
reports each problem as a :class:`Finding` (image, check, reason) instead of stopping at the first one.
``scripts/validate_data.py`` writes the findings to a report; :class:`TrainingPreflight` (``configs/train.yaml``)
refuses to start on any of them or, when told to skip bad rows, leaves the records of the bad images out of every
split and lists them.

The checks, in :data:`CHECKS` order:

- ``datalist``: the datalist JSON can be read, has a ``data`` list of records and a positive ``num_folds``;
- ``record``: a record names an image and a patient, its labels are valid (``prognosis`` 0 or 1, ``brixia_zones``
  six integers 0..3, at least one of the two present) and its ``fold`` is in ``0..num_folds-1``;
- ``exists``: the image is a non-empty regular file;
- ``header``: its DICOM header, read without the pixel data so that it runs on every image, describes a single-frame
  greyscale image of a supported modality and size;
- ``decode``: :func:`bundle.data.dicom.read_cxr` decodes it (every image, or a seeded sample: decoding is the slow
  part);
- ``duplicate``: an image listed twice, or a file holding the same SOP instance as an earlier one (the same
  radiograph would count twice, perhaps on both sides of a split);
- ``folds``: a patient whose records are in different folds (the patient would be trained and tested on).

A problem with a datalist, or with a record that names no image, cannot be skipped: there is no image whose records
could be left out.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import random
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundle.atomic import write_text_atomic
from bundle.data.datalist import load_datalist
from bundle.data.dicom import SUPPORTED_MODALITIES, DicomInputError, read_cxr, read_cxr_header

logger = logging.getLogger(__name__)

CHECKS: tuple[str, ...] = ("datalist", "record", "exists", "header", "decode", "duplicate", "folds")
"""The checks, in the order they run and their findings are reported."""

REPORT_COLUMNS: tuple[str, ...] = ("image", "check", "reason")

PROGNOSIS_CLASSES: tuple[int, ...] = (0, 1)
"""``prognosis`` values: 0 = MILD, 1 = SEVERE."""

BRIXIA_ZONES = 6
"""``brixia_zones`` holds one score per lung zone, A..F."""

BRIXIA_ZONE_SCORES = range(4)
"""Each zone's score: 0 (no lung abnormality) to 3 (prevalent consolidation)."""

LISTED = 20
"""Findings named in a :class:`PreflightError`; the report holds all of them."""


class PreflightError(RuntimeError):
    """The preflight check found problems, so the run refuses to start (nothing has been trained)."""


@dataclass(frozen=True)
class Finding:
    """One problem found by a check.

    Attributes:
        image: the image path as :func:`~bundle.data.datalist.load_datalist` gives it (absolute); the datalist's path
            for a ``datalist`` finding; ``""`` for a record that names no image.
        check: one of :data:`CHECKS`.
        reason: what is wrong, naming the offending value; a record's problem starts with ``DATALIST#INDEX: ``.
    """

    image: str
    check: str
    reason: str

    @property
    def skippable(self) -> bool:
        """Whether leaving out the records of :attr:`image` removes the problem (not so without an image)."""
        return self.check != "datalist" and bool(self.image)

    def __str__(self) -> str:
        """``IMAGE: CHECK: REASON``, as logged and raised (the image left out when there is none)."""
        return ": ".join(part for part in (self.image, self.check, self.reason) if part)


@dataclass(frozen=True)
class ValidationReport:
    """What :func:`validate_datalists` found.

    Attributes:
        datalists: the datalists checked.
        findings: the problems, in :data:`CHECKS` order.
        records: the records read.
        images: the distinct image paths they name.
        decoded: the images given to the decoder.
    """

    datalists: tuple[str, ...]
    findings: tuple[Finding, ...]
    records: int
    images: int
    decoded: int

    @property
    def ok(self) -> bool:
        """No problem found."""
        return not self.findings

    @property
    def unskippable(self) -> list[Finding]:
        """The problems that leaving out records cannot remove: unreadable datalists, records without image."""
        return [finding for finding in self.findings if not finding.skippable]

    @property
    def bad_images(self) -> set[str]:
        """The images with a problem that leaving out their records removes."""
        return {finding.image for finding in self.findings if finding.skippable}

    def summary(self) -> str:
        """One line: how much was checked and how many problems of each check were found."""
        scope = (
            f"{self.records} records, {self.images} images ({self.decoded} decoded) "
            f"of {len(self.datalists)} datalist(s)"
        )
        if self.ok:
            return f"no problems in {scope}"
        counts = Counter(finding.check for finding in self.findings)
        per_check = ", ".join(f"{check}: {counts[check]}" for check in CHECKS if counts[check])
        return f"{len(self.findings)} problem(s) in {scope}: {per_check}"

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the findings as a CSV report (``image,check,reason``, a header alone when clean), atomically.

        Returns:
            The report's path.
        """
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(REPORT_COLUMNS)
        writer.writerows((finding.image, finding.check, finding.reason) for finding in self.findings)
        path = Path(path)
        write_text_atomic(path, buffer.getvalue())
        return path


@dataclass(frozen=True)
class _Row:
    """One record of a datalist and where it is listed (``DATALIST#INDEX``)."""

    where: str
    dataset: str
    num_folds: int
    record: Mapping[str, Any]

    @property
    def image(self) -> str:
        """The record's image path, ``""`` when it has none."""
        image = self.record.get("image")
        return image if isinstance(image, str) else ""

    @property
    def fold(self) -> int | None:
        """The record's fold when valid."""
        fold = self.record.get("fold")
        valid = isinstance(fold, int) and not isinstance(fold, bool) and 0 <= fold < self.num_folds
        return fold if valid else None

    @property
    def patient(self) -> str | int | None:
        """The record's patient when valid (a non-empty string or an integer)."""
        patient = self.record.get("patient")
        valid = isinstance(patient, (str, int)) and not isinstance(patient, bool) and patient != ""
        return patient if valid else None


def validate_datalists(
    datalists: Sequence[str | os.PathLike[str]],
    sample: int | None = None,
    seed: int = 0,
    modalities: Collection[str] = SUPPORTED_MODALITIES,
) -> ValidationReport:
    """Run every check (:data:`CHECKS`) on the datalists, their records and their images.

    Args:
        datalists: datalist JSONs (``scripts/prepare_data.py``); relative image paths resolve from their folder.
        sample: decode only this many images, drawn with ``seed`` from those whose header passed (``0``: headers
            only); ``None`` decodes every image.
        seed: the seed of the decoding sample, so that every rank of a distributed run checks the same images.
        modalities: accepted DICOM ``Modality`` values.

    Returns:
        The report; it is ``ok`` when nothing was found.
    """
    findings, rows = _read_datalists(datalists)
    findings += [problem for row in rows for problem in _record_problems(row)]
    images = list(dict.fromkeys(row.image for row in rows if row.image))
    file_findings, instances = _check_files(images, modalities)
    findings += file_findings
    readable = [image for image in images if image in instances]
    if sample is not None:
        chosen = set(random.Random(seed).sample(readable, min(sample, len(readable))))
        readable = [image for image in readable if image in chosen]
    findings += [problem for image in readable for problem in _decode_problems(image, modalities)]
    findings += _duplicates(rows, instances)
    findings += _patients_in_several_folds(rows)
    return ValidationReport(
        datalists=tuple(str(path) for path in datalists),
        findings=tuple(sorted(findings, key=lambda finding: CHECKS.index(finding.check))),
        records=len(rows),
        images=len(images),
        decoded=len(readable),
    )


def _read_datalists(datalists: Sequence[str | os.PathLike[str]]) -> tuple[list[Finding], list[_Row]]:
    """Read the datalists; one ``datalist`` finding for each that cannot be used, the records of the others."""
    findings: list[Finding] = []
    rows: list[_Row] = []
    for path in datalists:
        try:
            header, records = load_datalist(path)
        except (OSError, ValueError) as error:
            findings.append(Finding(str(path), "datalist", f"cannot read the datalist: {error}"))
            continue
        num_folds = header.get("num_folds")
        if not isinstance(num_folds, int) or isinstance(num_folds, bool) or num_folds < 1:
            findings.append(Finding(str(path), "datalist", f"num_folds {num_folds!r} is not a positive integer"))
            continue
        for index, record in enumerate(records):
            dataset = str(record.get("dataset") or header.get("dataset"))
            rows.append(_Row(f"{path}#{index}", dataset, num_folds, record))
    return findings, rows


def _record_problems(row: _Row) -> list[Finding]:
    """The ``record`` findings of one record: image path, patient, labels and fold."""
    record = row.record
    reasons: list[str] = []
    if not row.image:
        reasons.append(f"no image path (image = {record.get('image')!r})")
    if row.patient is None:
        reasons.append(f"no patient (patient = {record.get('patient')!r})")
    prognosis, zones = record.get("prognosis"), record.get("brixia_zones")
    if prognosis is None and zones is None:
        reasons.append("no label (prognosis and brixia_zones are both null)")
    if prognosis is not None and not _is_one_of(prognosis, PROGNOSIS_CLASSES):
        reasons.append(f"prognosis {prognosis!r} is not 0 (MILD), 1 (SEVERE) or null")
    valid_zones = isinstance(zones, list) and len(zones) == BRIXIA_ZONES
    if zones is not None and not (valid_zones and all(_is_one_of(zone, BRIXIA_ZONE_SCORES) for zone in zones)):
        reasons.append(f"brixia_zones {zones!r} is not six integers in 0..3 (zones A..F) or null")
    if row.fold is None:
        reasons.append(f"fold {record.get('fold')!r} is not an integer in 0..{row.num_folds - 1}")
    return [Finding(row.image, "record", f"{row.where}: {reason}") for reason in reasons]


def _is_one_of(value: Any, allowed: Collection[int]) -> bool:
    """Whether ``value`` is an integer (not a bool, not a float) among ``allowed``."""
    return isinstance(value, int) and not isinstance(value, bool) and value in allowed


def _check_files(images: Sequence[str], modalities: Collection[str]) -> tuple[list[Finding], dict[str, str]]:
    """The ``exists`` and ``header`` findings of each image; the SOP Instance UID (or ``""``) of those that passed."""
    findings: list[Finding] = []
    instances: dict[str, str] = {}
    for image in images:
        path = Path(image)
        if not path.exists():
            findings.append(Finding(image, "exists", "file not found"))
        elif not path.is_file():
            findings.append(Finding(image, "exists", "not a regular file"))
        elif path.stat().st_size == 0:
            findings.append(Finding(image, "exists", "empty file (0 bytes)"))
        else:
            try:
                header = read_cxr_header(path, modalities)
            except DicomInputError as error:
                findings.append(Finding(image, "header", error.reason))
            else:
                instances[image] = str(header.get("SOPInstanceUID", ""))
    return findings, instances


def _decode_problems(image: str, modalities: Collection[str]) -> list[Finding]:
    """The ``decode`` finding of an image that :func:`~bundle.data.dicom.read_cxr` cannot turn into pixels."""
    try:
        read_cxr(image, modalities)
    except DicomInputError as error:
        return [Finding(image, "decode", error.reason)]
    return []


def _duplicates(rows: Sequence[_Row], instances: Mapping[str, str]) -> list[Finding]:
    """Images listed again after their first listing, and files holding the SOP instance of an earlier file."""
    findings: list[Finding] = []
    first_listing: dict[str, str] = {}
    for row in rows:
        if row.image in first_listing:
            findings.append(
                Finding(row.image, "duplicate", f"{row.where}: already listed at {first_listing[row.image]}")
            )
        elif row.image:
            first_listing[row.image] = row.where
    first_file: dict[str, str] = {}
    for image, uid in instances.items():
        if uid in first_file:
            findings.append(Finding(image, "duplicate", f"same SOP instance {uid} as {first_file[uid]}"))
        elif uid:  # a header without SOPInstanceUID cannot be matched
            first_file[uid] = image
    return findings


def _patients_in_several_folds(rows: Sequence[_Row]) -> list[Finding]:
    """A ``folds`` finding for every image of a patient whose records are in more than one fold of its dataset."""
    folds: dict[tuple[str, str | int], set[int]] = defaultdict(set)
    images: dict[tuple[str, str | int], dict[str, None]] = defaultdict(dict)
    for row in rows:
        if row.patient is not None and row.fold is not None:
            key = (row.dataset, row.patient)
            folds[key].add(row.fold)
            if row.image:
                images[key][row.image] = None
    return [
        Finding(image, "folds", f"patient {patient!r} of {dataset} is in folds {', '.join(map(str, sorted(found)))}")
        for (dataset, patient), found in folds.items()
        if len(found) > 1
        for image in images[dataset, patient]
    ]


class TrainingPreflight:
    """The check a training run makes before it starts: validate, write the report, refuse or skip bad rows.

    ``configs/train.yaml`` calls :meth:`run` in ``initialize`` and takes its splits through :meth:`filter`.

    Args:
        datalists: the run's datalists, by dataset name.
        report_path: where the report CSV goes (written on every run, a header alone when clean).
        sample: how many images to decode (see :func:`validate_datalists`; headers are always read for all).
        skip_bad_rows: instead of refusing to start, leave out every record of an image with a problem.
        seed: the seed of the decoding sample.
    """

    def __init__(
        self,
        datalists: Mapping[str, str | os.PathLike[str]],
        report_path: str | os.PathLike[str],
        sample: int | None = 16,
        skip_bad_rows: bool = False,
        seed: int = 0,
    ) -> None:
        self.datalists = dict(datalists)
        self.report_path = Path(report_path)
        self.sample = sample
        self.skip_bad_rows = skip_bad_rows
        self.seed = seed
        self.report: ValidationReport | None = None

    def run(self) -> ValidationReport:
        """Validate once (later calls return the same report), write the report, and decide whether to start.

        Returns:
            The report; with ``skip_bad_rows``, its bad images are logged as left out.

        Raises:
            PreflightError: a problem that cannot be skipped, or any problem without ``skip_bad_rows``.
        """
        if self.report is None:
            self.report = validate_datalists(list(self.datalists.values()), sample=self.sample, seed=self.seed)
            self.report.write(self.report_path)
            self._decide(self.report)
        return self.report

    def _decide(self, report: ValidationReport) -> None:
        """Log a clean report, raise on problems, or log the images whose records are left out."""
        if report.ok:
            logger.info("preflight: %s (report: %s)", report.summary(), self.report_path)
            return
        if report.unskippable:
            raise PreflightError(
                self._message(report, report.unskippable)
                + "\nThese problems cannot be skipped (no image whose records could be left out): fix the datalists."
            )
        if not self.skip_bad_rows:
            raise PreflightError(
                self._message(report, report.findings)
                + "\nFix the data, or run with --skip_bad_rows True to leave out the records of the bad images."
            )
        listed = "\n".join(f"  {finding}" for finding in report.findings)
        logger.warning(
            "preflight: %s; leaving out the records of %d image(s) (report: %s):\n%s",
            report.summary(),
            len(report.bad_images),
            self.report_path,
            listed,
        )

    def _message(self, report: ValidationReport, findings: Sequence[Finding]) -> str:
        """The summary and the first :data:`LISTED` findings, for an error."""
        lines = [f"preflight: {report.summary()} (report: {self.report_path})"]
        lines += [f"  {finding}" for finding in findings[:LISTED]]
        if len(findings) > LISTED:
            lines.append(f"  ... and {len(findings) - LISTED} more")
        return "\n".join(lines)

    def filter(self, splits: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, list[Mapping[str, Any]]]:
        """The splits without the records of the bad images (all of them, unchanged, when the report is clean).

        Runs the check first if :meth:`run` has not, so that no split is ever used unchecked.

        Args:
            splits: split name -> records, image paths as :func:`~bundle.data.datalist.load_datalist` gives them.

        Returns:
            The same splits, each without the records whose image had a problem.
        """
        bad = self.run().bad_images
        return {name: [record for record in records if record["image"] not in bad] for name, records in splits.items()}
