"""End to end: MultiMix training, evaluation and inference through `python -m monai.bundle run` on tiny data."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bundle.data.multimix_synthetic import ensure_multimix_datalists
from bundle.engine.checkpoint import load_checkpoint
from conftest import bundle_command

pytestmark = pytest.mark.e2e

TINY = ["--image_size", "32", "--channels", "[4,8,16]"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny synthetic Kermany / JSRT / NIH / Montgomery data and datalists, in the real layouts."""
    root = tmp_path_factory.mktemp("multimix_demo")
    ensure_multimix_datalists(
        [
            {"classification": root / "kermany.json", "segmentation": root / "jsrt.json"},
            {"classification": root / "nih.json", "segmentation": root / "montgomery.json"},
        ],
        root=root,
        size="tiny",
    )
    return root


@pytest.fixture(scope="module")
def trained(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("multimix_run")
    completed = bundle_command(
        "run", "training", "--config_file", "configs/multimix/train.yaml", "--dataset_dir", str(demo),
        "--ckpt_dir", str(out / "models"), "--output_dir", str(out / "runs"), *TINY,
        "--cls_labels", "12", "--seg_labels", "4", "--batch_size", "2", "--iterations_per_epoch", "2",
        "--max_epochs", "1", "--num_workers", "0",
    )  # fmt: skip
    return out, completed.stdout + completed.stderr


def test_demo_data_is_written_in_the_real_layouts(demo: Path) -> None:
    assert sorted(p.name for p in (demo / "Kermany" / "train").iterdir()) == ["NORMAL", "PNEUMONIA"]
    assert any((demo / "JSRT" / "masks").glob("*.png"))
    left = sorted((demo / "Montgomery" / "ManualMask" / "leftMask").glob("*.png"))
    right = sorted((demo / "Montgomery" / "ManualMask" / "rightMask").glob("*.png"))
    assert [p.name for p in left] == [p.name for p in right] and left
    lungs = np.array(Image.open(left[0])) | np.array(Image.open(right[0]))
    assert set(np.unique(lungs)) == {0, 255}


def test_training_validates_every_epoch_and_keeps_the_selected_model(trained: tuple[Path, str]) -> None:
    out, log = trained
    assert "Key metric: score best value" in log  # validation ran and selected on the MultiMix score
    assert "dice" in log and "accuracy" in log
    assert (out / "models" / "model.pt").is_file()
    state = load_checkpoint(out / "models" / "checkpoint_last.pt")
    assert state["trainer"] == {"epoch": 1, "iteration": 2}
    assert {"network", "optimizer", "lr_scheduler", "sampler"} <= set(state)


def test_evaluating_writes_classification_and_segmentation_metrics(trained: tuple[Path, str], demo: Path) -> None:
    out, _ = trained
    bundle_command(
        "run", "evaluating", "--config_file", "configs/multimix/evaluate.yaml", "--dataset_dir", str(demo),
        "--ckpt_dir", str(out / "models"), "--eval_dir", str(out / "eval"), "--test_domain", "cross",
        "--num_workers", "0", *TINY,
    )  # fmt: skip
    report = json.loads((out / "eval" / "metrics_cross.json").read_text())
    metrics = report["metrics"]
    assert report["test_domain"] == "cross" and report["datalists"]["segmentation"].endswith("montgomery.json")
    assert {"accuracy", "f1_NORMAL", "f1_PNEUMONIA", "dice", "hd95", "score"} <= set(metrics)
    assert metrics["n_classification"] == 8 and metrics["n_segmentation"] == 6
    assert 0.0 <= metrics["accuracy"] <= 1.0 and 0.0 <= metrics["dice"] <= 1.0


def test_inference_writes_a_mask_per_image_at_its_size_and_an_error_row_per_bad_file(
    trained: tuple[Path, str], demo: Path, tmp_path: Path
) -> None:
    out, _ = trained
    inputs = tmp_path / "inputs"
    shutil.copytree(demo / "NIH" / "test" / "PNEUMONIA", inputs / "PNEUMONIA")
    (inputs / "broken.png").write_bytes(b"not a png")
    bundle_command(
        "run", "inference", "--config_file", "configs/multimix/inference.yaml", "--input", str(inputs),
        "--ckpt_dir", str(out / "models"), "--output_dir", str(tmp_path / "results"), *TINY,
    )  # fmt: skip
    with open(tmp_path / "results" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    good = [r for r in rows if r["status"] == "ok"]
    assert len(good) == len(list((inputs / "PNEUMONIA").iterdir())) and len(rows) == len(good) + 1
    assert [r["status"] for r in rows if r["file"].endswith("broken.png")] == ["error"]
    for row in good:
        assert abs(float(row["pneumonia_prob_NORMAL"]) + float(row["pneumonia_prob_PNEUMONIA"]) - 1) < 1e-5
        mask = Image.open(tmp_path / "results" / row["mask"])
        assert row["mask"].startswith("masks/PNEUMONIA/") and row["mask"].endswith("_lungs.png")
        assert mask.size == Image.open(row["file"]).size and set(np.unique(np.array(mask))) <= {0, 255}
