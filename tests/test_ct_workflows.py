"""End to end: `monai.bundle run training / evaluating / inference` of the COVID-MTL CT family on tiny volumes."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from bundle.data.hust import ensure_hust_datalist
from bundle.engine.checkpoint import load_checkpoint
from conftest import bundle_command

pytestmark = pytest.mark.e2e

# Tiny volumes and network: the demo grid kept (no 1 mm resampling), the snake on 4 mm pixels, a 32^3 lung box,
# narrow Fire modules and first-order/texture radiomics of the original image only (no wavelets).
TINY_CT = [
    "--ct_spacing", "[7.5,7.5,7.2]", "--snake_spacing", "4.0", "--roi_size", "32",
    "--fire_channels", "[8,8,16,16,24,24,32,32]", "--stem_channels", "8",
    "--radiomics_image_types", "['Original']",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_ct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny synthetic CT data (shared with test_ct_data.py through the same session folder)."""
    root = tmp_path_factory.getbasetemp() / "tiny_ct"
    ensure_hust_datalist(root / "hust19.json", demo=True, root=root, size="tiny")
    return root


@pytest.fixture(scope="module")
def trained(tiny_ct: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("covid_mtl_ct")
    bundle_command(
        "run", "training", "--config_file", "configs/covid_mtl_ct/train.yaml", "--dataset_dir", str(tiny_ct),
        "--bundle_root", str(out), "--max_epochs", "1", "--batch_size", "4", "--num_workers", "0", *TINY_CT,
    )  # fmt: skip
    return out


def test_training_one_epoch_with_the_random_weighted_loss(trained: Path) -> None:
    models = trained / "models" / "covid_mtl_ct"
    assert (models / "model.pt").is_file()
    state = load_checkpoint(models / "checkpoint_last.pt")
    assert state["trainer"]["epoch"] == 1
    weights = state["network"]
    assert "shift.step" in weights and int(weights["shift.step"]) > 0  # Shift3D ran in training
    assert any(key.startswith("radiomics.") for key in weights)  # the radiomics side network exists
    assert {"optimizer", "lr_scheduler", "loss"} <= set(state)


def test_evaluating_reports_every_task(trained: Path, tiny_ct: Path, tmp_path: Path) -> None:
    bundle_command(
        "run", "evaluating", "--config_file", "configs/covid_mtl_ct/evaluate.yaml", "--dataset_dir", str(tiny_ct),
        "--bundle_root", str(trained), "--eval_dir", str(tmp_path), "--n_boot", "20", "--num_workers", "0", *TINY_CT,
    )  # fmt: skip
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert set(report["tasks"]) == {"detection_radiology", "detection_nat", "severity"}
    assert "roc_auc" in report["tasks"]["detection_nat"]["metrics"]
    assert "accuracy" in report["tasks"]["severity"]


def test_inference_from_a_dicom_series_folder_and_a_nifti_file(trained: Path, tiny_ct: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    shutil.copytree(tiny_ct / "HUST19" / "dicom" / "HUST0002", inputs / "scan_a")
    (inputs / "nested").mkdir()
    shutil.copy(tiny_ct / "HUST19" / "nifti" / "HUST0003.nii.gz", inputs / "nested" / "scan_b.nii.gz")
    (inputs / "notes.txt").write_text("not a scan")
    out = tmp_path / "out"
    bundle_command(
        "run", "inference", "--config_file", "configs/covid_mtl_ct/inference.yaml", "--input", str(inputs),
        "--output_dir", str(out), "--bundle_root", str(trained), "--dataset_dir", str(tiny_ct), *TINY_CT,
    )  # fmt: skip
    with open(out / "predictions.csv") as f:
        rows = {Path(r["file"]).name: r for r in csv.DictReader(f)}
    assert set(rows) == {"scan_a", "scan_b.nii.gz", "notes.txt"}
    for name in ("scan_a", "scan_b.nii.gz"):
        row = rows[name]
        assert row["status"] == "ok", row["error"]
        assert 0.0 <= float(row["detection_nat_prob_positive"]) <= 1.0
        assert row["severity_class"] in {"control_suspected", "mild_regular", "severe_critical"}
    assert rows["notes.txt"]["status"] == "error"
    assert "SYNTH" not in (out / "predictions.csv").read_text()  # synthetic PHI never reaches outputs
