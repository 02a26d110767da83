"""Preflight validation: every kind of bad record or file is reported; training refuses to start or skips the rows."""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import pytest
from monai.bundle import ConfigParser
from pydicom.data import get_testdata_file

from bundle.data.datalist import load_datalist
from bundle.data.validation import CHECKS, Finding, PreflightError, TrainingPreflight, validate_datalists
from conftest import ROOT


def write_datalist(path: Path, records: list[Any], num_folds: int = 5, dataset: str = "aiforcovid") -> Path:
    """A datalist JSON written as is (no validation), images kept as given (absolute paths resolve to themselves)."""
    path.write_text(json.dumps({"dataset": dataset, "num_folds": num_folds, "centres": ["A"], "data": records}))
    return path


@pytest.fixture
def bad_data(tiny_demo: Path, tmp_path: Path) -> tuple[Path, dict[str, tuple[str, str]]]:
    """A datalist of good AIforCOVID records plus one of every problem; image name -> (check, part of the reason)."""
    _, records = load_datalist(tiny_demo / "aiforcovid.json")
    good = records[:6]
    files = tmp_path / "files"
    files.mkdir()
    source = Path(good[0]["image"])
    (files / "empty.dcm").touch()
    shutil.copy(get_testdata_file("CT_small.dcm"), files / "ct.dcm")
    (files / "truncated.dcm").write_bytes(Path(records[20]["image"]).read_bytes()[:-2000])  # an unlisted instance
    shutil.copy(source, files / "same_instance.dcm")
    extra = [
        {"image": str(files / "absent.dcm")},
        {"image": str(files / "empty.dcm")},
        {"image": str(files / "ct.dcm")},
        {"image": str(files / "truncated.dcm")},
        {"image": str(files / "same_instance.dcm")},
    ]
    bad_labels = [
        {"prognosis": 2},
        {"prognosis": None},  # and brixia_zones null: no label at all
        {"prognosis": None, "brixia_zones": [0, 1, 4, 0, 0, 0]},
        {"fold": 7},
        {"patient": ""},
    ]
    labelled = [{**records[6 + i], **change} for i, change in enumerate(bad_labels)]
    split_patient = {**records[12], "fold": (records[12]["fold"] + 1) % 5, "image": str(files / "second_view.dcm")}
    shutil.copy(records[12]["image"], files / "second_view.dcm")
    # second_view.dcm is a copy, so it is also the same SOP instance as records[12]: both problems are reported.
    template = {key: value for key, value in good[1].items() if key != "image"}
    data = good + [{**template, **item} for item in extra] + labelled + [records[12], split_patient, good[2]]
    data.append({"dataset": "aiforcovid", "fold": 0})  # no image at all
    expected = {
        "absent.dcm": ("exists", "file not found"),
        "empty.dcm": ("exists", "empty file"),
        "ct.dcm": ("header", "Modality 'CT'"),
        "truncated.dcm": ("decode", "cannot decode the pixel data"),
        "same_instance.dcm": ("duplicate", f"as {source}"),
        Path(labelled[0]["image"]).name: ("record", "prognosis 2 is not 0"),
        Path(labelled[1]["image"]).name: ("record", "no label"),
        Path(labelled[2]["image"]).name: ("record", "brixia_zones [0, 1, 4, 0, 0, 0] is not six integers"),
        Path(labelled[3]["image"]).name: ("record", "fold 7 is not an integer in 0..4"),
        Path(labelled[4]["image"]).name: ("record", "no patient"),
        Path(records[12]["image"]).name: ("folds", f"patient {records[12]['patient']!r} of aiforcovid is in folds"),
        "second_view.dcm": ("folds", "is in folds"),
        Path(good[2]["image"]).name: ("duplicate", "already listed at"),
        "": ("record", "no image path"),
    }
    return write_datalist(tmp_path / "bad.json", data), expected


def findings_by_image(findings: list[Finding]) -> dict[str, list[tuple[str, str]]]:
    """Image file name -> its (check, reason) findings."""
    by_image: dict[str, list[tuple[str, str]]] = {}
    for finding in findings:
        by_image.setdefault(Path(finding.image).name, []).append((finding.check, finding.reason))
    return by_image


def test_clean_datalists_pass_and_the_report_is_written(tiny_demo: Path, tmp_path: Path) -> None:
    datalists = [tiny_demo / "aiforcovid.json", tiny_demo / "brixia.json"]
    report = validate_datalists(datalists, sample=4)
    assert report.ok, report.findings
    assert (report.records, report.images, report.decoded) == (72, 72, 4)
    assert "no problems" in report.summary()
    assert pd.read_csv(report.write(tmp_path / "r.csv")).columns.tolist() == ["image", "check", "reason"]


def test_every_kind_of_problem_is_reported_once_with_its_reason(
    bad_data: tuple[Path, dict[str, tuple[str, str]]],
) -> None:
    datalist, expected = bad_data
    report = validate_datalists([datalist])
    found = findings_by_image(report.findings)
    for name, (check, reason) in expected.items():
        assert any(c == check and reason in r for c, r in found.get(name, [])), (name, found.get(name))
    assert set(found) == set(expected)
    assert {check for check, _ in found["second_view.dcm"]} == {"folds", "duplicate"}
    assert [f.check for f in report.findings] == sorted((f.check for f in report.findings), key=CHECKS.index)
    last = len(json.loads(datalist.read_text())["data"]) - 1
    assert {(f.image, f.reason.split(": ")[0]) for f in report.unskippable} == {("", f"{datalist}#{last}")}
    assert f"{datalist}#{last}: no image path (image = None)" in [f.reason for f in report.unskippable]


def test_header_only_mode_does_not_decode(bad_data: tuple[Path, dict[str, tuple[str, str]]]) -> None:
    datalist, _ = bad_data
    report = validate_datalists([datalist], sample=0)
    assert report.decoded == 0
    assert "truncated.dcm" not in findings_by_image(report.findings)
    assert "ct.dcm" in findings_by_image(report.findings)  # the header check still runs for every image


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "cannot read the datalist"),
        ('{"data": {}}', "no 'data' list"),
        ('{"data": [], "num_folds": 0}', "num_folds 0"),
    ],
)
def test_unreadable_datalist_cannot_be_skipped(tmp_path: Path, content: str, reason: str) -> None:
    path = tmp_path / "broken.json"
    path.write_text(content)
    report = validate_datalists([path, tmp_path / "absent.json"])
    absent = tmp_path / "absent.json"
    assert [(f.image, f.check) for f in report.unskippable] == [(str(path), "datalist"), (str(absent), "datalist")]
    assert reason in report.findings[0].reason
    assert not report.bad_images


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("validate_data", ROOT / "scripts" / "validate_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_exit_status_summary_and_report(
    bad_data: tuple[Path, dict[str, tuple[str, str]]], tiny_demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    datalist, expected = bad_data
    script = load_script()
    assert script.main([str(datalist), "--out", str(tmp_path / "report.csv")]) == 1
    printed = capsys.readouterr().out
    assert "problem(s) in" in printed and "header: 1" in printed and "ct.dcm: header: Modality 'CT'" in printed
    report = pd.read_csv(tmp_path / "report.csv", keep_default_na=False)
    assert sorted({Path(image).name for image in report["image"]}) == sorted(expected)
    clean = write_datalist(tmp_path / "clean.json", load_datalist(tiny_demo / "aiforcovid.json")[1])
    assert script.main([str(clean), "--sample", "2"]) == 0
    assert "no problems" in capsys.readouterr().out
    assert (tmp_path / "clean.validation.csv").is_file()  # the default report goes beside the datalist


def split_with(datalist: Path) -> dict[str, list[dict[str, Any]]]:
    _, records = load_datalist(datalist)
    return {"train": records[:-3], "val": records[-3:], "test": []}


def test_training_preflight_refuses_then_skips_bad_rows(
    bad_data: tuple[Path, dict[str, tuple[str, str]]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    datalist, expected = bad_data
    records = json.loads(datalist.read_text())["data"][:-1]  # the record without an image cannot be skipped
    datalist = write_datalist(tmp_path / "skippable.json", records)
    report_path = tmp_path / "run" / "preflight.csv"
    with pytest.raises(PreflightError, match="--skip_bad_rows True") as excinfo:
        TrainingPreflight({"aiforcovid": datalist}, report_path, sample=None).run()
    assert "ct.dcm: header: Modality 'CT'" in str(excinfo.value)
    assert report_path.is_file()

    preflight = TrainingPreflight({"aiforcovid": datalist}, report_path, sample=None, skip_bad_rows=True)
    with caplog.at_level(logging.WARNING):
        kept = preflight.filter(split_with(datalist))
    assert "leaving out the records of" in caplog.text and "ct.dcm" in caplog.text
    kept_names = {Path(record["image"]).name for part in kept.values() for record in part}
    assert kept_names.isdisjoint(name for name in expected if name)
    assert len(kept["train"]) + len(kept["val"]) == 5  # the six good records less the one listed twice
    assert len(pd.read_csv(report_path)) == len(preflight.report.findings)


def test_training_preflight_cannot_skip_a_record_without_image(
    bad_data: tuple[Path, dict[str, tuple[str, str]]], tmp_path: Path
) -> None:
    datalist, _ = bad_data
    with pytest.raises(PreflightError, match="cannot be skipped"):
        TrainingPreflight({"aiforcovid": datalist}, tmp_path / "p.csv", sample=0, skip_bad_rows=True).run()


@pytest.fixture
def datalists_with_a_ct_slice(tiny_demo: Path, tmp_path: Path) -> dict[str, Path]:
    """The tiny demo datalists, one AIforCOVID training image swapped for a CT slice."""
    _, records = load_datalist(tiny_demo / "aiforcovid.json")
    ct = tmp_path / "ct.dcm"
    shutil.copy(get_testdata_file("CT_small.dcm"), ct)
    victim = next(record for record in records if record["fold"] not in (0, 1))  # in training under CV fold 0
    victim["image"] = str(ct)
    _, brixia = load_datalist(tiny_demo / "brixia.json")
    return {
        "aiforcovid": write_datalist(tmp_path / "aiforcovid.json", records),
        "brixia": write_datalist(tmp_path / "brixia.json", brixia, dataset="brixia"),
    }


def test_train_config_filters_splits_with_skip_bad_rows(
    datalists_with_a_ct_slice: dict[str, Path], tmp_path: Path
) -> None:
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "train.yaml"))
    parser.update({"datalists": {k: str(v) for k, v in datalists_with_a_ct_slice.items()}, "demo_data": False})
    parser.update({"output_dir": str(tmp_path / "runs"), "skip_bad_rows": True, "preflight_sample": 0})
    parser.get_parsed_content("initialize")
    train, val = parser.get_parsed_content("train#data"), parser.get_parsed_content("validate#data")
    protocol = parser.get_parsed_content("protocol_splits")
    assert len(train) == len(protocol["train"]) - 1 and len(val) == len(protocol["val"])
    assert all(Path(record["image"]).name != "ct.dcm" for record in train)
    assert "ct.dcm" in (tmp_path / "runs" / "preflight.csv").read_text()


def test_training_refuses_to_start_on_bad_rows(datalists_with_a_ct_slice: dict[str, Path], tmp_path: Path) -> None:
    datalists = "{" + ", ".join(f"'{k}': '{v}'" for k, v in datalists_with_a_ct_slice.items()) + "}"
    completed = subprocess.run(
        [
            sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "configs/train.yaml",
            "--datalists", datalists, "--demo_data", "False", "--output_dir", str(tmp_path / "runs"),
            "--ckpt_dir", str(tmp_path / "models"), "--backbone", "resnet10", "--image_size", "64",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode != 0
    assert "PreflightError" in completed.stderr and "ct.dcm: header: Modality 'CT'" in completed.stderr
    assert "--skip_bad_rows True" in completed.stderr
    assert not (tmp_path / "models").exists()  # refused before anything was trained
