"""Preparation of one dataset: its adapter, patient-level stratified folds, the datalist and the rejected-rows report.

Each dataset names its adapter and the stratum its folds balance: class x centre for AIforCOVID (the hospitals differ
in their share of severe outcomes and in their acquisition), severity class x manufacturer for BRIXIA (one hospital,
several detector makers).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundle.data.aiforcovid import PROGNOSIS_CLASSES, read_aiforcovid
from bundle.data.brixia import SEVERITY_CLASSES, read_brixia, severity_class
from bundle.data.datalist import AdapterResult, rejected_report_path, write_datalist, write_rejected
from bundle.data.splits import assign_folds

UNKNOWN_MANUFACTURER = "unknown"


@dataclass(frozen=True)
class DatasetAdapter:
    """How one dataset is read and stratified.

    Attributes:
        read: the adapter, dataset folder -> records and rejected rows.
        stratum: a record's (class, subgroup), balanced across the folds.
        subgroup: what the second element of the stratum is (printed in the balance tables).
    """

    read: Callable[[Path], AdapterResult]
    stratum: Callable[[dict[str, Any]], tuple[str, str]]
    subgroup: str


def _prognosis_stratum(record: dict[str, Any]) -> tuple[str, str]:
    """AIforCOVID: outcome class x hospital."""
    return list(PROGNOSIS_CLASSES)[record["prognosis"]], str(record["centre"])


def _severity_stratum(record: dict[str, Any]) -> tuple[str, str]:
    """BRIXIA: global severity class x detector manufacturer."""
    return SEVERITY_CLASSES[severity_class(record["brixia_global"])], record["manufacturer"] or UNKNOWN_MANUFACTURER


ADAPTERS: dict[str, DatasetAdapter] = {
    "aiforcovid": DatasetAdapter(read_aiforcovid, _prognosis_stratum, "centre"),
    "brixia": DatasetAdapter(read_brixia, _severity_stratum, "manufacturer"),
}
"""The datasets ``scripts/prepare_data.py`` can prepare, by the name used in the datalists."""


def prepare_dataset(
    dataset: str, root: str | os.PathLike[str], out: str | os.PathLike[str], n_folds: int = 5, seed: int = 0
) -> AdapterResult:
    """Read a dataset, assign patient-level stratified folds, write its datalist and its rejected-rows report.

    The report (``FILE.rejected.csv`` beside ``out``) is written first, so it exists even when no datalist can be
    made; the datalist is written only when some record was accepted.

    Args:
        dataset: a key of :data:`ADAPTERS`.
        root: the dataset folder in its published layout.
        out: the datalist JSON to write.
        n_folds: the number of cross-validation folds.
        seed: the seed of the fold assignment.

    Returns:
        The adapter's result, the accepted records carrying their ``fold``.

    Raises:
        DatasetLayoutError: the layout cannot be read.
        ValueError: an unknown dataset, or fewer patients than folds.
    """
    if dataset not in ADAPTERS:
        raise ValueError(f"unknown dataset {dataset!r}: expected one of {', '.join(ADAPTERS)}")
    adapter = ADAPTERS[dataset]
    result = adapter.read(Path(root))
    write_rejected(rejected_report_path(out), result.rejected)
    if not result.records:
        return result
    strata = ["|".join(adapter.stratum(record)) for record in result.records]
    folds = assign_folds(strata, [record["patient"] for record in result.records], n_folds, seed)
    for record, fold in zip(result.records, folds, strict=True):
        record["fold"] = fold
    write_datalist(out, dataset, result.records, n_folds)
    return result
