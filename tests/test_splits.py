"""Patient-level folds, the cross-validation rotation and leave-one-centre-out splits."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bundle.data.datalist import select_split, write_datalist
from bundle.data.splits import assign_folds, cv_split, loco_split


def aiforcovid_like(n_per_centre: dict[str, int], seed: int = 0) -> list[dict[str, Any]]:
    """One image per patient, centres of the given sizes, about 45% SEVERE."""
    rng = np.random.default_rng(seed)
    return [
        {"image": f"/data/{centre}_{i}.dcm", "centre": centre, "patient": f"{centre}_{i}", "prognosis": int(severe)}
        for centre, n in n_per_centre.items()
        for i, severe in enumerate(rng.random(n) < 0.45)
    ]


def brixia_like(n_subjects: int, seed: int = 0) -> list[dict[str, Any]]:
    """Subjects with 1-4 studies each, a severity class per study and two manufacturers."""
    rng = np.random.default_rng(seed)
    return [
        {"image": f"/data/{s}_{k}.dcm", "centre": "Brescia", "patient": f"S{s}", "label": f"{rng.integers(4)}|{s % 2}"}
        for s in range(n_subjects)
        for k in range(rng.integers(1, 5))
    ]


def fold_table(records: list[dict[str, Any]], label: str, n_folds: int = 5, seed: int = 0) -> pd.DataFrame:
    table = pd.DataFrame(records)
    table["fold"] = assign_folds(table[label].astype(str).tolist(), table["patient"].tolist(), n_folds, seed)
    return table


def test_folds_are_patient_disjoint_with_several_studies_per_subject() -> None:
    table = fold_table(brixia_like(200), "label")
    assert table.groupby("patient")["fold"].nunique().max() == 1
    assert sorted(table["fold"].unique()) == [0, 1, 2, 3, 4]


def test_folds_are_stratified_by_class_and_centre() -> None:
    records = aiforcovid_like({"A": 120, "B": 104, "C": 151, "D": 139, "E": 101, "F": 300})
    for record in records:
        record["stratum"] = f"{record['prognosis']}|{record['centre']}"
    table = fold_table(records, "stratum")
    overall = table["prognosis"].mean()
    assert (table.groupby("fold")["prognosis"].mean() - overall).abs().max() < 0.03
    centre_share = pd.crosstab(table["fold"], table["centre"], normalize="index")
    assert (centre_share - table["centre"].value_counts(normalize=True)).abs().max().max() < 0.03
    assert table.groupby("fold").size().between(len(table) / 5 - 5, len(table) / 5 + 5).all()


def test_folds_are_deterministic_for_a_seed() -> None:
    records = brixia_like(100)
    first, again, other = (fold_table(records, "label", seed=seed)["fold"] for seed in (0, 0, 1))
    assert first.equals(again)
    assert not first.equals(other)


def test_small_strata_warn_and_still_get_folds() -> None:
    records = aiforcovid_like({"A": 60, "B": 60})
    records += [{"image": "/data/Z.dcm", "centre": "Z", "patient": f"Z_{i}", "prognosis": 1} for i in range(2)]
    labels = [f"{record['prognosis']}|{record['centre']}" for record in records]
    with pytest.warns(UserWarning, match=r"1\|Z \(2 patients\)"):
        folds = assign_folds(labels, [record["patient"] for record in records])
    assert sorted(set(folds)) == [0, 1, 2, 3, 4]


def test_only_small_strata_do_not_crash() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        folds = assign_folds(list("aabbccdde"), [f"p{i}" for i in range(9)])
    assert sorted(set(folds)) == [0, 1, 2, 3, 4]


def test_fewer_patients_than_folds_is_an_error() -> None:
    with pytest.raises(ValueError, match="3 patients cannot fill 5"):
        assign_folds(["a"] * 6, ["p1", "p1", "p2", "p2", "p3", "p3"])


@pytest.mark.parametrize("fold", range(5))
def test_cv_split_rotates_test_and_validation_folds(fold: int) -> None:
    records = [{"image": str(i), "fold": i % 5} for i in range(50)]
    split = cv_split(records, fold)
    assert {record["fold"] for record in split["test"]} == {fold}
    assert {record["fold"] for record in split["val"]} == {(fold + 1) % 5}
    assert {record["fold"] for record in split["train"]} == set(range(5)) - {fold, (fold + 1) % 5}
    images = [record["image"] for part in split.values() for record in part]
    assert sorted(images) == sorted(record["image"] for record in records)


def test_cv_split_refuses_bad_folds() -> None:
    with pytest.raises(ValueError, match="fold=5"):
        cv_split([{"fold": 0}], 5)
    with pytest.raises(ValueError, match="at least 3 folds"):
        cv_split([{"fold": 0}], 0, n_folds=2)


def test_loco_split_holds_out_one_centre_and_a_tenth_of_the_other_patients() -> None:
    records = aiforcovid_like({"A": 50, "B": 50, "C": 100})
    records += [{**records[0], "image": "/data/A_0_second.dcm"}]  # a patient with two images
    split = loco_split(records, "C", seed=3)
    assert {record["centre"] for record in split["test"]} == {"C"} and len(split["test"]) == 100
    patients = {part: {record["patient"] for record in split[part]} for part in split}
    assert not patients["train"] & patients["val"] and not (patients["train"] | patients["val"]) & patients["test"]
    assert len(patients["val"]) == 10
    assert sum(len(part) for part in split.values()) == len(records)
    assert loco_split(records, "C", seed=3) == split
    assert loco_split(records, "C", seed=4)["val"] != split["val"]


def test_loco_split_refuses_unknown_centre_and_shared_patients() -> None:
    records = aiforcovid_like({"A": 10, "B": 10})
    with pytest.raises(ValueError, match="centres in the datalist: A, B"):
        loco_split(records, "Z")
    with pytest.raises(ValueError, match="A_0"):
        loco_split([*records, {**records[0], "centre": "B"}], "A")


def test_select_split_from_a_datalist_file(tmp_path: Path) -> None:
    records = aiforcovid_like({"A": 20, "B": 20})
    folds = assign_folds([record["centre"] for record in records], [record["patient"] for record in records])
    for record, fold in zip(records, folds, strict=True):
        record["fold"] = int(fold)
        record["image"] = str(tmp_path / "imgs" / Path(record["image"]).name)
    path = write_datalist(tmp_path / "lists" / "aiforcovid.json", "aiforcovid", records, num_folds=5)
    cv = select_split(path, "cv", 2)
    assert cv == cv_split(records, 2)
    loco = select_split(path, "loco", "B")
    assert loco == loco_split(records, "B")
    with pytest.raises(ValueError, match="unknown protocol"):
        select_split(path, "holdout", 0)  # type: ignore[arg-type]
