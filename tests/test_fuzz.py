"""Fuzzing the two doors data comes in by: the DICOM reader and the dataset adapters.

The only outcomes allowed are the documented ones: the reader gives a finite (H, W) float32 image or raises
``DicomInputError``; an adapter gives records and rejected rows (with a reason) for every row, or raises
``DatasetLayoutError`` for a sheet it cannot read at all. Any other exception, a crash or a hang is a bug; each one
found became a fix and an explicit regression test at the end of this file. Hypothesis runs derandomised (the same
examples on every run) with a bounded number of examples, so CI is deterministic and quick.
"""

from __future__ import annotations

import io
import signal
import struct
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from bundle.data.aiforcovid import read_aiforcovid
from bundle.data.brixia import read_brixia
from bundle.data.datalist import DatasetLayoutError
from bundle.data.dicom import DicomInputError, read_cxr

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ADAPTER_FUZZ = settings(FUZZ, max_examples=100)  # each example writes a spreadsheet: slower than a DICOM
HANG_SECONDS = 120  # a guard against hangs only: a valid example takes milliseconds


@contextmanager
def no_hang(seconds: int = HANG_SECONDS) -> Iterator[None]:
    """Fail (instead of blocking CI) if the body runs for ``seconds``."""

    def hung(signum: int, frame: Any) -> None:
        raise TimeoutError(f"no result after {seconds} s: the input made the code hang")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# ---- the DICOM reader ----------------------------------------------------------------------------------------------


def _valid_dicom() -> bytes:
    """A small valid CR radiograph (20 x 16, 12 bits in 16, MONOCHROME2, spacing, rescale, window)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["fuzz"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = 20, 16
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing = [0.2, 0.2]
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = (np.arange(320, dtype=np.uint16) * 12).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


VALID_DICOM = _valid_dicom()

US_TAGS = ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel")
TEXT_TAGS = {  # keyword -> VR, values worth trying besides random text
    "PhotometricInterpretation": ("CS", ["MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "PALETTE COLOR", ""]),
    "RescaleSlope": ("DS", ["0", "-1", "1e308", "1e-300", "nan", "inf", "-inf", "abc", "", "1\\2"]),
    "RescaleIntercept": ("DS", ["0", "-1e308", "1e308", "nan", "x", "", "1\\2"]),
    "WindowCenter": ("DS", ["0", "-5", "1e308", "nan", "2048\\100", "", "q"]),
    "WindowWidth": ("DS", ["0", "1", "-1", "1e-300", "nan", "inf", "4096\\0", "", "w"]),
    "VOILUTFunction": ("CS", ["LINEAR", "LINEAR_EXACT", "SIGMOID", "BOGUS", "", "\\", "LINEAR\\SIGMOID"]),
    "PixelSpacing": ("DS", ["0\\0", "-1\\1", "nan\\1", "1", "1\\2\\3", "a\\b", "1e308\\1e308", ""]),
    "ImagerPixelSpacing": ("DS", ["0.1\\0.1", "0\\0", "x", ""]),
    "NumberOfFrames": ("IS", ["0", "1", "2", "-1", "99999999999", "x", ""]),
    "Modality": ("CS", ["CR", "DX", "CT", "", "cr"]),
}


def _raw(keyword: str, vr: str, value: bytes) -> RawDataElement:
    tag = Tag(keyword)
    return RawDataElement(tag, vr, len(value), value, 0, False, True)


us_values = st.one_of(
    st.integers(0, 65535).map(lambda v: struct.pack("<H", v)),
    st.sampled_from([0, 1, 8, 12, 16, 32, 64, 65535]).map(lambda v: struct.pack("<H", v)),
    st.binary(max_size=6),
)


def _text_value(values: list[str]) -> st.SearchStrategy[bytes]:
    return st.one_of(st.sampled_from(values), st.text(max_size=12)).map(lambda s: s.encode("utf-8", "replace"))


header_mutations = st.fixed_dictionaries(
    {},
    optional={
        **{keyword: us_values for keyword in US_TAGS},
        **{keyword: _text_value(values) for keyword, (_, values) in TEXT_TAGS.items()},
        "PixelData": st.one_of(
            st.integers(0, 640).map(lambda n: VALID_DICOM[-640:][:n]),  # truncated
            st.binary(max_size=64).map(lambda extra: VALID_DICOM[-640:] + extra),  # extended
            st.binary(max_size=700),  # random bytes
        ),
    },
)


def _with_header(mutations: dict[str, bytes]) -> bytes:
    """The valid file with the given elements replaced by raw (possibly invalid) encoded values."""
    ds = pydicom.dcmread(io.BytesIO(VALID_DICOM))
    for keyword, value in mutations.items():
        vr = "US" if keyword in US_TAGS else "OW" if keyword == "PixelData" else TEXT_TAGS[keyword][0]
        ds._dict[Tag(keyword)] = _raw(keyword, vr, value)
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def assert_reader_contract(path: Path) -> None:
    """read_cxr gives a finite (H, W) float32 image, or raises DicomInputError naming the file; nothing else."""
    with warnings.catch_warnings(), no_hang():
        warnings.simplefilter("ignore")
        try:
            image, meta = read_cxr(path)
        except DicomInputError as error:
            assert error.path == str(path) and error.reason
            return
    assert image.dtype == np.float32 and image.ndim == 2 and min(image.shape) > 0
    assert np.isfinite(image).all()
    assert meta["pixel_spacing"].shape == (2,) and np.all(meta["pixel_spacing"] > 0)


@FUZZ
@given(mutations=header_mutations)
def test_reader_on_mutated_headers_and_pixel_data(tmp_path: Path, mutations: dict[str, bytes]) -> None:
    path = tmp_path / "fuzz.dcm"
    path.write_bytes(_with_header(mutations))
    assert_reader_contract(path)


@FUZZ
@given(
    edits=st.lists(st.tuples(st.integers(0, len(VALID_DICOM) - 1), st.integers(0, 255)), max_size=12),
    cut=st.integers(0, len(VALID_DICOM) + 64),
    tail=st.binary(max_size=64),
)
def test_reader_on_random_byte_edits(tmp_path: Path, edits: list[tuple[int, int]], cut: int, tail: bytes) -> None:
    data = bytearray(VALID_DICOM)
    for offset, value in edits:
        data[offset] = value
    path = tmp_path / "fuzz.dcm"
    path.write_bytes(bytes(data[:cut]) + tail)
    assert_reader_contract(path)


@FUZZ
@given(data=st.binary(max_size=400), prefix=st.booleans())
def test_reader_on_random_files(tmp_path: Path, data: bytes, prefix: bool) -> None:
    path = tmp_path / "fuzz.dcm"
    path.write_bytes((b"\0" * 128 + b"DICM" if prefix else b"") + data)
    assert_reader_contract(path)


# ---- the adapters --------------------------------------------------------------------------------------------------

cells = st.one_of(
    st.just(""),
    st.sampled_from(["MILD", "SEVERE", "severe ", "MODERATE", "001000", "1000", "123321", "0", "1", "nan", "NaN"]),
    st.sampled_from(["1.dcm", "P_A_0001", "../1.dcm", "/etc/hostname", "a\x00b.dcm", "x" * 300, "sub/1.dcm", "."]),
    st.sampled_from(['"', 'a"b', ";" * 20, '"001000";"1"']),  # quoting and separators as a person might type them
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=300),
    st.text(alphabet=st.characters(codec="ascii"), max_size=8),
    st.integers(-(10**12), 10**12).map(str),
)


def assert_adapter_contract(read: Callable[[Path], Any], root: Path) -> None:
    """Every row is a record or a rejection with a reason; only a wholly unreadable sheet may raise."""
    with no_hang():
        try:
            result = read(root)
        except DatasetLayoutError as error:
            assert str(error)
            return
    assert len(result.records) + len(result.rejected) == result.rows_read
    assert all(rejection.reason.split(":", 1)[1].strip() for rejection in result.rejected)
    for record in result.records:
        assert Path(record["image"]).is_file()
        assert record["prognosis"] in (0, 1, None)
        assert record["brixia_zones"] is None or len(record["brixia_zones"]) == 6


def _write_dicom(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(VALID_DICOM)


@ADAPTER_FUZZ
@given(rows=st.lists(st.tuples(cells, cells, cells, cells, cells), min_size=1, max_size=6))
def test_aiforcovid_adapter_on_random_cells(tmp_path_factory: pytest.TempPathFactory, rows: list[tuple]) -> None:
    root = tmp_path_factory.mktemp("aiforcovid")
    _write_dicom(root / "imgs" / "P_A_0001.dcm")
    rows = [tuple(ILLEGAL_CHARACTERS_RE.sub("", cell) for cell in row) for row in rows]  # xlsx cannot hold them
    rows = [(image or "P_A_0001", *rest) if i == 0 else (image, *rest) for i, (image, *rest) in enumerate(rows)]
    pd.DataFrame(rows, columns=["ImageFile", "Hospital", "Prognosis", "Age", "Sex"]).to_excel(
        root / "AIforCOVID.xlsx", index=False
    )
    assert_adapter_contract(read_aiforcovid, root)


@ADAPTER_FUZZ
@given(rows=st.lists(st.tuples(cells, cells, cells, cells, cells), min_size=1, max_size=6), raw_line=cells)
def test_brixia_adapter_on_random_cells(
    tmp_path_factory: pytest.TempPathFactory, rows: list[tuple], raw_line: str
) -> None:
    root = tmp_path_factory.mktemp("brixia")
    _write_dicom(root / "dicom_clean" / "1.dcm")
    columns = ["Filename", "BrixiaScore", "BrixiaScoreGlobal", "ConsensusTestset", "Subject"]
    table = pd.DataFrame(rows, columns=columns)
    table.loc[0, "Filename"] = table.loc[0, "Filename"] or "1.dcm"
    text = table.to_csv(sep=";", index=False) + raw_line + "\n"  # and one line as a person might type it
    (root / "metadata_global_v2.csv").write_text(text, encoding="utf-8")
    assert_adapter_contract(read_brixia, root)


# ---- regression tests: every crash the fuzzing found, fixed ----------------------------------------------------------


@pytest.mark.parametrize(
    ("mutations", "reason"),
    [  # found as OverflowError (2 ** 1024 in the modality range), TypeError (int of a list), BytesLengthException
        ({"BitsStored": struct.pack("<H", 1024)}, "impossible pixel description (BitsAllocated 16, BitsStored 1024"),
        ({"BitsAllocated": struct.pack("<H", 12)}, "BitsAllocated must be one of (8, 16, 32)"),
        ({"PixelRepresentation": struct.pack("<H", 2)}, "PixelRepresentation 0 or 1"),
        ({"Rows": struct.pack("<HH", 20, 20)}, "malformed Rows [20, 20] (one integer expected)"),
        ({"SamplesPerPixel": b"\0" * 5}, "malformed DICOM element (BytesLengthException"),
        ({"NumberOfFrames": b"2\\3 "}, "malformed NumberOfFrames"),
        # found as TypeError / ValueError from undoing GDCM's rescale after pydicom refused a native image
        ({"Rows": struct.pack("<H", 21), "RescaleIntercept": b""}, "malformed RescaleIntercept"),
        ({"Rows": struct.pack("<H", 21), "RescaleIntercept": b":"}, "malformed RescaleIntercept ':'"),
        ({"Rows": struct.pack("<H", 21)}, "cannot decode the pixel data (Explicit VR Little Endian): The number of"),
        # found as a (20, 1, 16) image: pydicom read the surplus pixel data as frames
        ({"Rows": struct.pack("<H", 1)}, "decoded pixel data has shape (20, 1, 16), not the declared"),
    ],
    ids=[
        "bits_stored_1024",
        "bits_allocated_12",
        "pixel_representation_2",
        "two_rows",
        "odd_length_us",
        "two_frames",
        "empty_intercept",
        "text_intercept",
        "short_native_pixel_data",
        "surplus_pixel_data",
    ],
)
def test_regression_malformed_pixel_description(tmp_path: Path, mutations: dict[str, bytes], reason: str) -> None:
    path = tmp_path / "bad.dcm"
    path.write_bytes(_with_header(mutations))
    with pytest.raises(DicomInputError) as excinfo:
        read_cxr(path)
    assert reason in excinfo.value.reason


def test_regression_malformed_file_meta_element(tmp_path: Path) -> None:
    """Found as NotImplementedError (unknown VR) from reading the file meta's MediaStorageSOPClassUID."""
    data = bytearray(VALID_DICOM)
    data[163] = 0  # the VR of the second file meta element becomes b"U\\0"
    path = tmp_path / "bad.dcm"
    path.write_bytes(bytes(data[:166]))
    with pytest.raises(DicomInputError) as excinfo:
        read_cxr(path)
    assert excinfo.value.reason == (
        "malformed DICOM element (NotImplementedError: With tag (0002,0002) got exception: "
        "Unknown Value Representation '0x55 0x00' in tag (0002,0002))"
    )


def test_regression_unusable_path_is_an_input_error(tmp_path: Path) -> None:
    """Found as OSError (name too long) from ``Path.is_file``."""
    with pytest.raises(DicomInputError, match="cannot access the file"):
        read_cxr(tmp_path / ("x" * 300))


@pytest.mark.parametrize(
    ("name", "reason"),
    [  # found as OSError (File name too long) and ValueError (embedded null byte); paths outside were followed
        ("x" * 300, "missing_file: "),
        ("a\0b.dcm", "bad_path: 'a\\x00b.dcm' contains a null character"),
        ("../../outside.dcm", "bad_path: '../../outside.dcm' leads outside the image folder"),
        ("/etc/hostname", "bad_path: '/etc/hostname' leads outside the image folder"),
    ],
    ids=["too_long", "null_byte", "dot_dot", "absolute"],
)
def test_regression_brixia_filename_that_is_no_file_in_the_folder(tmp_path: Path, name: str, reason: str) -> None:
    _write_dicom(tmp_path / "dicom_clean" / "1.dcm")
    row = {"Filename": name, "BrixiaScore": "000000", "BrixiaScoreGlobal": "0", "ConsensusTestset": "0", "Subject": "S"}
    pd.DataFrame([row]).to_csv(tmp_path / "metadata_global_v2.csv", sep=";", index=False)
    result = read_brixia(tmp_path)
    assert not result.records and len(result.rejected) == 1 and result.rejected[0].reason.startswith(reason)


@pytest.mark.parametrize(("name", "reason"), [("x" * 300, "missing_file: "), ("../outside", "bad_path: ")])
def test_regression_aiforcovid_image_file_that_is_no_file_in_the_folder(tmp_path: Path, name: str, reason: str) -> None:
    (tmp_path / "imgs").mkdir()
    pd.DataFrame([{"ImageFile": name, "Hospital": "A", "Prognosis": "MILD"}]).to_excel(
        tmp_path / "AIforCOVID.xlsx", index=False
    )
    result = read_aiforcovid(tmp_path)
    assert not result.records and result.rejected[0].reason.startswith(reason)


def test_regression_multi_valued_voi_lut_function_is_skipped(tmp_path: Path) -> None:
    """Found as AttributeError ('MultiValue' object has no attribute 'upper') inside pydicom's windowing."""
    path = tmp_path / "voi.dcm"
    path.write_bytes(_with_header({"VOILUTFunction": b"\\ "}))
    with pytest.warns(UserWarning, match="ignoring unusable VOI LUT/window"):
        image, _ = read_cxr(path)
    expected = np.arange(320, dtype=np.float32).reshape(20, 16) * 12  # the modality values, window skipped
    np.testing.assert_array_equal(image, expected)


@pytest.mark.parametrize(
    ("text", "reason"),
    [  # found as pandas ParserError / EmptyDataError escaping the adapter
        ('Filename;BrixiaScore;BrixiaScoreGlobal;ConsensusTestset;Subject\n"1.dcm;000000;0;0;S\n', "EOF inside string"),
        (
            "Filename;BrixiaScore;BrixiaScoreGlobal;ConsensusTestset;Subject\n1.dcm;0;0;0;S\n1;0;0;0;S;x\n",
            "line 3, saw 6",
        ),
        # found as TypeError (MultiIndex): a first row longer than the header became an index, shifting the columns
        ("Filename;BrixiaScore;BrixiaScoreGlobal;ConsensusTestset;Subject\n1.dcm;000000;0;0;S;\n", "more cells than"),
        ("", "No columns to parse"),
    ],
    ids=["unclosed_quote", "extra_cells", "trailing_separator_on_first_row", "empty_file"],
)
def test_regression_unparsable_brixia_sheet_is_a_layout_error(tmp_path: Path, text: str, reason: str) -> None:
    _write_dicom(tmp_path / "dicom_clean" / "1.dcm")
    (tmp_path / "metadata_global_v2.csv").write_text(text)
    with pytest.raises(DatasetLayoutError, match=f"metadata_global_v2.csv: cannot be read as a table .*{reason}"):
        read_brixia(tmp_path)
