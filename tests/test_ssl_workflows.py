"""End to end: the SSL family's real `python -m monai.bundle run` commands and the critical evaluation, on tiny data."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from bundle.data.synthetic_siim import ensure_siim_datalist
from bundle.engine.checkpoint import load_checkpoint
from bundle.networks.backbones import weights_sidecar
from bundle.networks.multihead import MultiHeadNet
from conftest import ROOT, bundle_command

pytestmark = pytest.mark.e2e

NET = ["--backbone", "resnet10", "--backbone_kwargs", "{'widen_factor': 0.25}", "--image_size", "64"]
TINY = [*NET, "--batch_size", "8", "--num_workers", "0", "--max_epochs", "1"]
CORE_TASKS = [
    {"name": "prognosis", "classes": ["MILD", "SEVERE"], "target": "prognosis", "head": "prognosis_mlp"},
    {"name": "severity", "classes": ["0-4", "5-9", "10-14", "15-18"], "target": "brixia_global_class"},
]


@pytest.fixture(scope="module")
def siim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny synthetic SIIM-like data and its datalist; every workflow below shares its preprocessing cache."""
    root = tmp_path_factory.mktemp("siim")
    ensure_siim_datalist(root / "siim_covid.json", demo=True, root=root / "data", size="tiny")
    return root


def _data(root: Path) -> list[str]:
    return ["--dataset_dir", str(root / "data"), "--datalist", str(root / "siim_covid.json")]


@pytest.fixture(scope="module")
def pretrained(siim: Path) -> Path:
    for method, extra in (("moco", ["--queue_size", "8"]), ("inpainting", [])):
        bundle_command(
            "run", "training", "--config_file", f"configs/ssl/{method}.yaml", *_data(siim), *TINY, *extra,
            "--ckpt_dir", str(siim / "pretrain"), "--output_dir", str(siim / "runs"),
        )  # fmt: skip
    return siim / "pretrain"


@pytest.fixture(scope="module")
def multitask(siim: Path, pretrained: Path) -> tuple[Path, str]:
    out = siim / "multitask"
    completed = bundle_command(
        "run", "training", "--config_file", "configs/ssl/finetune.yaml", *_data(siim), *TINY,
        "--pretrained", str(pretrained / "moco_backbone.pt"), "--ckpt_dir", str(out),
        "--output_dir", str(siim / "runs"),
    )  # fmt: skip
    return out, completed.stdout + completed.stderr


@pytest.mark.parametrize("method", ["moco", "inpainting"])
def test_pretraining_writes_backbone_weights_the_mdmt_network_loads(pretrained: Path, method: str) -> None:
    weights = pretrained / f"{method}_backbone.pt"
    sidecar = json.loads(weights_sidecar(weights).read_text())
    assert sidecar["method"] == method and sidecar["backbone"] == "resnet10" and sidecar["epochs"] == 1
    mdmt = MultiHeadNet("resnet10", CORE_TASKS, backbone_kwargs={"widen_factor": 0.25}, pretrained=weights)
    state = load_checkpoint(weights)
    torch.testing.assert_close(mdmt.backbone.conv1.weight, state["conv1.weight"])
    resumable = load_checkpoint(pretrained / f"{method}_checkpoint_last.pt")
    assert resumable["trainer"]["epoch"] == 1 and {"network", "optimizer"} <= set(resumable)


def test_multitask_finetuning_from_moco_trains_and_validates_both_tasks(multitask: tuple[Path, str]) -> None:
    out, log = multitask
    state = load_checkpoint(out / "model.pt")
    assert any(k.startswith("decoder.") for k in state) and "heads.appearance.2.weight" in state
    assert "opacity_dice" in log and "appearance_accuracy" in log


def test_single_task_finetuning_from_inpainting(siim: Path, pretrained: Path) -> None:
    out = siim / "single"
    bundle_command(
        "run", "training", "--config_file", "configs/ssl/finetune.yaml", *_data(siim), *TINY, "--multitask", "False",
        "--label_budget", "2", "--pretrained", str(pretrained / "inpainting_backbone.pt"), "--ckpt_dir", str(out),
        "--output_dir", str(siim / "runs"),
    )  # fmt: skip
    state = load_checkpoint(out / "model.pt")
    assert not any(k.startswith("decoder.") for k in state)


def test_critical_evaluation_writes_numbers_figures_and_readout(
    siim: Path, multitask: tuple[Path, str], tmp_path: Path
) -> None:
    spec = importlib.util.spec_from_file_location("critical_eval", ROOT / "scripts" / "critical_eval.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "eval"
    assert script.main(
        ["--config_file", "configs/ssl/finetune.yaml", "--checkpoint", str(multitask[0] / "model.pt"),
         "--out", str(out), "--samples", "1", *_data(siim), *NET]
    ) == 0  # fmt: skip
    report = json.loads((out / "metrics.json").read_text())
    assert set(report["shortcut"]["accuracy"]) == {"none", "lungs", "outside"}
    assert len(report["classification"]["confusion"]) == 4 and "top_label_ece" in report["calibration"]
    assert "opacity_dice" in report and set(report["cam"]) == {"negative", "typical", "indeterminate", "atypical"}
    for png in ("confusion.png", "reliability.png", "shortcut.png"):
        assert (out / png).stat().st_size > 1000
    assert list(out.glob("gradcam_*.png"))
    assert "What the model looks at" in (out / "readout.md").read_text()
