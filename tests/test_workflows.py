"""End to end: the real `python -m monai.bundle run training / evaluating / inference` commands on tiny data."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from pydicom.data import get_testdata_file

from bundle.engine.checkpoint import load_checkpoint
from bundle.networks.multihead import MultiHeadNet
from conftest import ROOT, TINY_NETWORK, TINY_TRAINING, bundle_command

pytestmark = pytest.mark.e2e

SCHEMA = ROOT / "schemas" / "meta_schema_20240725.json"


def train(data: Path, out: Path, *extra: str, config: str = "configs/train.yaml") -> subprocess.CompletedProcess:
    return bundle_command(
        "run", "training", "--config_file", config, "--dataset_dir", str(data),
        "--ckpt_dir", str(out / "models"), "--output_dir", str(out / "runs"),
        *TINY_NETWORK, *TINY_TRAINING, *extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mdmt")
    train(tiny_demo, out, "--max_epochs", "2")
    return out


def test_training_saves_best_and_resumable_checkpoints(trained: Path) -> None:
    assert (trained / "models" / "model.pt").is_file()
    state = load_checkpoint(trained / "models" / "checkpoint_last.pt")
    assert state["trainer"]["epoch"] == 2
    assert {"network", "optimizer", "lr_scheduler", "sampler", "rng"} <= set(state)
    assert any(p.name.startswith("events.out.tfevents") for p in (trained / "runs").iterdir())


def test_training_resumes_to_the_planned_epochs(trained: Path, tiny_demo: Path, tmp_path: Path) -> None:
    shutil.copytree(trained / "models", tmp_path / "models")
    before = load_checkpoint(tmp_path / "models" / "checkpoint_last.pt")
    completed = train(tiny_demo, tmp_path, "--max_epochs", "3", "--resume", "True")
    after = load_checkpoint(tmp_path / "models" / "checkpoint_last.pt")
    assert "resumed from" in completed.stdout + completed.stderr
    assert after["trainer"]["epoch"] == 3
    assert after["trainer"]["iteration"] == before["trainer"]["iteration"] * 3 // 2


def test_evaluating_writes_metrics_with_intervals_and_plots(trained: Path, tiny_demo: Path, tmp_path: Path) -> None:
    bundle_command(
        "run", "evaluating", "--config_file", "configs/evaluate.yaml", "--dataset_dir", str(tiny_demo),
        "--ckpt_dir", str(trained / "models"), "--eval_dir", str(tmp_path), "--n_boot", "50", "--num_workers", "0",
        *TINY_NETWORK,
    )  # fmt: skip
    report = json.loads((tmp_path / "metrics.json").read_text())
    prognosis = report["tasks"]["prognosis"]["metrics"]
    for name in ("accuracy", "f1", "g_mean", "precision", "recall", "roc_auc"):
        assert set(prognosis[name]) >= {"value", "ci_low", "ci_high"}
    assert report["tasks"]["prognosis"]["per_centre"]
    severity = report["tasks"]["severity"]
    assert {"accuracy", "macro_f1", "mae_expected_score"} <= set(severity)
    for png in ("prognosis_roc.png", "prognosis_confusion.png", "prognosis_reliability.png", "severity_confusion.png"):
        assert (tmp_path / png).stat().st_size > 1000
    with open(tmp_path / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == report["n_test"]


def test_inference_on_a_folder_gives_a_row_per_file_and_errors_for_bad_ones(
    trained: Path, tiny_demo: Path, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    (inputs / "nested").mkdir(parents=True)
    good = sorted((tiny_demo / "AIforCOVID" / "imgs").glob("*.dcm"))[:3]
    for i, path in enumerate(good):
        shutil.copy(path, inputs / ("nested" if i else ".") / path.name)
    (inputs / "notes.txt").write_text("not an image")
    (inputs / "empty.dcm").write_bytes(b"")
    out = tmp_path / "out"
    bundle_command(
        "run", "inference", "--config_file", "configs/inference.yaml", "--input", str(inputs), "--output_dir", str(out),
        "--checkpoint", str(trained / "models" / "model.pt"), *TINY_NETWORK,
    )  # fmt: skip
    with open(out / "predictions.csv") as f:
        rows = {Path(r["file"]).name: r for r in csv.DictReader(f)}
    assert len(rows) == 5
    for path in good:
        row = rows[path.name]
        assert row["status"] == "ok" and row["SOPInstanceUID"]
        assert 0.0 <= float(row["prognosis_prob_SEVERE"]) <= 1.0
        assert row["prognosis_class"] in {"MILD", "SEVERE"}
        assert 0.0 <= float(row["severity_expected"]) <= 18.0
    assert rows["notes.txt"]["status"] == "error" and rows["empty.dcm"]["status"] == "error"
    assert "empty" in rows["empty.dcm"]["error"]
    assert len(json.loads((out / "predictions.json").read_text())) == 5
    text = (out / "predictions.csv").read_text() + (out / "predictions.json").read_text()
    assert "SYNTH" not in text  # synthetic patient names and IDs never reach outputs


def test_inference_on_real_radiographs_is_finite(trained: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "rg1"
    inputs.mkdir()
    for name in ("RG1_UNCI.dcm", "RG1_UNCR.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm"):
        shutil.copy(get_testdata_file(name), inputs / name)
    bundle_command(
        "run", "inference", "--config_file", "configs/inference.yaml", "--input", str(inputs),
        "--output_dir", str(tmp_path / "out"), "--checkpoint", str(trained / "models" / "model.pt"), *TINY_NETWORK,
    )  # fmt: skip
    rows = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert [r["status"] for r in rows] == ["ok"] * 4
    for row in rows:
        assert np.isfinite([row["prognosis_prob_SEVERE"], row["severity_expected"]]).all()


def test_bundle_checks_and_torchscript_export_round_trip(trained: Path, tmp_path: Path) -> None:
    bundle_command("verify_metadata", "--meta_file", "configs/metadata.json", "--filepath", str(SCHEMA))
    bundle_command(
        "verify_net_in_out", "network_def", "--meta_file", "configs/metadata.json",
        "--config_file", "configs/inference.yaml", "--device", "cpu",
    )  # fmt: skip
    exported = tmp_path / "model.ts"
    bundle_command(
        "ckpt_export", "network_def", "--filepath", str(exported), "--ckpt_file", str(trained / "models" / "model.pt"),
        "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.yaml", *TINY_NETWORK,
    )  # fmt: skip
    tasks = ConfigParser.load_config_file(ROOT / "configs" / "common.yaml")["tasks"]
    eager = MultiHeadNet("resnet10", tasks, in_channels=3)
    eager.load_state_dict(load_checkpoint(trained / "models" / "model.pt"))
    eager.eval()
    scripted = torch.jit.load(str(exported))
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(scripted(image), eager(image), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("strategy", ["stl_prognosis", "stl_severity"])
def test_single_task_strategies_train(strategy: str, tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    out = tmp_path_factory.getbasetemp() / "strategies"
    config = f"['configs/train.yaml','configs/strategies/{strategy}.yaml']"
    bundle_command(
        "run", "training", "--config_file", config, "--dataset_dir", str(tiny_demo), "--bundle_root", str(out),
        *TINY_NETWORK, *TINY_TRAINING, "--max_epochs", "1",
    )  # fmt: skip
    assert (out / "models" / strategy / "model.pt").is_file()


@pytest.mark.parametrize("strategy", ["ft", "mdmt_averaged"])
def test_strategies_that_start_from_single_task_models(
    strategy: str, tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    out = tmp_path_factory.getbasetemp() / "strategies"
    if not (out / "models" / "stl_severity" / "model.pt").is_file():
        pytest.fail("the single-task strategy tests must run first (same module, parametrised above)")
    config = f"['configs/train.yaml','configs/strategies/{strategy}.yaml']"
    completed = bundle_command(
        "run", "training", "--config_file", config, "--dataset_dir", str(tiny_demo), "--bundle_root", str(out),
        *TINY_NETWORK, *TINY_TRAINING, "--max_epochs", "1",
    )  # fmt: skip
    assert "initialised" in completed.stdout + completed.stderr
    assert (out / "models" / strategy / "model.pt").is_file()
