"""Inference on a messy folder: a result for every good radiograph, an error row with the reason for everything else.

The folder holds what turns up in real exports: broken files, files that are not DICOM, DICOM objects that are not
images (SR, RT, DICOMDIR), images that are not chest radiographs (CT, MR, segmentation, ultrasound palette,
secondary-capture colour), radiographs the model cannot take (colour, multi-frame, absurd size, constant, values
that overflow to inf), the same SOP instance twice, and good radiographs.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import multiprocessing
import multiprocessing.synchronize
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from monai.bundle import ConfigParser
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from bundle import atomic
from bundle.engine import inference
from bundle.engine.inference import DicomInference
from conftest import ROOT

DICOMDIR = Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests" / "DICOMDIR"


def _modified(source: Path, path: Path, change: Callable[[Dataset], None]) -> Path:
    """A copy of a good radiograph with ``change`` applied to its dataset (a new SOP instance, so no duplicate)."""
    ds = pydicom.dcmread(source)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    change(ds)
    ds.save_as(path, enforce_file_format=True)
    return path


def _resaved(name: str, path: Path) -> Path:
    """A pydicom test file saved with a proper file meta header (some ship without one)."""
    ds = pydicom.dcmread(get_testdata_file(name), force=True)
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


def _multi_frame(ds: Dataset) -> None:
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2


def _colour(ds: Dataset) -> None:
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0


def _constant(ds: Dataset) -> None:
    ds.PixelData = np.full((ds.Rows, ds.Columns), 1000, dtype=np.uint16).tobytes()


def _overflowing(ds: Dataset) -> None:
    ds.RescaleSlope, ds.RescaleIntercept = "1e308", "1e308"


def _huge(ds: Dataset) -> None:
    ds.Rows = ds.Columns = 60000  # 3.6e9 pixels declared; the header check refuses before decoding


def _corrupt(source: Path, path: Path) -> Path:
    data = bytearray(source.read_bytes())
    data[132:900] = np.random.default_rng(0).integers(0, 256, 768, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def _png(path: Path) -> Path:
    Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64).astype(np.uint8)).save(path)
    return path


# file name -> (how to make it from the good CR and DX radiographs, the status, a part of the reason)
MESSY_FOLDER: dict[str, tuple[Callable[[Path, Path, Path], Path], str, str]] = {
    "good_cr.dcm": (lambda cr, dx, p: Path(shutil.copy(cr, p)), "ok", ""),
    "nested/good_dx.dcm": (lambda cr, dx, p: Path(shutil.copy(dx, p)), "ok", ""),
    "nested/copy_of_good_cr": (lambda cr, dx, p: Path(shutil.copy(cr, p)), "ok", ""),
    "zero_bytes.dcm": (lambda cr, dx, p: (p.touch(), p)[1], "error", "empty file (0 bytes)"),
    "truncated.dcm": (lambda cr, dx, p: (p.write_bytes(dx.read_bytes()[:-3000]), p)[1], "error", "cannot decode"),
    "corrupt.dcm": (lambda cr, dx, p: _corrupt(dx, p), "error", "not an image (unknown SOP class)"),
    "notes.txt": (lambda cr, dx, p: (p.write_text("patient notes\n" * 50), p)[1], "error", "not a readable DICOM"),
    "picture.png": (lambda cr, dx, p: _png(p), "error", "not a readable DICOM file"),
    "structured_report.dcm": (
        lambda cr, dx, p: Path(shutil.copy(get_testdata_file("test-SR.dcm"), p)),
        "error",
        "not an image (Comprehensive SR Storage)",
    ),
    "rt_structure_set.dcm": (
        lambda cr, dx, p: _resaved("rtstruct.dcm", p),
        "error",
        "not an image (RT Structure Set Storage)",
    ),
    "rt_structure_set_without_meta.dcm": (
        lambda cr, dx, p: Path(shutil.copy(get_testdata_file("rtstruct.dcm"), p)),
        "error",
        "File is missing DICOM File Meta Information header",
    ),
    "DICOMDIR": (
        lambda cr, dx, p: Path(shutil.copy(DICOMDIR, p)),
        "error",
        "not an image (Media Storage Directory Storage)",
    ),
    "ct_slice.dcm": (
        lambda cr, dx, p: Path(shutil.copy(get_testdata_file("CT_small.dcm"), p)),
        "error",
        "Modality 'CT' (CT Image Storage): not a radiograph",
    ),
    "mr_slice.dcm": (
        lambda cr, dx, p: Path(shutil.copy(get_testdata_file("MR_small.dcm"), p)),
        "error",
        "Modality 'MR'",
    ),
    "mr_multi_frame.dcm": (
        lambda cr, dx, p: Path(shutil.copy(get_testdata_file("emri_small.dcm"), p)),
        "error",
        "Modality 'MR' (Enhanced MR Image Storage)",
    ),
    "segmentation.dcm": (
        lambda cr, dx, p: Path(shutil.copy(get_testdata_file("liver_1frame.dcm"), p)),
        "error",
        "Modality 'SEG'",
    ),
    "secondary_capture_rgb.dcm": (
        lambda cr, dx, p: Path(shutil.copy(get_testdata_file("SC_rgb.dcm"), p)),
        "error",
        "Modality 'OT' (Secondary Capture Image Storage)",
    ),
    "cr_rgb.dcm": (lambda cr, dx, p: _modified(cr, p, _colour), "error", "not a greyscale image"),
    "cr_multi_frame.dcm": (lambda cr, dx, p: _modified(cr, p, _multi_frame), "error", "multi-frame image (2 frames)"),
    "cr_huge.dcm": (lambda cr, dx, p: _modified(cr, p, _huge), "error", "declared size 60000 x 60000 exceeds"),
    "cr_constant.dcm": (lambda cr, dx, p: _modified(cr, p, _constant), "error", "constant image"),
    "cr_overflow.dcm": (lambda cr, dx, p: _modified(cr, p, _overflowing), "error", "non-finite pixel values"),
}


@pytest.fixture(scope="module")
def messy_folder(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    images = sorted((tiny_demo / "AIforCOVID" / "imgs").glob("*.dcm"))
    modality = {path: pydicom.dcmread(path, stop_before_pixels=True).Modality for path in images}
    cr = next(path for path in images if modality[path] == "CR")
    dx = next(path for path in images if modality[path] == "DX")
    folder = tmp_path_factory.mktemp("messy")
    (folder / "nested").mkdir()
    for name, (make, _, _) in MESSY_FOLDER.items():
        make(cr, dx, folder / name)
    return folder


def inference_runner(input_path: Path, out: Path, **overrides: object) -> DicomInference:
    """The ``runner`` of configs/inference.yaml (what ``monai.bundle run inference`` runs), tiny untrained network.

    Built in-process to spare a process start-up; ``tests/test_workflows.py`` runs the real command on a folder with
    bad files. A run that returns is a run that exits 0.
    """
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "inference.yaml"))
    parser.update({"backbone": "resnet10", "image_size": 64, "checkpoint": "", "device": "cpu"})
    parser.update({"input": str(input_path), "output_dir": str(out), **overrides})
    return parser.get_parsed_content("runner")


@pytest.fixture(scope="module")
def messy_run(messy_folder: Path) -> tuple[dict[str, dict[str, str]], str]:
    """Inference on the messy folder (the rows, not the scores, are tested); the rows by file and the log."""
    out = messy_folder.parent / "out"
    log, logger = io.StringIO(), logging.getLogger(inference.__name__)
    handler, level = logging.StreamHandler(log), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        inference_runner(messy_folder, out).run()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    with open(out / "predictions.csv", newline="") as f:
        rows = {Path(row["file"]).relative_to(messy_folder).as_posix(): row for row in csv.DictReader(f)}
    return rows, log.getvalue()


def test_every_file_gets_a_row_and_the_run_ends_normally_with_a_summary(
    messy_run: tuple[dict[str, dict[str, str]], str],
) -> None:
    rows, log = messy_run
    assert sorted(rows) == sorted(MESSY_FOLDER)
    errors = sum(status == "error" for _, status, _ in MESSY_FOLDER.values())
    assert f"inference: 3 ok (1 duplicate SOP instances), {errors} errors" in log


@pytest.mark.parametrize("name", sorted(MESSY_FOLDER))
def test_each_kind_gets_its_status_and_reason(messy_run: tuple[dict[str, dict[str, str]], str], name: str) -> None:
    rows, _ = messy_run
    _, status, reason = MESSY_FOLDER[name]
    row = rows[name]
    assert row["status"] == status, row["error"]
    assert reason in row["error"]
    if status == "ok":
        assert row["SOPInstanceUID"] and row["prognosis_class"] in {"MILD", "SEVERE"}
        assert math.isfinite(float(row["prognosis_prob_SEVERE"])) and math.isfinite(float(row["severity_expected"]))
    else:
        assert row["prognosis_prob_SEVERE"] == ""


def test_a_repeated_sop_instance_keeps_its_result_and_names_the_first_file(
    messy_run: tuple[dict[str, dict[str, str]], str], messy_folder: Path
) -> None:
    rows, _ = messy_run
    first, copy = rows["good_cr.dcm"], rows["nested/copy_of_good_cr"]
    assert first["SOPInstanceUID"] == copy["SOPInstanceUID"]
    assert (first["duplicate_of"], copy["duplicate_of"]) == ("", str(messy_folder / "good_cr.dcm"))
    assert copy["prognosis_prob_SEVERE"] == first["prognosis_prob_SEVERE"]
    assert rows["nested/good_dx.dcm"]["duplicate_of"] == ""


def test_json_matches_csv(messy_run: tuple[dict[str, dict[str, str]], str], messy_folder: Path) -> None:
    rows, _ = messy_run
    records = json.loads((messy_folder.parent / "out" / "predictions.json").read_text())
    assert [Path(r["file"]).relative_to(messy_folder).as_posix() for r in records] == list(rows)
    ok = [r for r in records if r["status"] == "ok"]
    assert len(ok) == 3 and all(set(r) == set(ok[0]) and math.isfinite(r["prognosis_prob_SEVERE"]) for r in ok)
    assert all("prognosis_prob_SEVERE" not in r for r in records if r["status"] == "error")


def test_strict_writes_every_row_then_fails(messy_folder: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(messy_folder / "good_cr.dcm", inputs)
    shutil.copy(messy_folder / "ct_slice.dcm", inputs)
    with pytest.raises(RuntimeError, match="1 of 2 inputs failed"):
        inference_runner(inputs, tmp_path / "out", strict=True).run()
    with open(tmp_path / "out" / "predictions.csv", newline="") as f:
        statuses = {Path(row["file"]).name: row["status"] for row in csv.DictReader(f)}
    assert statuses == {"ct_slice.dcm": "error", "good_cr.dcm": "ok"}


class NotFinite(torch.nn.Module):
    """A network that outputs NaN: its rows must be errors, never NaN probabilities."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.full((image.shape[0], 6), math.nan)


def test_a_non_finite_prediction_is_an_error_row(messy_folder: Path, tmp_path: Path) -> None:
    runner = inference_runner(messy_folder / "good_cr.dcm", tmp_path)
    runner.network = NotFinite()
    summary = runner.run()
    assert (summary["ok"], summary["errors"]) == (0, 1)
    row = json.loads((tmp_path / "predictions.json").read_text())[0]
    assert row["status"] == "error" and "not finite" in row["error"] and row["SOPInstanceUID"]


def _write_then_stall(path: Path, text: str, stalled: multiprocessing.synchronize.Event) -> None:
    """Child process: write ``path`` atomically, but stop for good just before the rename (the kill lands there)."""

    def stall(fd: int) -> None:
        stalled.set()
        signal.pause()

    atomic.os.fsync = stall
    atomic.write_text_atomic(path, text)


def test_a_kill_while_writing_predictions_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "predictions.csv"
    old = "file,status\n" + "old.dcm,ok\n" * 1000
    atomic.write_text_atomic(path, old)
    context = multiprocessing.get_context("fork")
    stalled = context.Event()
    child = context.Process(target=_write_then_stall, args=(path, "file,status\n" + "new.dcm,ok\n" * 100_000, stalled))
    child.start()
    try:
        assert stalled.wait(timeout=120), "the writer never reached the rename"
        temporary = [p for p in tmp_path.iterdir() if p.name.startswith(".predictions.csv.")]
        assert len(temporary) == 1 and temporary[0].stat().st_size > len(old)  # the new text was being written
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join()
    assert child.exitcode == -signal.SIGKILL
    assert path.read_text() == old
    assert inference.find_inputs(tmp_path) == [str(path)]  # the leftover temporary file is hidden from inputs
