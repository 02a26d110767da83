"""Synthetic CT demo data, the HUST-19 adapter and split, CT input discovery, and the CT target encoders."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
from monai.transforms import Compose, LoadImaged, Orientationd

from bundle.data.ct_series import find_ct_inputs
from bundle.data.datalist import load_datalist
from bundle.data.hust import TEST_FOLDS, ensure_hust_datalist, hust_split
from bundle.data.synthetic_ct import CT_DEMO_SIZES, GGO_HU, plan_scan, render_scan
from bundle.tasks import TaskSet

CT_TASKS = TaskSet(
    [
        {"name": "detection_radiology", "classes": ["negative", "positive"], "target": "radiology_detection"},
        {"name": "detection_nat", "classes": ["negative", "positive"], "target": "nat_detection"},
        {"name": "severity", "classes": ["a", "b", "c"], "target": "ct_severity"},
    ]
)


@pytest.fixture(scope="session")
def tiny_ct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny synthetic CT data and its datalist, made once per test session (shared with test_ct_workflows)."""
    root = tmp_path_factory.getbasetemp() / "tiny_ct"
    ensure_hust_datalist(root / "hust19.json", demo=True, root=root, size="tiny")
    return root


def test_rendering_is_deterministic_and_in_hounsfield_units() -> None:
    size = CT_DEMO_SIZES["tiny"]
    plans = [plan_scan(i, np.random.default_rng(i)) for i in range(2)]
    again = [plan_scan(i, np.random.default_rng(i)) for i in range(2)]
    assert plans == again
    hu, truth, latents = render_scan(plans[0], size)
    hu2, truth2, _ = render_scan(again[0], size)
    assert np.array_equal(hu, hu2) and np.array_equal(truth, truth2)
    assert hu.shape == truth.shape == size.shape
    assert hu.min() < -950 and hu.max() > 400  # air and bone
    assert set(np.unique(truth)) == {0, 1, 2}  # background, right lung, left lung
    lung_hu = np.median(hu[truth > 0])
    assert -900 < lung_hu < GGO_HU[0]


def test_lesion_burden_drives_severity_and_labels_disagree(tiny_ct: Path) -> None:
    _, records = load_datalist(tiny_ct / "hust19.json")
    latents = {row["PatientID"]: row for row in _read_csv(tiny_ct / "HUST19" / "synthetic" / "latents.csv")}
    burden = {s: [float(latents[r["patient"]]["burden"]) for r in records if r["ct_severity"] == s] for s in (1, 2)}
    assert min(burden[2]) > max(b for b in burden[1])  # severe/critical only above the mild/regular burdens
    nat_only = [r for r in records if r["nat"] == 1 and r["radiology"] == 0]
    radiology_only = [r for r in records if r["radiology"] == 1 and r["nat"] == 0]
    assert nat_only and radiology_only  # the two detection labels are different tasks
    for record in records:
        label = CT_TASKS.pack(record)
        assert label.shape == (3,) and not label.isnan().any()


def test_dicom_series_matches_nifti_and_has_correct_geometry(tiny_ct: Path) -> None:
    series = tiny_ct / "HUST19" / "dicom" / "HUST0001"
    files = sorted(series.iterdir())
    size = CT_DEMO_SIZES["tiny"]
    assert len(files) == size.shape[2]
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    z = [float(h.ImagePositionPatient[2]) for h in headers]
    assert np.allclose(np.diff(z), size.spacing[2]) and float(headers[0].SliceThickness) == size.spacing[2]
    assert [float(v) for v in headers[0].PixelSpacing] == [size.spacing[1], size.spacing[0]]
    assert headers[0].RescaleIntercept == -1024 and headers[0].Modality == "CT"
    assert len({h.SOPInstanceUID for h in headers}) == len(headers)
    assert len({h.SeriesInstanceUID for h in headers}) == 1
    assert str(headers[0].PatientName).startswith("SYNTH")
    load = Compose([LoadImaged("image", ensure_channel_first=True, image_only=True), Orientationd("image", "RAS")])
    from_dicom = load({"image": str(series)})["image"]
    from_nifti = load({"image": str(tiny_ct / "HUST19" / "nifti" / "HUST0001.nii.gz")})["image"]
    assert from_dicom.shape == (1, *size.shape)
    assert float((from_dicom - from_nifti).abs().max()) <= 0.5 + 1e-3  # HU rounded to integers in DICOM
    assert np.allclose(from_dicom.affine, from_nifti.affine)


def test_split_is_70_30_stratified_on_nat_with_validation_fold(tiny_ct: Path) -> None:
    _, records = load_datalist(tiny_ct / "hust19.json")
    split = hust_split(tiny_ct / "hust19.json", val_fold=0)
    assert sum(len(v) for v in split.values()) == len(records)
    assert {r["fold"] for r in split["test"]} <= set(TEST_FOLDS) and {r["fold"] for r in split["val"]} == {0}
    assert math.isclose(len(split["test"]) / len(records), 0.3, abs_tol=0.1)
    nat_share = np.mean([r["nat"] for r in records])
    assert abs(np.mean([r["nat"] for r in split["test"]]) - nat_share) < 0.25
    patients = [{r["patient"] for r in part} for part in split.values()]
    assert not (patients[0] & patients[1]) and not (patients[0] & patients[2]) and not (patients[1] & patients[2])
    with pytest.raises(ValueError):
        hust_split(tiny_ct / "hust19.json", val_fold=TEST_FOLDS[0])


def test_ct_inputs_are_series_folders_and_nifti_files(tiny_ct: Path, tmp_path: Path) -> None:
    series = tiny_ct / "HUST19" / "dicom"
    assert find_ct_inputs(series / "HUST0001") == [str(series / "HUST0001")]
    found = find_ct_inputs(tiny_ct / "HUST19")
    assert str(series / "HUST0002") in found and str(tiny_ct / "HUST19" / "nifti" / "HUST0002.nii.gz") in found
    assert not any(Path(f).suffix == ".dcm" for f in found)  # slices are never inputs of their own
    assert str(tiny_ct / "HUST19" / "labels.csv") in found  # a stray file gets an error row, not silence
    with pytest.raises(FileNotFoundError):
        find_ct_inputs(tmp_path / "absent")


def test_ct_target_encoders_reject_bad_values_and_keep_missing_labels() -> None:
    label = CT_TASKS.pack({"radiology": None, "nat": 1, "ct_severity": 2})
    assert math.isnan(label[0]) and label[1:].tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="ct_severity"):
        CT_TASKS.pack({"radiology": 0, "nat": 1, "ct_severity": 3})
    with pytest.raises(ValueError, match="nat"):
        CT_TASKS.pack({"radiology": 0, "nat": 0.5, "ct_severity": 0})


def _read_csv(path: Path) -> list[dict[str, str]]:
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))
