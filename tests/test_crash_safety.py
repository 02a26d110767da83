"""Crash safety: a training run killed at any moment resumes to the same end, and no checkpoint is ever half written."""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.synchronize
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer
from monai.handlers import LrScheduleHandler
from monai.transforms import Compose, RandAffined, RandGaussianNoised
from monai.utils import set_determinism

from bundle.data.datalist import load_datalist
from bundle.data.sampler import MultiDatasetSampler
from bundle.engine import checkpoint
from bundle.engine.checkpoint import TrainingCheckpointer, atomic_save, load_checkpoint
from bundle.engine.sampler_epoch import SamplerEpochSetter
from bundle.networks.multihead import MultiHeadNet
from bundle.transforms.flip import RandLungFlipd
from conftest import ROOT, TINY_NETWORK, bundle_command

# ---- the checkpointer restores everything a run's future depends on --------------------------------------------------


def _toy_run(ckpt_dir: Path, max_epochs: int, resume: bool) -> tuple[torch.nn.Module, torch.optim.Optimizer, Any]:
    """A small training run with every stateful part of the real one: random augmentation (MONAI transforms with
    their own generators), dropout (torch's generator), the multi-dataset sampler, Adam and an LR schedule."""
    set_determinism(seed=0)  # what configs/train.yaml's initialize does in every new process
    generator = torch.Generator().manual_seed(1)
    data = [
        {"image": torch.rand(1, 8, 8, generator=generator), "label": i % 2, "zones": [0, 1, 2, 3, 0, 1], "ds": i % 3}
        for i in range(12)
    ]
    transform = Compose(
        [
            RandAffined(keys="image", prob=0.5, rotate_range=0.5, padding_mode="border"),
            RandGaussianNoised(keys="image", prob=0.5, std=0.3),
            RandLungFlipd(keys="image", zones_key="zones", prob=0.5),
        ]
    )
    sampler = MultiDatasetSampler([d["ds"] for d in data], batch_size=4, seed=0)
    loader = DataLoader(Dataset(data, transform), batch_size=4, sampler=sampler, num_workers=0)
    network = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.Dropout(0.5), torch.nn.Linear(32, 2)
    )
    optimizer = torch.optim.Adam(network.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    checkpointer = TrainingCheckpointer(
        network,
        {"optimizer": optimizer, "lr_scheduler": scheduler, "sampler": sampler},
        best_path=str(ckpt_dir / "model.pt"),
        last_path=str(ckpt_dir / "checkpoint_last.pt"),
        resume=resume,
    )
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=max_epochs,
        train_data_loader=loader,
        network=network,
        optimizer=optimizer,
        loss_function=torch.nn.CrossEntropyLoss(),
        train_handlers=[LrScheduleHandler(scheduler, print_lr=False), checkpointer, SamplerEpochSetter(sampler)],
    )
    trainer.run()
    return network, optimizer, trainer


def test_resumed_run_equals_the_uninterrupted_run_exactly(tmp_path: Path) -> None:
    """Model, optimizer, scheduler, sampler, global RNGs and the augmentation transforms' own generators."""
    straight, straight_optimizer, _ = _toy_run(tmp_path / "straight", max_epochs=4, resume=False)
    _toy_run(tmp_path / "stopped", max_epochs=2, resume=False)  # a run stopped after epoch 2 ...
    resumed, resumed_optimizer, trainer = _toy_run(tmp_path / "stopped", max_epochs=4, resume=True)  # ... resumed
    assert (trainer.state.epoch, trainer.state.iteration) == (4, 12)
    for name, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=0, msg=name)
    straight_state, resumed_state = straight_optimizer.state_dict(), resumed_optimizer.state_dict()
    assert resumed_state["param_groups"] == straight_state["param_groups"]  # learning rate as scheduled
    for index, moments in straight_state["state"].items():
        torch.testing.assert_close(resumed_state["state"][index]["exp_avg"], moments["exp_avg"], rtol=0, atol=0)


def test_resuming_the_toy_run_without_the_transform_states_would_diverge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The previous test can fail: without the augmentation generators the resumed run takes another path."""
    straight, _, _ = _toy_run(tmp_path / "straight", max_epochs=4, resume=False)
    _toy_run(tmp_path / "stopped", max_epochs=2, resume=False)
    monkeypatch.setattr(checkpoint, "_set_transform_states", lambda engine, states: None)
    resumed, _, _ = _toy_run(tmp_path / "stopped", max_epochs=4, resume=True)
    assert not torch.equal(resumed[1].weight, straight[1].weight)


# ---- a real training run, killed mid-epoch, resumed ------------------------------------------------------------------


def _small_datalists(tiny_demo: Path, folder: Path, per_fold: int = 2) -> dict[str, str]:
    """The tiny demo datalists cut to ``per_fold`` records per fold (absolute image paths), for a fast real run."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in ("aiforcovid", "brixia"):
        header, records = load_datalist(tiny_demo / f"{name}.json")
        kept = [r for fold in range(header["num_folds"]) for r in [r for r in records if r["fold"] == fold][:per_fold]]
        paths[name] = str(folder / f"{name}.json")
        Path(paths[name]).write_text(json.dumps({**header, "data": kept}))
    return paths


def test_training_killed_mid_epoch_resumes_to_the_planned_epochs(tiny_demo: Path, tmp_path: Path) -> None:
    datalists = _small_datalists(tiny_demo, tmp_path / "data")
    models = tmp_path / "models"
    args = [
        "--config_file", "configs/train.yaml", "--datalists", repr(datalists), "--demo_data", "False",
        "--ckpt_dir", str(models), "--output_dir", str(tmp_path / "runs"), *TINY_NETWORK,
        "--batch_size", "6", "--num_workers", "0", "--warmup_epochs", "0", "--early_stop_patience", "100",
        "--max_epochs", "4",
    ]  # fmt: skip
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="2")
    process = subprocess.Popen(
        [sys.executable, "-m", "monai.bundle", "run", "training", *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    output = []
    try:
        assert process.stdout is not None
        for line in process.stdout:  # epoch 1 done and checkpointed, epoch 2 under way: kill it
            output.append(line)
            if "Epoch: 2/4, Iter: 1/" in line:
                process.send_signal(signal.SIGKILL)
                break
    finally:
        process.kill()
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "".join(output)[-4000:]
    killed = load_checkpoint(models / "checkpoint_last.pt")
    assert 1 <= killed["trainer"]["epoch"] < 4
    epoch_length = killed["trainer"]["iteration"] // killed["trainer"]["epoch"]

    completed = bundle_command("run", "training", *args, "--resume", "True")
    log = completed.stdout + completed.stderr
    assert f"resumed from {models / 'checkpoint_last.pt'} at epoch {killed['trainer']['epoch']}" in log
    final = load_checkpoint(models / "checkpoint_last.pt")
    assert final["trainer"] == {"epoch": 4, "iteration": 4 * epoch_length}  # where an uninterrupted run ends
    tasks = ConfigParser.load_config_file(ROOT / "configs" / "common.yaml")["tasks"]
    MultiHeadNet("resnet10", tasks, in_channels=3).load_state_dict(load_checkpoint(models / "model.pt"))


# ---- atomic checkpoint writes ----------------------------------------------------------------------------------------


# The children are forked from this process and must not run parallel torch kernels (OpenMP does not survive a fork),
# so the large tensor is made here and the children only serialise it.
WEIGHTS = torch.arange(4_000_000, dtype=torch.float32)


def _save_forever(path: Path) -> None:
    """Child process: write ever newer versions of a large checkpoint until killed."""
    version = 0
    while True:
        version += 1
        atomic_save({"version": torch.tensor(version), "weights": WEIGHTS}, path)


def _save_then_stall(path: Path, stalled: multiprocessing.synchronize.Event) -> None:
    """Child process: write version 99 but stop for good once it is written, just before the rename."""

    def stall(fd: int) -> None:
        stalled.set()
        signal.pause()

    checkpoint.os.fsync = stall
    atomic_save({"version": torch.tensor(99), "weights": WEIGHTS}, path)


def _assert_complete(path: Path) -> int:
    """The checkpoint loads and is one whole version; returns that version."""
    state = load_checkpoint(path)
    assert torch.equal(state["weights"], WEIGHTS)
    return int(state["version"])


def test_a_kill_during_a_checkpoint_write_never_replaces_the_previous_one(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint_last.pt"
    context = multiprocessing.get_context("fork")
    for _ in range(3):  # killed wherever the write loop happens to be once a new version is being written
        for leftover in tmp_path.glob(".checkpoint_last.pt.*"):  # what the previous kill left behind
            leftover.unlink()
        writer = context.Process(target=_save_forever, args=(path,))
        writer.start()
        deadline = time.monotonic() + 120
        while not any(p.name.startswith(".checkpoint_last.pt.") for p in tmp_path.iterdir()) or not path.exists():
            assert time.monotonic() < deadline, "the writer never started a second version"
            time.sleep(0.001)
        os.kill(writer.pid, signal.SIGKILL)
        writer.join()
        assert _assert_complete(path) >= 1

    before = _assert_complete(path)
    stalled = context.Event()
    writer = context.Process(target=_save_then_stall, args=(path, stalled))
    writer.start()
    try:
        assert stalled.wait(timeout=120), "the writer never finished writing its temporary file"
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.join()
    assert _assert_complete(path) == before  # the complete new version was never renamed over the old one
