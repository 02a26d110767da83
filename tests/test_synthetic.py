"""Tests of the synthetic demo data: DICOM encodings, phantom and the two dataset layouts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.pixels import apply_voi_lut
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from bundle.data.phantom import make_phantom, sample_anatomy
from bundle.data.synthetic import (
    CR_IMAGE_STORAGE,
    DX_IMAGE_STORAGE_FOR_PRESENTATION,
    Acquisition,
    acquisition_variants,
    generate_demo_data,
    write_cxr_dicom,
)

ROOT = Path(__file__).resolve().parents[1]


def _ramp_image(shape: tuple[int, int] = (96, 80)) -> np.ndarray:
    """A smooth air-dark test image with a bright blob, spanning [0, 1]."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    image = 0.6 * rows / (shape[0] - 1) + 0.4 * np.exp(-((rows - 40) ** 2 + (cols - 30) ** 2) / 300.0)
    return (image - image.min()) / (image.max() - image.min())


def _write(path, image: np.ndarray, acquisition: Acquisition, key: str = "k") -> pydicom.Dataset:
    write_cxr_dicom(
        path,
        image,
        acquisition,
        patient_name="SYNTH^T0001",
        patient_id="SYNTH-T0001",
        pixel_spacing_mm=(0.2, 0.2),
        uid_key=key,
        accession_number="SYNTHACC0001",
    )
    return pydicom.dcmread(path)


def _decode_by_hand(ds: pydicom.Dataset) -> np.ndarray:
    """Modality LUT then MONOCHROME1 inversion, written out without the bundle's reader."""
    values = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return -values if ds.PhotometricInterpretation == "MONOCHROME1" else values


def test_variants_cover_every_decode_relevant_case() -> None:
    variants = acquisition_variants()
    assert len({v.decode_key for v in variants}) == len(variants)
    assert {v.photometric for v in variants} == {"MONOCHROME1", "MONOCHROME2"}
    assert {v.modality for v in variants} == {"CR", "DX"}
    assert {v.spacing for v in variants} == {"pixel", "imager", "zero", "missing"}
    assert len({v.bits_stored for v in variants}) >= 4
    assert any(v.rescale_slope != 1 or v.rescale_intercept != 0 for v in variants)
    assert any(v.window is not None for v in variants)
    assert any(v.voi_lut and v.window is None for v in variants)
    assert any(v.voi_lut and v.window is not None for v in variants)


@pytest.mark.parametrize("acquisition", acquisition_variants(), ids=lambda a: "-".join(map(str, a.decode_key)))
def test_variant_round_trips(tmp_path, acquisition: Acquisition) -> None:
    image = _ramp_image()
    ds = _write(tmp_path / "x.dcm", image, acquisition)

    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    expected_class = CR_IMAGE_STORAGE if acquisition.modality == "CR" else DX_IMAGE_STORAGE_FOR_PRESENTATION
    assert ds.SOPClassUID == expected_class == ds.file_meta.MediaStorageSOPClassUID
    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
    assert (ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.BitsAllocated) == (96, 80, 1, 16)
    assert ds.BitsStored == acquisition.bits_stored and ds.PixelRepresentation == 0
    assert ds.pixel_array.max() < 2**acquisition.bits_stored
    assert ds.PatientName == "SYNTH^T0001" and ds.BodyPartExamined == "CHEST"

    decoded = _decode_by_hand(ds)
    assert np.corrcoef(decoded.ravel(), image.ravel())[0, 1] > 0.99

    # The full display chain (Modality LUT, then VOI LUT or window) must stay monotonic in the image.
    modality_values = pydicom.pixels.apply_modality_lut(ds.pixel_array, ds)
    if "VOILUTSequence" in ds:  # a VOI LUT is indexed by integers; its Modality LUT is the identity
        modality_values = modality_values.astype(np.int64)
    displayed = apply_voi_lut(modality_values, ds).astype(np.float64)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        displayed = -displayed
    order = np.argsort(image.ravel(), kind="stable")
    assert np.all(np.diff(displayed.ravel()[order]) >= -1e-6)


def test_spacing_variants_write_the_promised_tags(tmp_path) -> None:
    image = _ramp_image()
    tags = {}
    for spacing in ("pixel", "imager", "zero", "missing"):
        ds = _write(tmp_path / f"{spacing}.dcm", image, Acquisition(spacing=spacing))
        tags[spacing] = (ds.get("PixelSpacing"), ds.get("ImagerPixelSpacing"))
    assert [float(v) for v in tags["pixel"][0]] == [0.2, 0.2]
    assert tags["imager"][0] is None and [float(v) for v in tags["imager"][1]] == [0.2, 0.2]
    assert [float(v) for v in tags["zero"][0]] == [0.0, 0.0]
    assert tags["missing"] == (None, None)


def test_uids_are_deterministic_and_unique(tmp_path) -> None:
    image = _ramp_image()
    a = _write(tmp_path / "a.dcm", image, Acquisition(), key="case-a")
    a_again = _write(tmp_path / "a2.dcm", image, Acquisition(), key="case-a")
    b = _write(tmp_path / "b.dcm", image, Acquisition(), key="case-b")
    assert (tmp_path / "a.dcm").read_bytes() == (tmp_path / "a2.dcm").read_bytes()
    assert a.SOPInstanceUID == a_again.SOPInstanceUID
    uids = {a.SOPInstanceUID, a.StudyInstanceUID, a.SeriesInstanceUID, b.SOPInstanceUID, b.StudyInstanceUID}
    assert len(uids) == 5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"modality": "MR"},
        {"photometric": "RGB"},
        {"bits_stored": 8},
        {"spacing": "guess"},
        {"modality": "DX", "rescale_slope": 2.0},
        {"window": (0.5, 0.8)},
    ],
)
def test_invalid_acquisitions_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Acquisition(**kwargs)


# --- the phantom ---------------------------------------------------------------------------------------------------


def test_phantom_shapes_range_and_lungs() -> None:
    image, mask = make_phantom(np.random.default_rng(0), (200, 172), (0, 0, 0, 0, 0, 0))
    assert image.shape == mask.shape == (200, 172)
    assert image.dtype == np.float32 and mask.dtype == bool
    assert 0.0 <= image.min() and image.max() <= 1.0
    # Two lungs, one on each side of the image, darker (air) than the body around them.
    assert mask[:, :86].sum() > 0.05 * mask.size / 2 and mask[:, 86:].sum() > 0.05 * mask.size / 2
    body = (image > 0.15) & ~mask
    assert image[mask].mean() < image[body].mean() - 0.1


def test_phantom_draws_opacities_in_the_scored_zone() -> None:
    anatomy = sample_anatomy(np.random.default_rng(1))
    clean, mask = make_phantom(np.random.default_rng(2), (240, 220), (0, 0, 0, 0, 0, 0), anatomy)
    sick, same_mask = make_phantom(np.random.default_rng(2), (240, 220), (3, 0, 0, 0, 0, 0), anatomy)
    assert np.array_equal(mask, same_mask)
    difference = sick - clean
    near_lungs = ndimage.binary_dilation(mask, iterations=3)  # the soft lung edge carries opacity a pixel or two
    assert difference.min() >= -1e-6 and difference[~near_lungs].max() < 0.1 * difference.max()
    rows, cols = np.nonzero(difference > 0.05)
    right_lung_rows = np.nonzero(mask[:, :110].any(axis=1))[0]
    # Zone A: the patient's right lung (image left), upper third (zones blend over a few percent of the height).
    assert cols.max() < 110
    assert rows.max() < right_lung_rows[0] + 0.45 * (right_lung_rows[-1] - right_lung_rows[0])


def test_phantom_opacity_grows_with_the_score() -> None:
    anatomy = sample_anatomy(np.random.default_rng(3))
    means = []
    for score in range(4):
        image, mask = make_phantom(np.random.default_rng(4), (200, 180), (score,) * 6, anatomy)
        means.append(image[mask].mean())
    assert np.all(np.diff(means) > 0.01)


def test_phantom_rejects_bad_scores() -> None:
    with pytest.raises(ValueError):
        make_phantom(np.random.default_rng(0), (64, 64), (0, 4, 0, 0, 0, 0))


# --- the two datasets -----------------------------------------------------------------------------------------------


def _run_cli(out: Path, workers: int) -> dict:
    """Generate the tiny demo data through the command-line script, as `make demo` does."""
    spec = importlib.util.spec_from_file_location("make_demo_data", ROOT / "scripts" / "make_demo_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(["--out", str(out), "--size", "tiny", "--seed", "7", "--workers", str(workers)])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo")
    return out, _run_cli(out, workers=1)


def _read_brixia_metadata(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "BRIXIA" / "metadata_global_v2.csv", sep=";", dtype=str, keep_default_na=False)


def test_layout_matches_the_real_datasets(tiny: tuple[Path, dict]) -> None:
    out, summary = tiny
    sheet = pd.read_excel(out / "AIforCOVID" / "AIforCOVID.xlsx", dtype={"ImageFile": str})
    assert list(sheet.columns[:5]) == ["ImageFile", "Hospital", "Prognosis", "Age", "Sex"]
    assert {"Temp_C", "WBC", "CRP", "LDH", "D_dimer", "SaO2"} <= set(sheet.columns)
    assert set(sheet["Hospital"]) == set("ABCDEF") and sheet["Hospital"].value_counts().idxmax() == "F"
    assert set(sheet["Prognosis"]) == {"MILD", "SEVERE"}
    clinical = ["Age", "Sex", "Temp_C", "WBC", "CRP", "LDH", "D_dimer", "SaO2"]
    assert 0.05 < sheet[clinical].isna().to_numpy().mean() < 0.35  # clinical values go missing, as in reality
    assert sheet["ImageFile"].str.fullmatch(r"P_[A-F]_\d{4}").all()
    images = sorted(p.stem for p in (out / "AIforCOVID" / "imgs").iterdir())
    assert images == sorted(sheet["ImageFile"]) and len(images) == summary["aiforcovid"]["images"] == 24

    meta = _read_brixia_metadata(out)
    assert list(meta.columns) == [
        "Filename", "StudyDate", "Modality", "StudyId", "BrixiaScore", "BrixiaScoreGlobal", "ConsensusTestset",
        "Subject", "Sex", "AgeAtStudyDateFiveYear", "Manufacturer", "PhotometricInterpretation",
    ]  # fmt: skip
    assert sorted(p.name for p in (out / "BRIXIA" / "dicom_clean").iterdir()) == sorted(meta["Filename"])
    assert len(meta) == summary["brixia"]["images"] == 48
    assert meta["Subject"].duplicated().any()  # some subjects have a follow-up study
    assert set(meta["ConsensusTestset"]) == {"0", "1"}
    assert meta["Manufacturer"].nunique() >= 3


def test_brixia_scores_keep_leading_zeros_and_sum(tiny: tuple[Path, dict]) -> None:
    out, _ = tiny
    meta = _read_brixia_metadata(out)
    assert meta["BrixiaScore"].str.fullmatch(r"[0-3]{6}").all()
    assert meta["BrixiaScore"].str.startswith("0").any()
    zone_sum = meta["BrixiaScore"].map(lambda score: sum(int(d) for d in score))
    assert (zone_sum == meta["BrixiaScoreGlobal"].astype(int)).all()
    latents = pd.read_csv(out / "BRIXIA" / "synthetic" / "latents.csv")
    zones = latents[["zone_A", "zone_B", "zone_C", "zone_D", "zone_E", "zone_F"]].astype(str).agg("".join, axis=1)
    assert list(zones) == list(meta["BrixiaScore"])


def test_every_dicom_reads_with_its_mask_and_unique_uids(tiny: tuple[Path, dict]) -> None:
    out, _ = tiny
    meta = _read_brixia_metadata(out).set_index("Filename")
    files = sorted((out / "AIforCOVID" / "imgs").glob("*.dcm")) + sorted((out / "BRIXIA" / "dicom_clean").glob("*.dcm"))
    uids = set()
    for path in files:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
        mask = np.asarray(Image.open(path.parents[1] / "synthetic" / "masks" / f"{path.stem}.png"))
        assert mask.shape == pixels.shape == (ds.Rows, ds.Columns)
        assert set(np.unique(mask)) == {0, 255}
        assert 128 <= max(pixels.shape) <= 300
        assert str(ds.PatientName).startswith("SYNTH^") and ds.PatientID.startswith("SYNTH-")
        assert ds.BodyPartExamined == "CHEST" and ds.ViewPosition in ("PA", "AP")
        if path.name in meta.index:
            row = meta.loc[path.name]
            assert (ds.Modality, ds.Manufacturer, ds.PhotometricInterpretation) == (
                row["Modality"],
                row["Manufacturer"],
                row["PhotometricInterpretation"],
            )
        uids |= {ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID}
    assert len(uids) == 3 * len(files)


def test_prognosis_latents_and_oracle_auc(tiny: tuple[Path, dict]) -> None:
    out, summary = tiny
    sheet = pd.read_excel(out / "AIforCOVID" / "AIforCOVID.xlsx")
    latents = pd.read_csv(out / "AIforCOVID" / "synthetic" / "latents.csv")
    assert list(latents["ImageFile"]) == list(sheet["ImageFile"])
    assert list(latents["prognosis"]) == list((sheet["Prognosis"] == "SEVERE").astype(int))
    auc = roc_auc_score(latents["prognosis"], latents["visible_severity"])
    assert summary["oracle_auc"] == pytest.approx(auc, abs=1e-4)
    assert 0.5 < summary["oracle_auc"] < 1.0


def test_same_seed_same_files_whatever_the_workers(tiny: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = tiny
    again = tmp_path / "again"
    _run_cli(again, workers=2)
    for name in (
        "BRIXIA/metadata_global_v2.csv",
        "BRIXIA/synthetic/latents.csv",
        "AIforCOVID/synthetic/latents.csv",
    ):
        assert (out / name).read_bytes() == (again / name).read_bytes(), name
    pd.testing.assert_frame_equal(
        pd.read_excel(out / "AIforCOVID" / "AIforCOVID.xlsx"), pd.read_excel(again / "AIforCOVID" / "AIforCOVID.xlsx")
    )
    for first in sorted(out.glob("*/*/*.dcm")):
        assert first.read_bytes() == (again / first.relative_to(out)).read_bytes(), first.name
    # A real dataset folder (no synthetic/ sidecar) is never replaced.
    (tmp_path / "real" / "AIforCOVID").mkdir(parents=True)
    (tmp_path / "real" / "AIforCOVID" / "AIforCOVID.xlsx").write_text("not demo data")
    with pytest.raises(FileExistsError):
        generate_demo_data(tmp_path / "real", "tiny")
