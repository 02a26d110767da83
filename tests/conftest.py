"""Shared fixtures: tiny synthetic datasets and a helper that runs the real `python -m monai.bundle` commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A network and images small enough for end-to-end runs on 2 CPU cores in seconds.
TINY_NETWORK = ["--backbone", "resnet10", "--image_size", "64"]
TINY_TRAINING = ["--batch_size", "8", "--num_workers", "0", "--warmup_epochs", "0", "--early_stop_patience", "5"]


def bundle_command(command: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``python -m monai.bundle <command> ...`` from the bundle root; fail the test with its output if it fails."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="2")
    completed = subprocess.run(
        [sys.executable, "-m", "monai.bundle", command, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if completed.returncode != 0:
        pytest.fail(
            f"monai.bundle {command} {' '.join(args)} exited {completed.returncode}\n"
            f"--- stdout (tail)\n{completed.stdout[-4000:]}\n--- stderr (tail)\n{completed.stderr[-6000:]}"
        )
    return completed


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny synthetic AIforCOVID + BRIXIA data and their datalists, made once per test session."""
    from bundle.data.demo import ensure_datalists

    root = tmp_path_factory.mktemp("tiny_demo")
    ensure_datalists(
        {"aiforcovid": root / "aiforcovid.json", "brixia": root / "brixia.json"}, demo=True, root=root, size="tiny"
    )
    return root
