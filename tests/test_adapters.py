"""Dataset adapters on tiny fake datasets in the published layouts: each malformed row is reported, never fatal."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from bundle.data.aiforcovid import read_aiforcovid
from bundle.data.brixia import parse_brixia_score, read_brixia, severity_class
from bundle.data.datalist import (
    DatasetLayoutError,
    Rejection,
    load_datalist,
    read_rejected,
    rejected_report_path,
    write_datalist,
    write_rejected,
)

REPO = Path(__file__).resolve().parents[1]
AIFORCOVID_KEYS = {"image", "dataset", "centre", "patient", "prognosis", "brixia_zones", "fold", "age", "sex"}
BRIXIA_KEYS = {"image", "dataset", "centre", "patient", "prognosis", "brixia_zones", "fold"} | {
    "brixia_global",
    "manufacturer",
    "consensus_test",
}


def write_dicom(path: Path, pixels: bool = True) -> Path:
    """Write a tiny valid 8x8 DICOM (or, with ``pixels=False``, a DICOM header without an image)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    if pixels:
        ds.Rows = ds.Columns = 8
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = np.arange(64, dtype=np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def rejections_by_row(rejected: list[Rejection]) -> dict[int, str]:
    """Row number -> reason kind."""
    return {rejection.row: rejection.kind for rejection in rejected}


@pytest.fixture
def aiforcovid_root(tmp_path: Path) -> Path:
    """Release 1 with good rows and one bad row of every kind (sheet rows noted in the comments)."""
    root = tmp_path / "AIforCOVID"
    for name in ["P_A_1", "P_A_2", "P_B_1", "P_B_2", "P_C_1"]:
        write_dicom(root / "imgs" / f"{name}.dcm")
    write_dicom(root / "imgs" / "P_X_nopixels.dcm", pixels=False)
    (root / "imgs" / "P_X_text.dcm").write_text("not a dicom file")
    rows = [
        ("P_A_1.dcm", "A", "MILD", 61, "M"),  # 2 good, with suffix
        ("P_A_2", "A", " severe ", 70, "F"),  # 3 good, no suffix, case and whitespace
        ("P_B_1", "B", "Mild", None, None),  # 4 good, age and sex missing
        ("P_B_2", "B", "MODERATE", 50, "M"),  # 5 unknown prognosis
        ("P_B_9", "B", "SEVERE", 50, "M"),  # 6 missing file
        ("P_X_text", "C", "MILD", 50, "M"),  # 7 not DICOM
        ("P_X_nopixels", "C", "MILD", 50, "M"),  # 8 DICOM without image
        ("P_A_1", "A", "SEVERE", 61, "M"),  # 9 duplicate of row 2
        ("P_C_1", "C", "", 40, "F"),  # 10 missing prognosis
    ]
    table = pd.DataFrame(rows, columns=["ImageFile", "Hospital", "Prognosis", "Age", "Sex"])
    table["WBC"] = 7.5  # a clinical variable that must not reach the records
    table.to_excel(root / "AIforCOVID.xlsx", index=False)
    return root


def brixia_sheet(root: Path, rows: list[dict[str, Any]], name: str = "metadata_global_v2.csv") -> None:
    """Write the ';' metadata with the v2 columns (BrixiaScore as text) and a DICOM for every listed file."""
    columns = "Filename;StudyDate;Modality;StudyId;BrixiaScore;BrixiaScoreGlobal;ConsensusTestset;Subject;Sex;"
    columns += "AgeAtStudyDateFiveYear;Manufacturer;PhotometricInterpretation"
    table = pd.DataFrame(rows).reindex(columns=columns.split(";"), fill_value="")
    if name.endswith("v1.csv"):
        table = table.drop(columns=["Manufacturer", "PhotometricInterpretation"])
    table.to_csv(root / name, sep=";", index=False)


def brixia_row(filename: str, score: str, global_score: str, subject: str, **extra: str) -> dict[str, str]:
    return {
        "Filename": filename,
        "BrixiaScore": score,
        "BrixiaScoreGlobal": global_score,
        "Subject": subject,
        "ConsensusTestset": "0",
        "Manufacturer": "Carestream",
        **extra,
    }


@pytest.fixture
def brixia_root(tmp_path: Path) -> Path:
    """BRIXIA with good rows (two studies of one subject, lost leading zeros) and one bad row of every kind."""
    root = tmp_path / "BRIXIA"
    for index in range(1, 6):
        write_dicom(root / "dicom_clean" / f"{index}.dcm")
    (root / "dicom_clean" / "text.dcm").write_text("not a dicom file")
    rows = [
        brixia_row("1.dcm", "001000", "1", "S1", ConsensusTestset="1"),  # 2 good, leading zeros kept
        brixia_row("2.dcm", "1000", "1", "S1"),  # 3 good, Excel-mangled '001000'
        brixia_row("3.dcm", "123321", "12", "S2", Manufacturer=""),  # 4 good, no manufacturer
        brixia_row("4.dcm", "1234567", "28", "S3"),  # 5 seven digits
        brixia_row("4.dcm", "12a321", "9", "S3"),  # 6 duplicate of row 5 (first listing wins)
        brixia_row("5.dcm", "12a321", "9", "S4"),  # 7 non-digit
        brixia_row("5.dcm", "000000", "0", "S4"),  # 8 duplicate of row 7
        brixia_row("6.dcm", "100040", "5", "S5"),  # 9 zone E = 4
        brixia_row("7.dcm", "111111", "7", "S6"),  # 10 global != zone sum
        brixia_row("9.dcm", "000000", "0", "S7"),  # 11 missing file
        brixia_row("text.dcm", "000000", "0", "S8"),  # 12 not DICOM
        brixia_row("10.dcm", "", "0", "S9"),  # 13 missing BrixiaScore
        brixia_row("11.dcm", "000000", "0", "S10", ConsensusTestset="maybe"),  # 14 bad ConsensusTestset
        brixia_row("12.dcm", "000100", "1.0", "S11"),  # 15 global not an integer
    ]
    brixia_sheet(root, rows)
    return root


def test_aiforcovid_keeps_good_rows_and_reports_each_bad_row(aiforcovid_root: Path) -> None:
    result = read_aiforcovid(aiforcovid_root)
    assert result.rows_read == 9
    assert [record["patient"] for record in result.records] == ["P_A_1", "P_A_2", "P_B_1"]
    assert [record["prognosis"] for record in result.records] == [0, 1, 0]
    assert rejections_by_row(result.rejected) == {
        5: "unknown_prognosis",
        6: "missing_file",
        7: "unreadable_file",
        8: "unreadable_file",
        9: "duplicate_image",
        10: "missing_value",
    }
    by_row = {rejection.row: rejection for rejection in result.rejected}
    assert "'MODERATE'" in by_row[5].reason
    assert "AIforCOVID.xlsx row 2" in by_row[9].reason
    assert "PixelData" in by_row[8].reason
    assert by_row[6].image == "P_B_9" and by_row[6].source == str(aiforcovid_root / "AIforCOVID.xlsx")


def test_aiforcovid_row_numbers_skip_blank_rows(tmp_path: Path) -> None:
    write_dicom(tmp_path / "imgs" / "P_A_1.dcm")
    rows = [("P_A_1", "A", "MILD"), (None, None, None), ("P_A_2", "A", "??")]
    pd.DataFrame(rows, columns=["ImageFile", "Hospital", "Prognosis"]).to_excel(
        tmp_path / "AIforCOVID.xlsx", index=False
    )
    result = read_aiforcovid(tmp_path)
    assert (result.rows_read, len(result.records)) == (2, 1)
    assert rejections_by_row(result.rejected) == {4: "unknown_prognosis"}


def test_aiforcovid_record_format(aiforcovid_root: Path) -> None:
    first, _, third = read_aiforcovid(aiforcovid_root).records
    assert set(first) == AIFORCOVID_KEYS
    assert first["image"] == str((aiforcovid_root / "imgs" / "P_A_1.dcm").resolve())
    assert (first["dataset"], first["centre"], first["brixia_zones"], first["fold"]) == ("aiforcovid", "A", None, None)
    assert (first["age"], first["sex"]) == (61.0, "M")
    assert (third["age"], third["sex"]) == (None, None)


def test_aiforcovid_reads_every_release_found(aiforcovid_root: Path) -> None:
    write_dicom(aiforcovid_root / "imgs_r3" / "P_F_1.dcm")
    r3 = pd.DataFrame({"ImageFile": ["P_F_1", "P_F_2"], "Hospital": ["F", "F"], "Prognosis": ["SEVERE", "MILD"]})
    r3.to_excel(aiforcovid_root / "AIforCOVID_r3.xlsx", index=False)
    result = read_aiforcovid(aiforcovid_root)
    assert result.rows_read == 11
    assert result.records[-1]["image"] == str((aiforcovid_root / "imgs_r3" / "P_F_1.dcm").resolve())
    assert (result.rejected[-1].source, result.rejected[-1].row) == (str(aiforcovid_root / "AIforCOVID_r3.xlsx"), 3)


def test_aiforcovid_missing_column_is_fatal(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    pd.DataFrame({"ImageFile": ["P_A_1"], "Hospital": ["A"]}).to_excel(tmp_path / "AIforCOVID.xlsx", index=False)
    with pytest.raises(DatasetLayoutError, match=r"AIforCOVID\.xlsx.*'Prognosis'"):
        read_aiforcovid(tmp_path)


def test_aiforcovid_without_sheet_is_fatal(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="AIforCOVID.xlsx"):
        read_aiforcovid(tmp_path)


def test_brixia_keeps_good_rows_and_reports_each_bad_row(brixia_root: Path) -> None:
    result = read_brixia(brixia_root)
    assert result.rows_read == 14
    assert [record["image"] for record in result.records] == [
        str((brixia_root / "dicom_clean" / name).resolve()) for name in ["1.dcm", "2.dcm", "3.dcm"]
    ]
    assert rejections_by_row(result.rejected) == {
        5: "bad_brixia_score",
        6: "duplicate_image",
        7: "bad_brixia_score",
        8: "duplicate_image",
        9: "bad_brixia_score",
        10: "global_mismatch",
        11: "missing_file",
        12: "unreadable_file",
        13: "missing_value",
        14: "bad_value",
        15: "bad_global_score",
    }
    by_row = {rejection.row: rejection.reason for rejection in result.rejected}
    assert "7 digits" in by_row[5]
    assert "not a string of digits" in by_row[7]
    assert "zone E = 4" in by_row[9]
    assert "metadata_global_v2.csv row 5" in by_row[6]
    assert "7 != 6" in by_row[10]


def test_brixia_row_numbers_follow_the_file_lines(tmp_path: Path) -> None:
    write_dicom(tmp_path / "dicom_clean" / "1.dcm")
    header = "Filename;BrixiaScore;BrixiaScoreGlobal;ConsensusTestset;Subject"
    lines = [header, "1.dcm;001000;1;0;S1", "", ";;;;", "2.dcm;001000;1;0;S2"]
    (tmp_path / "metadata_global_v2.csv").write_text("\n".join(lines) + "\n")
    result = read_brixia(tmp_path)
    assert (result.rows_read, len(result.records)) == (2, 1)
    assert rejections_by_row(result.rejected) == {5: "missing_file"}


def test_brixia_score_keeps_leading_zeros(brixia_root: Path) -> None:
    first, second, third = read_brixia(brixia_root).records
    assert first["brixia_zones"] == [0, 0, 1, 0, 0, 0]
    assert second["brixia_zones"] == [0, 0, 1, 0, 0, 0]
    assert third["brixia_zones"] == [1, 2, 3, 3, 2, 1] and third["brixia_global"] == 12
    assert set(first) == BRIXIA_KEYS
    assert (first["patient"], second["patient"], first["centre"]) == ("S1", "S1", "Brescia")
    assert (first["prognosis"], first["manufacturer"], third["manufacturer"]) == (None, "Carestream", None)
    assert (first["consensus_test"], second["consensus_test"]) == (True, False)


@pytest.mark.parametrize(
    ("text", "message"),
    [("0010000", "7 digits"), ("00 100", "not a string of digits"), ("-1", "not a string of digits"), ("", "digits")],
)
def test_parse_brixia_score_refuses_what_it_cannot_read(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_brixia_score(text)


def test_severity_class_bins() -> None:
    assert [severity_class(score) for score in [0, 4, 5, 9, 10, 14, 15, 18]] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_brixia_v1_metadata_without_manufacturer(tmp_path: Path) -> None:
    write_dicom(tmp_path / "dicom_clean" / "1.dcm")
    brixia_sheet(tmp_path, [brixia_row("1.dcm", "000300", "3", "S1")], name="metadata_global_v1.csv")
    (record,) = read_brixia(tmp_path).records
    assert (record["brixia_zones"], record["manufacturer"]) == ([0, 0, 0, 3, 0, 0], None)


def test_brixia_missing_column_is_fatal(tmp_path: Path) -> None:
    (tmp_path / "dicom_clean").mkdir()
    pd.DataFrame({"Filename": ["1.dcm"], "BrixiaScore": ["000000"]}).to_csv(
        tmp_path / "metadata_global_v2.csv", sep=";", index=False
    )
    with pytest.raises(DatasetLayoutError, match=r"metadata_global_v2\.csv.*'Subject'"):
        read_brixia(tmp_path)


def test_datalist_and_report_round_trip(tmp_path: Path, brixia_root: Path) -> None:
    result = read_brixia(brixia_root)
    for record in result.records:
        record["fold"] = 0
    path = write_datalist(tmp_path / "lists" / "brixia.json", "brixia", result.records, num_folds=5)
    content = json.loads(path.read_text())
    assert (content["dataset"], content["num_folds"], content["centres"]) == ("brixia", 5, ["Brescia"])
    assert content["data"][0]["image"] == "../BRIXIA/dicom_clean/1.dcm"
    header, records = load_datalist(path)
    assert header == {"dataset": "brixia", "num_folds": 5, "centres": ["Brescia"]}
    assert records == result.records
    report = write_rejected(rejected_report_path(path), result.rejected)
    assert report == tmp_path / "lists" / "brixia.rejected.csv"
    assert pd.read_csv(report).columns.tolist() == ["source", "row", "image", "reason"]
    assert read_rejected(report) == result.rejected
    assert set((tmp_path / "lists").iterdir()) == {path, report}  # no temporary file left behind


def test_write_datalist_refuses_records_without_fold(tmp_path: Path) -> None:
    record = {"image": str(tmp_path / "a.dcm"), "centre": "A", "fold": None}
    with pytest.raises(ValueError, match="fold None"):
        write_datalist(tmp_path / "x.json", "aiforcovid", [record], num_folds=5)
    assert not list(tmp_path.iterdir())


@pytest.fixture
def prepare_data(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """scripts/prepare_data.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("prepare_data", REPO / "scripts" / "prepare_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_prepare_data_writes_datalist_and_report(
    tmp_path: Path, prepare_data: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "AIforCOVID"
    rows = [(f"P_{centre}_{i}", centre, "SEVERE" if i % 2 else "MILD") for centre in "AB" for i in range(6)]
    for name, _, _ in rows:
        write_dicom(root / "imgs" / f"{name}.dcm")
    rows.append(("P_Z_missing", "B", "MILD"))
    pd.DataFrame(rows, columns=["ImageFile", "Hospital", "Prognosis"]).to_excel(root / "AIforCOVID.xlsx", index=False)
    out = tmp_path / "aiforcovid.json"
    status = prepare_data.main(["aiforcovid", "--root", str(root), "--out", str(out), "--folds", "3"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "rows read: 13, accepted: 12, rejected: 1" in printed and "rejected missing_file: 1" in printed
    header, records = load_datalist(out)
    assert (header["num_folds"], header["centres"], len(records)) == (3, ["A", "B"], 12)
    assert sorted({record["fold"] for record in records}) == [0, 1, 2]
    assert [rejection.row for rejection in read_rejected(tmp_path / "aiforcovid.rejected.csv")] == [14]


def test_prepare_data_exit_status_without_usable_rows(
    tmp_path: Path, prepare_data: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "BRIXIA"
    (root / "dicom_clean").mkdir(parents=True)
    brixia_sheet(root, [brixia_row("1.dcm", "000000", "0", "S1")])
    out = tmp_path / "brixia.json"
    assert prepare_data.main(["brixia", "--root", str(root), "--out", str(out)]) == 1
    assert not out.exists() and rejected_report_path(out).exists()
    assert "rejected missing_file: 1" in capsys.readouterr().out
    assert prepare_data.main(["brixia", "--root", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "no BRIXIA metadata" in capsys.readouterr().err
