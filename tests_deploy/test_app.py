"""The MONAI Deploy app end to end: DICOM study in, Comprehensive SR + JSON out, same numbers as bundle inference."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydicom
import pytest
from monai.deploy.operators.monai_bundle_inference_operator import get_bundle_config
from pydicom.data import get_testdata_file
from pydicom.uid import ComprehensiveSRStorage

from conftest import BACKBONE, ROOT, run
from deploy.app import CONFIG_NAME, embedded_loader
from deploy.report import JSON_FILE, SR_FILE

RESULT_KEYS = [
    "prognosis_prob_MILD", "prognosis_prob_SEVERE", "prognosis_class", "severity_prob_0-4", "severity_prob_5-9",
    "severity_prob_10-14", "severity_prob_15-18", "severity_class", "severity_expected",
]  # fmt: skip


@pytest.fixture(scope="session")
def rg1_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pydicom-data's RG1 chest radiograph (CR, MONOCHROME1, 1955 x 1841) alone in a study folder."""
    folder = tmp_path_factory.mktemp("rg1")
    shutil.copy(get_testdata_file("RG1_UNCR.dcm"), folder / "RG1_UNCR.dcm")
    return folder


@pytest.fixture(scope="session")
def bundle_rows(
    model: tuple[Path, Path], synthetic_study: Path, rg1_study: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any]]:
    """``python -m monai.bundle run inference`` on both studies' images, with the checkpoint the app's model came from.

    Returns:
        Result rows by SOPInstanceUID.
    """
    inputs, out = tmp_path_factory.mktemp("bundle_inputs"), tmp_path_factory.mktemp("bundle_out")
    for file in [*synthetic_study.iterdir(), *rg1_study.iterdir()]:
        shutil.copy(file, inputs / file.name)
    run(
        "-m", "monai.bundle", "run", "inference", "--config_file", "configs/inference.yaml", "--input", str(inputs),
        "--output_dir", str(out), "--checkpoint", str(model[0]), "--backbone", BACKBONE, "--strict", "True",
    )  # fmt: skip
    rows = json.loads((out / "predictions.json").read_text())
    return {row["SOPInstanceUID"]: row for row in rows}


def run_app(study: Path, model_ts: Path, out: Path) -> tuple[dict[str, Any], pydicom.Dataset]:
    """Run ``python -m deploy.app`` on a study folder; return its JSON summary and its SR read back by pydicom."""
    run("-m", "deploy.app", "-i", str(study), "-o", str(out), "-m", str(model_ts))
    return json.loads((out / JSON_FILE).read_text()), pydicom.dcmread(out / SR_FILE)


def sr_values(sr: pydicom.Dataset) -> dict[str, Any]:
    """The result items of the SR content tree by concept code value: text or number."""
    values: dict[str, Any] = {}
    for item in sr.ContentSequence:
        code = item.ConceptNameCodeSequence[0]
        key = code.get("CodeValue") or code.get("LongCodeValue")
        if item.ValueType == "NUM":
            values[key] = float(item.MeasuredValueSequence[0].NumericValue)
        elif item.ValueType == "TEXT":
            values[key] = item.TextValue
        elif item.ValueType == "IMAGE":
            values[key] = item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    return values


def assert_report_matches(summary: dict[str, Any], sr: pydicom.Dataset, expected: dict[str, Any]) -> None:
    """The JSON and the SR carry the bundle's result columns (probabilities within 1e-4, same classes)."""
    source_uid = expected["SOPInstanceUID"]
    assert summary["SOPInstanceUID"] == source_uid
    assert sr.SOPClassUID == ComprehensiveSRStorage and sr.Modality == "SR"
    assert sr.StudyInstanceUID == summary["StudyInstanceUID"]
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source_uid
    in_sr = sr_values(sr)
    assert in_sr["121112"] == source_uid  # Source of Measurement
    for key in RESULT_KEYS:
        if isinstance(expected[key], str):
            assert summary[key] == in_sr[key] == expected[key], key
        else:
            assert summary[key] == pytest.approx(expected[key], abs=1e-4), key
            assert in_sr[key] == pytest.approx(expected[key], abs=1e-4), key


def test_app_selects_the_frontal_series_and_matches_bundle_inference(
    model: tuple[Path, Path], synthetic_study: Path, bundle_rows: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    summary, sr = run_app(synthetic_study, model[1], tmp_path)
    frontal = pydicom.dcmread(synthetic_study / "b_frontal.dcm", stop_before_pixels=True)
    assert summary["ViewPosition"] == "PA" and summary["selection"] == "frontal chest radiograph"
    assert_report_matches(summary, sr, bundle_rows[frontal.SOPInstanceUID])


def test_app_on_the_rg1_radiograph_matches_bundle_inference(
    model: tuple[Path, Path], rg1_study: Path, bundle_rows: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    summary, sr = run_app(rg1_study, model[1], tmp_path)
    source = pydicom.dcmread(rg1_study / "RG1_UNCR.dcm", stop_before_pixels=True)
    assert_report_matches(summary, sr, bundle_rows[source.SOPInstanceUID])
    assert summary["StudyInstanceUID"] == source.StudyInstanceUID


def test_exported_config_parses_from_any_directory_with_the_export_overrides(
    model: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no configs/common.yaml here: an unresolved macro would fail to load
    config = get_bundle_config(str(model[1]), [CONFIG_NAME])
    assert config["backbone"] == BACKBONE
    assert config["_meta_"]["network_data_format"]["outputs"]["pred"]["num_channels"] == 6
    assert "%" not in json.dumps(config.get())
    loader = embedded_loader(config)
    assert [type(t).__name__ for t in loader.transforms] == ["LoadImaged"]


def test_app_refuses_a_study_without_a_chest_radiograph(model: tuple[Path, Path], tmp_path: Path) -> None:
    study = tmp_path / "ct_study"
    study.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), study / "CT_small.dcm")
    completed = subprocess.run(
        [sys.executable, "-m", "deploy.app", "-i", str(study), "-o", str(tmp_path / "out"), "-m", str(model[1])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode != 0
    assert "no series matched the selection rules" in completed.stdout + completed.stderr
    assert not (tmp_path / "out" / SR_FILE).exists()
