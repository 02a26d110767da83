"""Fixtures of the deploy tests: a deployable model.ts of a small random network, and a synthetic DICOM study.

These tests run in ``.venv-deploy`` (``make deploy-test``), where the MONAI Deploy App SDK is installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from monai.bundle import ConfigParser

from bundle.data.phantom import make_phantom
from bundle.data.synthetic import Acquisition, write_cxr_dicom
from bundle.networks.multihead import MultiHeadNet

ROOT = Path(__file__).resolve().parents[1]
BACKBONE = "resnet10"
"""Small enough to export and run in seconds on CPU; the preprocessing (image size 256) is the bundle's default."""


def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python <args>`` from the bundle root with this environment's interpreter; fail the test if it fails."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="2")
    completed = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env
    )
    if completed.returncode != 0:
        pytest.fail(
            f"python {' '.join(args)} exited {completed.returncode}\n"
            f"--- stdout (tail)\n{completed.stdout[-4000:]}\n--- stderr (tail)\n{completed.stderr[-6000:]}"
        )
    return completed


@pytest.fixture(scope="session")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(model.pt, model.ts)``: a randomly initialised network saved as the bundle saves it, exported for deploy."""
    folder = tmp_path_factory.mktemp("model")
    tasks = ConfigParser.load_config_file(ROOT / "configs" / "common.yaml")["tasks"]
    torch.manual_seed(0)
    checkpoint, exported = folder / "model.pt", folder / "model.ts"
    torch.save(MultiHeadNet(BACKBONE, tasks, in_channels=3).state_dict(), checkpoint)
    run("-m", "deploy.export", "--ckpt_file", str(checkpoint), "--filepath", str(exported), "--backbone", BACKBONE)
    return checkpoint, exported


@pytest.fixture(scope="session")
def synthetic_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One study, two series: a lateral chest radiograph (listed first) and a frontal PA one, both MONOCHROME1 with
    a VOI LUT, so that series selection and the reader's VOI and inversion steps are all exercised."""
    folder = tmp_path_factory.mktemp("study")
    image, _ = make_phantom(np.random.default_rng(0), (320, 288), zone_scores=(1, 2, 0, 1, 3, 2))
    acquisition = Acquisition("CR", "SYNTH", "MONOCHROME1", 12, voi_lut=True)
    study_uid = pydicom.uid.generate_uid(entropy_srcs=["deploy-test-study"])
    for name, view in (("a_lateral.dcm", "LL"), ("b_frontal.dcm", "PA")):
        path = folder / name
        write_cxr_dicom(
            path, image, acquisition, patient_name="SYNTH^DEPLOY", patient_id="SYNTH-DEPLOY",
            pixel_spacing_mm=(0.14, 0.14), uid_key=f"deploy-test/{view}", view_position=view,
        )  # fmt: skip
        dataset = pydicom.dcmread(path)
        dataset.StudyInstanceUID = study_uid
        dataset.save_as(path, enforce_file_format=True)
    return folder
