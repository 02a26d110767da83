"""Patient-level folds, the cross-validation rotation and leave-one-centre-out splits.

Every split is made over patients, never images, so that two radiographs of one patient never sit on both sides of
a split (BRIXIA has several studies per subject). Folds are stratified so each fold sees the same mix of classes and
of acquisition sources (class x centre for AIforCOVID, severity class x manufacturer for BRIXIA).
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

SMALL_STRATA = "\0small strata"
"""The one stratum that strata with fewer patients than folds are pooled into (a name no real stratum has)."""


def assign_folds(labels: Sequence[str], groups: Sequence[str], n_folds: int = 5, seed: int = 0) -> list[int]:
    """Assign each image a fold so that patients are not split and the strata are balanced across folds.

    Args:
        labels: the stratum of each image (for example ``"1|A"``: class and centre).
        groups: the patient of each image.
        n_folds: the number of folds.
        seed: the seed of the shuffled assignment; the same seed gives the same folds.

    Returns:
        The fold (``0..n_folds-1``) of each image.

    Raises:
        ValueError: fewer patients than folds, or ``labels`` and ``groups`` of different lengths.

    Warns:
        UserWarning: naming each stratum with fewer patients than folds (it cannot be in every fold).
    """
    if len(labels) != len(groups):
        raise ValueError(f"{len(labels)} labels for {len(groups)} patients: one of each is needed per image")
    n_patients = len(set(groups))
    if n_patients < n_folds:
        raise ValueError(f"{n_patients} patients cannot fill {n_folds} folds")
    patients_per_stratum = Counter(label for label, _ in set(zip(labels, groups, strict=True)))
    small = sorted((label, count) for label, count in patients_per_stratum.items() if count < n_folds)
    if small:
        named = ", ".join(f"{label} ({count} patients)" for label, count in small)
        warnings.warn(
            f"strata with fewer patients than the {n_folds} folds are pooled and cannot be in every fold: {named}",
            stacklevel=2,
        )
    pooled = {label for label, _ in small}
    strata = [SMALL_STRATA if label in pooled else label for label in labels]  # spread together over the folds
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = np.full(len(labels), -1, dtype=int)
    with warnings.catch_warnings():  # the pooled small strata are already reported above
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for fold, (_, test) in enumerate(splitter.split(np.zeros(len(strata)), strata, list(groups))):
            folds[test] = fold
    return folds.tolist()


def cv_split(records: Sequence[dict[str, Any]], fold: int, n_folds: int = 5) -> dict[str, list[dict[str, Any]]]:
    """Cross-validation run ``fold``: test = fold ``fold``, validation = fold ``(fold + 1) % n_folds``, train = rest.

    Args:
        records: datalist records, each with its ``fold``.
        fold: the run, ``0..n_folds-1``.
        n_folds: the number of folds of the datalist.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, records in datalist order.

    Raises:
        ValueError: fewer than 3 folds, a run outside the folds, or a record whose fold is outside them.
    """
    if n_folds < 3:
        raise ValueError(f"cross-validation needs at least 3 folds (train, validation, test), got n_folds={n_folds}")
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold={fold} is not one of the {n_folds} folds 0..{n_folds - 1}")
    validation = (fold + 1) % n_folds
    split: dict[str, list[dict[str, Any]]] = {"train": [], "val": [], "test": []}
    for record in records:
        if record.get("fold") not in range(n_folds):
            raise ValueError(f"record {record.get('image')}: fold {record.get('fold')!r} is not in 0..{n_folds - 1}")
        part = "test" if record["fold"] == fold else "val" if record["fold"] == validation else "train"
        split[part].append(record)
    return split


def loco_split(
    records: Sequence[dict[str, Any]], centre: str, seed: int = 0, val_fraction: float = 0.1
) -> dict[str, list[dict[str, Any]]]:
    """Leave-one-centre-out run: test = centre ``centre``, validation = a seeded share of the other patients.

    Args:
        records: datalist records, each with its ``centre`` and ``patient``.
        centre: the held-out centre.
        seed: the seed of the validation draw.
        val_fraction: the share of the other centres' patients drawn for validation (rounded up).

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, records in datalist order.

    Raises:
        ValueError: an unknown centre, a patient seen at two centres, or too few patients to draw a validation set.
    """
    centres = sorted({str(record["centre"]) for record in records})
    if centre not in centres:
        raise ValueError(f"centre {centre!r} is unknown; centres in the datalist: {', '.join(centres)}")
    centre_of: dict[str, str] = {}
    for record in records:
        first = centre_of.setdefault(record["patient"], record["centre"])
        if first != record["centre"]:
            raise ValueError(
                f"patient {record['patient']} has images at centres {first} and {record['centre']}: "
                "leave-one-centre-out needs each patient at one centre"
            )
    test = [record for record in records if record["centre"] == centre]
    others = [record for record in records if record["centre"] != centre]
    return {**patient_holdout(others, val_fraction, seed), "test": test}


def patient_holdout(
    records: Sequence[dict[str, Any]], fraction: float = 0.1, seed: int = 0
) -> dict[str, list[dict[str, Any]]]:
    """A seeded share of the patients for validation, the others for training.

    Args:
        records: records, each with its ``patient``.
        fraction: the share of patients drawn for validation (rounded up).
        seed: the seed of the draw.

    Returns:
        ``{"train": [...], "val": [...]}``, records in their given order.

    Raises:
        ValueError: fewer than 2 patients.
    """
    patients = [record["patient"] for record in records]
    if len(set(patients)) < 2:
        raise ValueError(f"{len(set(patients))} patient(s) cannot be split into training and validation")
    splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    train, val = next(splitter.split(records, groups=patients))
    return {"train": [records[i] for i in sorted(train)], "val": [records[i] for i in sorted(val)]}
