"""Tests of the one DICOM normalisation: any chest radiograph in, (H, W) float32 with air dark out."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose, LoadImage, LoadImaged
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid
from scipy.stats import spearmanr

from bundle.data import dicom
from bundle.data.dicom import (
    FALLBACK_PIXEL_SPACING_MM,
    MAX_PIXELS,
    CXRDicomReader,
    DicomInputError,
    read_cxr,
)
from bundle.data.synthetic import Acquisition, acquisition_variants, write_cxr_dicom

ROWS, COLUMNS = 48, 64
CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
PHI = {
    "PatientName": "SYNTH^SECRET",
    "PatientID": "SECRET-ID-4711",
    "PatientBirthDate": "19230405",
    "AccessionNumber": "ACC-998877",
    "InstitutionName": "SECRET GENERAL HOSPITAL",
}


def _ground_truth(rows: int = ROWS, columns: int = COLUMNS) -> np.ndarray:
    """Air-dark image in [0, 1], asymmetric in both axes: dark band on the left, bright block at the top right."""
    row, column = np.mgrid[0:rows, 0:columns]
    image = 0.3 + 0.4 * row / (rows - 1) + 0.1 * column / (columns - 1)
    image[:, : columns // 4] = 0.05
    image[rows // 8 : rows * 3 // 8, columns * 5 // 8 : columns * 9 // 10] = 0.95
    return image


def _stored(image: np.ndarray, photometric: str, bits: int, signed: bool) -> np.ndarray:
    """Linear encoding of an air-dark image on 5-95 % of the stored range; MONOCHROME1 stores air bright."""
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    values = low + (0.05 + 0.9 * image) * (high - low)
    if photometric == "MONOCHROME1":
        values = low + high - values
    return np.rint(values).astype(np.int16 if signed else np.uint16)


def _dataset(
    stored: np.ndarray | None = None,
    photometric: str = "MONOCHROME2",
    bits: int = 12,
    signed: bool = False,
    **tags: object,
) -> Dataset:
    """A minimal CR dataset (Explicit VR Little Endian) holding ``stored``, plus any extra tags by keyword."""
    if stored is None:
        stored = _stored(_ground_truth(), photometric, bits, signed)
    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = CR_STORAGE
    file_meta.MediaStorageSOPInstanceUID = generate_uid()
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = file_meta
    ds.SOPClassUID = CR_STORAGE
    ds.SOPInstanceUID = file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CR"
    ds.Manufacturer = "TEST"
    ds.ViewPosition = "PA"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = int(signed)
    ds.PixelSpacing = ["0.2", "0.1"]
    for keyword, value in tags.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.PixelData = stored.astype("<i2" if signed else "<u2").tobytes()
    return ds


def _save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def _lut_item(entries: int, curve: np.ndarray, bits: int = 16) -> Dataset:
    """A LUT item (VOI or Modality) holding ``curve`` as OW data."""
    item = Dataset()
    item.LUTDescriptor = [entries, 0, bits]
    item.add_new(0x00283006, "OW", np.asarray(curve, dtype="<u2").tobytes())
    return item


def _read_quietly(path: Path, **kwargs: object) -> tuple[np.ndarray, dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_cxr(path, **kwargs)


def _assert_recovers(image: np.ndarray, truth: np.ndarray, min_correlation: float = 0.99) -> None:
    """Same shape and orientation, air dark: monotonic increasing relation to the ground truth."""
    assert image.shape == truth.shape
    assert image.dtype == np.float32
    assert np.isfinite(image).all()
    assert spearmanr(image.ravel(), truth.ravel()).statistic > min_correlation
    dark_band = image[:, : truth.shape[1] // 4].mean()
    assert dark_band < image[truth > 0.9].mean()


# --- hand-built encodings: every one decodes to the same orientation with air dark ---------------------------------

_RANGE_12 = 4095.0
_SIGMOID = {"WindowCenter": "2047.5", "WindowWidth": "2000", "VOILUTFunction": "SIGMOID"}

ENCODINGS: dict[str, Callable[[], Dataset]] = {
    "mono2": lambda: _dataset(),
    "mono1": lambda: _dataset(photometric="MONOCHROME1"),
    "mono2_bits10": lambda: _dataset(bits=10),
    "mono1_bits10": lambda: _dataset(photometric="MONOCHROME1", bits=10),
    "mono2_bits16": lambda: _dataset(bits=16),
    "mono1_bits16": lambda: _dataset(photometric="MONOCHROME1", bits=16),
    "mono2_signed16": lambda: _dataset(bits=16, signed=True),
    "mono1_signed16": lambda: _dataset(photometric="MONOCHROME1", bits=16, signed=True),
    "mono2_rescale": lambda: _dataset(RescaleSlope="2.5", RescaleIntercept="-1000"),
    "mono1_rescale": lambda: _dataset(photometric="MONOCHROME1", RescaleSlope="0.5", RescaleIntercept="100"),
    "mono2_window": lambda: _dataset(WindowCenter="2047.5", WindowWidth="4500"),
    "mono1_window": lambda: _dataset(photometric="MONOCHROME1", WindowCenter="2047.5", WindowWidth="4500"),
    "mono1_window_after_rescale": lambda: _dataset(
        photometric="MONOCHROME1", RescaleSlope="2", RescaleIntercept="-100", WindowCenter="3995", WindowWidth="9000"
    ),
    "mono2_window_sigmoid": lambda: _dataset(**_SIGMOID),
    "mono1_window_sigmoid": lambda: _dataset(photometric="MONOCHROME1", **_SIGMOID),
    "mono1_two_windows": lambda: _dataset(
        photometric="MONOCHROME1", WindowCenter=["2047.5", "300"], WindowWidth=["4500", "50"]
    ),
    "mono2_voi_lut": lambda: _dataset(VOILUTSequence=[_lut_item(4096, np.sqrt(np.arange(4096) / _RANGE_12) * 65535)]),
    "mono1_voi_lut": lambda: _dataset(
        photometric="MONOCHROME1",
        VOILUTSequence=[_lut_item(4096, (np.arange(4096) / _RANGE_12) ** 2 * 65535)],
        WindowCenter="10",  # the VOI LUT Sequence wins over a window
        WindowWidth="5",
    ),
    "mono2_modality_lut": lambda: _dataset(ModalityLUTSequence=[_lut_item(4096, np.arange(4096) * 8)]),
    "mono1_modality_lut_and_window": lambda: _dataset(
        photometric="MONOCHROME1",
        ModalityLUTSequence=[_lut_item(4096, np.arange(4096) * 8)],
        WindowCenter="16380",
        WindowWidth="40000",
    ),
}


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_every_encoding_decodes_to_same_orientation_with_air_dark(tmp_path: Path, encoding: str) -> None:
    image, meta = read_cxr(_save(ENCODINGS[encoding](), tmp_path / "image.dcm"))
    _assert_recovers(image, _ground_truth())
    assert meta["spatial_shape"].tolist() == [ROWS, COLUMNS]


@pytest.mark.parametrize(
    "tags",
    [{}, {"RescaleSlope": "2.5", "RescaleIntercept": "-1000"}, {"BitsStored": 16, "HighBit": 15}],
    ids=["plain", "rescale", "bits16"],
)
def test_monochrome1_is_inverted_within_declared_range(tmp_path: Path, tags: dict) -> None:
    """Without VOI, MONOCHROME1 storing ``max - s`` decodes exactly like MONOCHROME2 storing ``s``."""
    bits = int(tags.get("BitsStored", 12))
    mono2 = _stored(_ground_truth(), "MONOCHROME2", bits, signed=False)
    mono1 = (2**bits - 1 - mono2.astype(np.int64)).astype(np.uint16)
    image2, _ = read_cxr(_save(_dataset(mono2, "MONOCHROME2", bits, **tags), tmp_path / "m2.dcm"))
    image1, _ = read_cxr(_save(_dataset(mono1, "MONOCHROME1", bits, **tags), tmp_path / "m1.dcm"))
    np.testing.assert_array_equal(image1, image2)


def test_sigmoid_window_follows_voi_lut_function(tmp_path: Path) -> None:
    ds = _dataset(**_SIGMOID)
    stored = ds.pixel_array.astype(np.float64)
    image, _ = read_cxr(_save(ds, tmp_path / "sigmoid.dcm"))
    expected = _RANGE_12 / (1 + np.exp(-4 * (stored - 2047.5) / 2000))
    np.testing.assert_allclose(image, expected, rtol=1e-5)


def test_only_first_of_several_windows_is_used(tmp_path: Path) -> None:
    first, _ = read_cxr(_save(_dataset(WindowCenter="2047.5", WindowWidth="4500"), tmp_path / "one.dcm"))
    both, _ = read_cxr(
        _save(_dataset(WindowCenter=["2047.5", "300"], WindowWidth=["4500", "50"]), tmp_path / "two.dcm")
    )
    np.testing.assert_array_equal(first, both)


@pytest.mark.parametrize(
    "tags",
    [{"WindowCenter": "2047.5", "WindowWidth": "0"}, {"WindowCenter": "100000", "WindowWidth": "10"}],
    ids=["zero_width", "window_outside_data"],
)
def test_unusable_window_is_skipped_with_warning(tmp_path: Path, tags: dict) -> None:
    path = _save(_dataset(photometric="MONOCHROME1", **tags), tmp_path / "window.dcm")
    with pytest.warns(UserWarning, match="ignoring") as record:
        image, _ = read_cxr(path)
    assert any(str(path) in str(w.message) for w in record)
    _assert_recovers(image, _ground_truth())


# --- pixel spacing ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({}, (0.2, 0.1)),
        ({"PixelSpacing": None, "ImagerPixelSpacing": ["0.15", "0.12"]}, (0.15, 0.12)),
        (
            {
                "PixelSpacing": None,
                "ImagerPixelSpacing": ["0.15", "0.12"],
                "EstimatedRadiographicMagnificationFactor": "1.2",
            },
            (0.125, 0.1),
        ),
        ({"PixelSpacing": ["0", "0"], "ImagerPixelSpacing": ["0.14", "0.14"]}, (0.14, 0.14)),
    ],
    ids=["pixel_spacing", "imager_spacing", "imager_spacing_magnification", "zero_pixel_spacing_uses_imager"],
)
def test_pixel_spacing_sources(tmp_path: Path, tags: dict, expected: tuple[float, float]) -> None:
    path = _save(_dataset(**tags), tmp_path / "spacing.dcm")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, meta = read_cxr(path)
    np.testing.assert_allclose(meta["pixel_spacing"], expected)
    np.testing.assert_allclose(np.diag(meta["affine"]), [*expected, 1.0])
    assert meta["spacing_fallback"] is False


@pytest.mark.parametrize(
    "tags",
    [{"PixelSpacing": ["0", "0"]}, {"PixelSpacing": None}, {"PixelSpacing": "0.2"}, {"PixelSpacing": ["-0.2", "0.2"]}],
    ids=["zero", "missing", "single_value", "negative"],
)
def test_unusable_spacing_falls_back_with_warning(tmp_path: Path, tags: dict) -> None:
    path = _save(_dataset(**tags), tmp_path / "spacing.dcm")
    with pytest.warns(UserWarning, match=f"{path}.*assuming {FALLBACK_PIXEL_SPACING_MM} mm"):
        _, meta = read_cxr(path)
    np.testing.assert_allclose(meta["pixel_spacing"], [FALLBACK_PIXEL_SPACING_MM] * 2)
    np.testing.assert_allclose(np.diag(meta["affine"]), [FALLBACK_PIXEL_SPACING_MM] * 2 + [1.0])
    assert meta["spacing_fallback"] is True


def test_non_numeric_spacing_falls_back(tmp_path: Path) -> None:
    path = _save(_dataset(PixelSpacing=["9.25", "9.25"]), tmp_path / "spacing.dcm")
    raw = path.read_bytes()
    assert raw.count(b"9.25\\9.25") == 1
    path.write_bytes(raw.replace(b"9.25\\9.25", b"abcd\\efgh"))
    with pytest.warns(UserWarning, match="assuming"):
        _, meta = read_cxr(path)
    assert meta["spacing_fallback"] is True


# --- bad input: DicomInputError naming the file and the reason ------------------------------------------------------


def _non_image(tmp_path: Path) -> Path:
    """A Basic Text SR: no pixel description, no PixelData."""
    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    file_meta.MediaStorageSOPInstanceUID = generate_uid()
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = file_meta
    ds.SOPClassUID = file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "SR"
    return _save(ds, tmp_path / "report.dcm")


def _truncated(tmp_path: Path) -> Path:
    path = _save(_dataset(), tmp_path / "truncated.dcm")
    path.write_bytes(path.read_bytes()[:-1000])
    return path


def _no_pixel_data(tmp_path: Path) -> Path:
    ds = _dataset()
    del ds.PixelData
    return _save(ds, tmp_path / "no_pixels.dcm")


def _rgb(tmp_path: Path) -> Path:
    ds = _dataset(np.zeros((ROWS, COLUMNS * 3 // 2), np.uint16), SamplesPerPixel=3, PhotometricInterpretation="RGB")
    ds.Columns = COLUMNS
    ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    return _save(ds, tmp_path / "rgb.dcm")


def _multi_frame(tmp_path: Path) -> Path:
    frames = np.concatenate([_stored(_ground_truth(), "MONOCHROME2", 12, False)] * 3)
    ds = _dataset(frames, NumberOfFrames=3)
    ds.Rows = ROWS
    return _save(ds, tmp_path / "frames.dcm")


def _huge(tmp_path: Path) -> Path:
    ds = _dataset()
    ds.Rows, ds.Columns = 60000, 60000  # 7.2 GB if decoded; the 6 kB of PixelData is never looked at
    return _save(ds, tmp_path / "huge.dcm")


def _corrupt_j2k(tmp_path: Path) -> Path:
    ds = _dataset()
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51 not a codestream " * 8])
    return _save(ds, tmp_path / "corrupt.dcm")


def _constant(tmp_path: Path) -> Path:
    return _save(_dataset(np.full((ROWS, COLUMNS), 700, np.uint16)), tmp_path / "constant.dcm")


def _text(tmp_path: Path) -> Path:
    path = tmp_path / "notes.dcm"
    path.write_text("patient notes, not DICOM\n" * 20)
    return path


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.dcm"
    path.touch()
    return path


BAD_FILES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing": (lambda tmp: tmp / "absent.dcm", "file not found"),
    "directory": (lambda tmp: tmp, "not a regular file"),
    "zero_bytes": (_empty, "empty file"),
    "not_dicom": (_text, "not a readable DICOM file"),
    "truncated": (_truncated, "cannot decode the pixel data"),
    "no_pixel_data": (_no_pixel_data, "no PixelData"),
    "structured_report": (_non_image, "not an image (Basic Text SR Storage)"),
    "rgb": (_rgb, "not a greyscale image (PhotometricInterpretation 'RGB', SamplesPerPixel 3)"),
    "ybr": (lambda tmp: _save(_dataset(PhotometricInterpretation="YBR_FULL"), tmp / "ybr.dcm"), "not a greyscale"),
    "palette": (
        lambda tmp: _save(_dataset(PhotometricInterpretation="PALETTE COLOR"), tmp / "palette.dcm"),
        "not a greyscale",
    ),
    "multi_frame": (_multi_frame, "multi-frame image (3 frames)"),
    "huge": (_huge, "declared size 60000 x 60000 exceeds the limit"),
    "zero_rows": (lambda tmp: _save(_dataset(Rows=0), tmp / "zero_rows.dcm"), "empty image (Rows 0"),
    "corrupt_codestream": (_corrupt_j2k, "cannot decode the pixel data (JPEG 2000"),
    "constant": (_constant, "constant image"),
    "zero_slope": (
        lambda tmp: _save(_dataset(RescaleSlope="0", RescaleIntercept="0"), tmp / "slope.dcm"),
        "RescaleSlope 0.0",
    ),
    "non_finite": (
        lambda tmp: _save(_dataset(RescaleSlope="1e308", RescaleIntercept="1e308"), tmp / "overflow.dcm"),
        "non-finite pixel values",
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_input_raises_dicom_input_error_naming_file_and_reason(tmp_path: Path, kind: str) -> None:
    make, reason = BAD_FILES[kind]
    path = make(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy overflow in the non-finite case
        with pytest.raises(DicomInputError) as excinfo:
            read_cxr(path)
    error = excinfo.value
    assert isinstance(error, ValueError)
    assert error.path == str(path)
    assert reason in error.reason
    assert str(error) == f"{path}: {error.reason}"


def test_size_limit_is_checked_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(dicom, "_decode", fail)
    with pytest.raises(DicomInputError, match=str(MAX_PIXELS)):
        read_cxr(_huge(tmp_path))


def test_missing_codec_in_both_decoders(monkeypatch: pytest.MonkeyPatch) -> None:
    """JPEG Lossless has no pydicom plugin here; with SimpleITK failing too, the error names the codec problem."""

    def no_gdcm(*args: object, **kwargs: object) -> None:
        raise RuntimeError("ITK ERROR: no codec")

    monkeypatch.setattr(dicom.sitk, "ReadImage", no_gdcm)
    path = get_testdata_file("JPEG-LL.dcm")
    with pytest.raises(DicomInputError, match="JPEG Lossless") as excinfo:
        read_cxr(path, modalities=("NM",))  # pydicom's JPEG Lossless test file is a nuclear medicine image
    assert "SimpleITK: ITK ERROR: no codec" in excinfo.value.reason


def test_dicom_input_error_pickles() -> None:
    error = pickle.loads(pickle.dumps(DicomInputError("/data/x.dcm", "constant image")))
    assert (error.path, error.reason, str(error)) == ("/data/x.dcm", "constant image", "/data/x.dcm: constant image")


# --- SimpleITK fallback decoder ----------------------------------------------------------------------------------


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
@pytest.mark.parametrize(
    ("bits", "signed", "tags"),
    [
        (12, False, {}),
        (16, False, {"RescaleSlope": "0.5", "RescaleIntercept": "3"}),
        (16, True, {}),
        (16, True, {"RescaleSlope": "2", "RescaleIntercept": "-100"}),
        (12, False, {"ModalityLUTSequence": [_lut_item(4096, np.arange(4096) * 8)]}),
    ],
    ids=["u12", "u16_rescale", "s16", "s16_rescale", "u12_modality_lut"],
)
def test_simpleitk_fallback_gives_stored_values(
    tmp_path: Path, photometric: str, bits: int, signed: bool, tags: dict
) -> None:
    """GDCM's own rescale and MONOCHROME1 inversion are undone: the fallback equals pydicom's stored values."""
    ds = _dataset(photometric=photometric, bits=bits, signed=signed, **tags)
    path = _save(ds, tmp_path / "image.dcm")
    np.testing.assert_array_equal(dicom._decode_with_simpleitk(path, ds), ds.pixel_array)


def test_jpeg_lossless_decodes_through_fallback() -> None:
    """pydicom has no JPEG Lossless or 12-bit JPEG plugin here; the same image in both decodes alike."""
    lossless, _ = _read_quietly(Path(get_testdata_file("JPEG-LL.dcm")), modalities=("NM",))  # pydicom's test
    lossy, _ = _read_quietly(Path(get_testdata_file("JPEG-lossy.dcm")), modalities=("NM",))  # files are NM images
    assert lossless.shape == lossy.shape == (1024, 256)
    assert np.corrcoef(lossless.ravel(), lossy.ravel())[0, 1] > 0.98  # 0.987: lossy compression noise


# --- real computed radiographs (pydicom-data): MONOCHROME1, 15 bits, PixelSpacing 0 -----------------------------------

RG1_FILES = ["RG1_UNCI.dcm", "RG1_UNCR.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm"]


@pytest.fixture(scope="module")
def rg1_decoded() -> dict[str, tuple[np.ndarray, dict, list[str]]]:
    decoded = {}
    for name in RG1_FILES:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            image, meta = read_cxr(get_testdata_file(name))
        decoded[name] = (image, meta, [str(w.message) for w in record])
    return decoded


@pytest.mark.parametrize("name", RG1_FILES)
def test_real_radiograph_has_air_dark(rg1_decoded: dict, name: str) -> None:
    image, meta, _ = rg1_decoded[name]
    assert image.shape == (1955, 1841)
    assert image.dtype == np.float32
    assert np.isfinite(image).all()
    assert meta["PhotometricInterpretation"] == "MONOCHROME1"

    def region(top: float, bottom: float, left: float, right: float) -> float:
        rows, columns = image.shape
        return float(image[int(top * rows) : int(bottom * rows), int(left * columns) : int(right * columns)].mean())

    # PA chest: both lungs (air-filled) are much darker than the spine column between them, and the air above the
    # shoulders in the top corners is darker still than the spine. On the raw stored values it is the other way round.
    spread = float(image.max() - image.min())
    spine = region(0.15, 0.60, 0.45, 0.53)
    for lung in (region(0.15, 0.40, 0.15, 0.35), region(0.15, 0.40, 0.62, 0.85)):
        assert spine - lung > 0.2 * spread
    for corner in (region(0.0, 0.04, 0.0, 0.08), region(0.0, 0.04, 0.92, 1.0)):
        assert spine - corner > 0.3 * spread


@pytest.mark.parametrize("name", RG1_FILES)
def test_real_radiograph_is_decreasing_in_stored_values(rg1_decoded: dict, name: str) -> None:
    """Window 15000/30000 covers the data: the output is a decreasing linear function of the stored values."""
    image, _, _ = rg1_decoded[name]
    stored = pydicom.dcmread(get_testdata_file(name)).pixel_array.astype(np.float64)
    assert np.corrcoef(image.ravel(), stored.ravel())[0, 1] < -0.99999


@pytest.mark.parametrize("name", RG1_FILES)
def test_real_radiograph_spacing_zero_falls_back(rg1_decoded: dict, name: str) -> None:
    _, meta, messages = rg1_decoded[name]
    assert meta["spacing_fallback"] is True
    np.testing.assert_allclose(meta["pixel_spacing"], [FALLBACK_PIXEL_SPACING_MM] * 2)
    assert any(name in message and "assuming" in message for message in messages)


def test_lossless_jpeg2000_equals_uncompressed(rg1_decoded: dict) -> None:
    np.testing.assert_array_equal(rg1_decoded["RG1_J2KR.dcm"][0], rg1_decoded["RG1_UNCR.dcm"][0])


# --- through MONAI --------------------------------------------------------------------------------------------------


def _with_phi(tmp_path: Path, name: str = "phi.dcm") -> Path:
    return _save(_dataset(photometric="MONOCHROME1", **PHI), tmp_path / name)


def test_load_imaged_gives_channel_first_metatensor_without_phi(tmp_path: Path) -> None:
    path = _with_phi(tmp_path)
    loader = LoadImaged(keys="image", reader=CXRDicomReader(), ensure_channel_first=True, image_only=True)
    data = loader({"image": str(path)})
    image = data["image"]
    assert isinstance(image, MetaTensor)
    assert image.shape == (1, ROWS, COLUMNS)
    assert image.dtype == torch.float32
    _assert_recovers(image[0].numpy(), _ground_truth())
    np.testing.assert_allclose(image.pixdim, [0.2, 0.1])
    assert image.meta["filename_or_obj"] == str(path)
    assert image.meta["Modality"] == "CR"
    assert image.meta["spacing_fallback"] is False
    text = str(image.meta) + str(data)
    for keyword, value in PHI.items():
        assert value not in text, keyword
        assert keyword not in text, keyword


def test_read_cxr_meta_is_only_the_whitelist(tmp_path: Path) -> None:
    _, meta = read_cxr(_with_phi(tmp_path))
    assert set(meta) == {
        "SOPInstanceUID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "Modality",
        "PhotometricInterpretation",
        "BitsStored",
        "ViewPosition",
        "Manufacturer",
        "pixel_spacing",
        "spacing_fallback",
        "affine",
        "original_affine",
        "spatial_shape",
        "original_channel_dim",
        "filename_or_obj",
    }
    assert np.isnan(meta["original_channel_dim"])
    assert meta["BitsStored"] == 12


def test_reader_by_dotted_name_and_config_target(tmp_path: Path) -> None:
    path = _save(_dataset(), tmp_path / "1.2.840.99999.1")  # UID-named file, no .dcm suffix
    by_name = LoadImage(reader="bundle.data.dicom.CXRDicomReader", image_only=True)(path)
    reader = ConfigParser({"reader": {"_target_": "bundle.data.dicom.CXRDicomReader"}}).get_parsed_content("reader")
    by_config = LoadImage(reader=reader, image_only=True)(path)
    assert by_name.shape == by_config.shape == (ROWS, COLUMNS)
    torch.testing.assert_close(by_name, by_config)


def test_several_files_stack_on_a_new_first_axis(tmp_path: Path) -> None:
    first, second = _save(_dataset(), tmp_path / "a.dcm"), _save(_dataset(bits=16), tmp_path / "b.dcm")
    reader = CXRDicomReader()
    array, meta = reader.get_data(reader.read([first, second]))
    assert array.shape == (2, ROWS, COLUMNS)
    assert meta["original_channel_dim"] == 0


def test_rejection_reaches_the_caller_through_monai(tmp_path: Path) -> None:
    """A file the reader rejects is not handed to another reader: the DicomInputError surfaces."""
    path = _rgb(tmp_path)
    loader = LoadImaged(keys="image", reader=CXRDicomReader(), image_only=True)
    with pytest.raises(DicomInputError, match="not a greyscale"):
        loader({"image": str(path)})
    with pytest.raises(RuntimeError) as excinfo:
        Compose([loader])({"image": str(path)})
    cause = excinfo.value
    while cause is not None and not isinstance(cause, DicomInputError):
        cause = cause.__cause__
    assert isinstance(cause, DicomInputError)


@pytest.mark.parametrize(
    ("names", "accepted"),
    [
        ("a.dcm", True),
        ("a.DCM", True),
        ("b.dicom", True),
        ("IM0001", True),
        ("1.2.840.113619.2.55", True),
        (["a.dcm", "IM0002"], True),
        ("a.png", False),
        ("a.nii.gz", False),
        (["a.dcm", "b.jpg"], False),
    ],
)
def test_verify_suffix(names: str | list[str], accepted: bool) -> None:
    assert CXRDicomReader().verify_suffix(names) is accepted


# --- the synthetic demo data: every encoding the generator writes ------------------------------------------------


def _variant_id(acquisition: Acquisition) -> str:
    voi = ("-window" if acquisition.window else "") + ("-voilut" if acquisition.voi_lut else "")
    rescale = "" if acquisition.rescale_slope == 1 else f"-slope{acquisition.rescale_slope:g}"
    encoding = f"{acquisition.modality}-{acquisition.photometric}-{acquisition.bits_stored}bit"
    return f"{encoding}{rescale}{voi}-{acquisition.spacing}"


@pytest.mark.parametrize("acquisition", acquisition_variants(), ids=_variant_id)
def test_synthetic_variants_decode_to_the_written_image(tmp_path: Path, acquisition: Acquisition) -> None:
    truth = _ground_truth(40, 56)
    path = tmp_path / "synthetic.dcm"
    write_cxr_dicom(
        path,
        truth,
        acquisition,
        patient_name=PHI["PatientName"],
        patient_id=PHI["PatientID"],
        patient_birth_date=PHI["PatientBirthDate"],
        accession_number=PHI["AccessionNumber"],
        pixel_spacing_mm=(0.18, 0.16),
        uid_key="test",
    )
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        image, meta = read_cxr(path)
    _assert_recovers(image, truth, min_correlation=0.98)
    assert meta["PhotometricInterpretation"] == acquisition.photometric
    if acquisition.spacing in ("pixel", "imager"):
        np.testing.assert_allclose(meta["pixel_spacing"], [0.18, 0.16])
        assert not record
    else:
        assert meta["spacing_fallback"] is True
        assert any("assuming" in str(w.message) for w in record)
    for value in PHI.values():
        assert value not in str(meta)
