"""The records of one experiment run: an evaluation protocol applied to every dataset of the experiment.

``configs/common.yaml`` calls :func:`experiment_split` once; training takes ``train`` and ``val``, evaluation ``test``.
A strategy (``configs/strategies/``) chooses the datasets it trains on with ``train_datasets`` (STL-prognosis
AIforCOVID alone, STL-severity BRIXIA alone, MDMT both); the test part always comes from every datalist, so that all
strategies of a run are evaluated on the same images (each task on the records that label it).

- ``cv``: run ``fold`` of every dataset's own patient-level folds (test fold k, validation fold k+1).
- ``loco``: ``fold`` is a held-out centre. A dataset that has that centre is split by leave-one-centre-out; a dataset
  that does not (BRIXIA, one hospital, under an AIforCOVID centre) is auxiliary data for the run: a seeded 10% of
  its patients for validation, the rest for training, none for the test, which is the held-out centre alone. The
  centre may belong to a dataset the strategy does not train on (STL-severity under an AIforCOVID centre).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from bundle.data.datalist import load_datalist
from bundle.data.splits import cv_split, loco_split, patient_holdout

PROTOCOLS: tuple[str, ...] = ("cv", "loco")
PARTS: tuple[str, ...] = ("train", "val", "test")


def experiment_split(
    datalists: Mapping[str, str | os.PathLike[str]],
    protocol: str,
    fold: int | str,
    train_datasets: Sequence[str],
    seed: int = 0,
) -> dict[str, list[dict[str, Any]]]:
    """The train, validation and test records of one protocol run over the experiment's datasets.

    Args:
        datalists: dataset name -> datalist JSON, for every dataset of the study.
        protocol: ``"cv"`` or ``"loco"``.
        fold: the cross-validation run (``0..num_folds-1``) or the held-out centre.
        train_datasets: the datasets the strategy trains (and validates) on.
        seed: the seed of the leave-one-centre-out validation draw.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``: training and validation records of ``train_datasets``,
        test records of every datalist, concatenated in the order of ``datalists``; image paths absolute.

    Raises:
        ValueError: an unknown protocol, a dataset without a datalist, or a fold/centre no dataset has.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    if not train_datasets:
        raise ValueError("train_datasets is empty: name at least one dataset of the datalists")
    unknown = [name for name in train_datasets if name not in datalists]
    if unknown:
        raise ValueError(f"train_datasets {unknown} have no datalist; datalists are given for {sorted(datalists)}")
    loaded = {name: load_datalist(path) for name, path in datalists.items()}
    centres = {name: {str(record.get("centre")) for record in records} for name, (_, records) in loaded.items()}
    if protocol == "loco" and not any(str(fold) in found for found in centres.values()):
        known = ", ".join(sorted(set().union(*centres.values())))
        raise ValueError(f"centre {fold!r} is in none of the datalists {sorted(datalists)}; their centres: {known}")
    split: dict[str, list[dict[str, Any]]] = {part: [] for part in PARTS}
    for name, (header, records) in loaded.items():
        if protocol == "cv":
            parts = cv_split(records, int(fold), n_folds=int(header["num_folds"]))
        elif str(fold) in centres[name]:
            parts = loco_split(records, str(fold), seed=seed)
        else:
            parts = {**patient_holdout(records, seed=seed), "test": []}
        for part in PARTS if name in train_datasets else ("test",):
            split[part] += parts[part]
    return split
