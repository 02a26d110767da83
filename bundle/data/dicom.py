"""The one DICOM normalisation of the bundle: any chest radiograph file -> (H, W) float32 with air dark.

Training, evaluation, inference, data preparation and the deploy app all read radiographs through :func:`read_cxr`
(directly or as :class:`CXRDicomReader` inside ``LoadImaged``), so the values a network sees do not depend on how a
vendor chose to encode them:

1. the Modality LUT (a Modality LUT Sequence, else RescaleSlope / RescaleIntercept) gives modality values;
2. the first VOI transform (the first VOI LUT Sequence item, else the first window, honouring VOILUTFunction) gives
   display values; one that cannot be applied is skipped with a warning, since it only tunes the display;
3. MONOCHROME1 is inverted within the output range of the last step, so air is dark and the MONOCHROME1 and
   MONOCHROME2 encodings of one image decode to the same values.

Rows stay in stored order (row 0 at the top). Pixel data are decoded by pydicom; compressed pixel data it has no
working plugin for (JPEG Lossless, 12-bit JPEG) go through GDCM by way of SimpleITK. The spacing comes from
PixelSpacing, else from ImagerPixelSpacing corrected by the estimated radiographic magnification, else it is
:data:`FALLBACK_PIXEL_SPACING_MM` with a warning naming the file.

Files are untrusted input: whatever a file gets wrong raises :class:`DicomInputError` with the file and the reason,
never another exception, and the header (image or not, modality, pixel description, declared size) is checked before
any pixel data are decoded. The metadata hold a whitelist of header fields free of patient identifiers.
"""

from __future__ import annotations

import math
import os
import stat
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from monai.config import PathLike
from monai.data import ImageReader
from monai.utils import ImageMetaKey, MetaKeys, ensure_tuple
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing
from pydicom.tag import Tag, tag_in_exception
from pydicom.uid import UID, UncompressedTransferSyntaxes

__all__ = [
    "DICOM_SUFFIXES",
    "FALLBACK_PIXEL_SPACING_MM",
    "MAX_PIXELS",
    "META_TEXT_KEYS",
    "SUPPORTED_MODALITIES",
    "CXRDicomReader",
    "DicomInputError",
    "read_cxr",
    "read_cxr_header",
]

SUPPORTED_MODALITIES: tuple[str, ...] = ("CR", "DX", "DR")
"""``Modality`` values accepted by default: computed and digital radiography. Other images (CT, MR, secondary
captures, segmentations) are refused rather than fed to a network trained on radiographs."""

FALLBACK_PIXEL_SPACING_MM = 0.15
"""Spacing (mm) assumed when a file gives none that is usable: a typical CR/DX detector pitch."""

MAX_PIXELS = 8192 * 8192
"""Largest accepted Rows x Columns: twice the side of the largest chest detectors, so that a corrupt or hostile
header cannot make the reader allocate gigabytes. Checked on the header, before decoding."""

META_TEXT_KEYS: tuple[str, ...] = (
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "PhotometricInterpretation",
    "ViewPosition",
    "Manufacturer",
)
"""Header fields copied into the metadata (as text, ``""`` when absent): none identifies the patient."""

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")
"""File suffixes of DICOM files; files without a suffix or named by a UID are accepted too."""

_BITS_ALLOCATED = (8, 16, 32)
_GREYSCALE = ("MONOCHROME1", "MONOCHROME2")
_DEFER_BYTES = 1 << 16  # larger values (the pixel data) are read from the file only when used: headers stay cheap


class DicomInputError(ValueError):
    """A file that is not a chest radiograph the bundle can read, with the reason.

    A ``ValueError`` because it is bad input, not a bug. ``path`` and ``reason`` are kept apart so that reports put
    them in their own columns; both are the exception's ``args``, so it pickles (DataLoader workers send errors to
    the main process).

    Args:
        path: the file.
        reason: what is wrong with it, in words.
    """

    def __init__(self, path: PathLike, reason: str) -> None:
        super().__init__(str(path), reason)
        self.path = str(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class _PixelDescription:
    """The validated Image Pixel description and rescale of a header."""

    rows: int
    columns: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    monochrome1: bool
    slope: float
    intercept: float

    @property
    def stored_range(self) -> tuple[int, int]:
        """The smallest and largest value BitsStored and PixelRepresentation allow."""
        if self.signed:
            return -(2 ** (self.bits_stored - 1)), 2 ** (self.bits_stored - 1) - 1
        return 0, 2**self.bits_stored - 1

    @property
    def dtype(self) -> np.dtype:
        """The numpy type pydicom decodes these pixels to."""
        return np.dtype(f"{'i' if self.signed else 'u'}{self.bits_allocated // 8}")


def read_cxr(path: PathLike, modalities: Collection[str] = SUPPORTED_MODALITIES) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a chest radiograph DICOM file as an (H, W) float32 image with air dark, and its PHI-free metadata.

    Args:
        path: the DICOM file (any name; DICOM files often have no suffix).
        modalities: accepted ``Modality`` values.

    Returns:
        The image (rows in stored order) and its metadata: :data:`META_TEXT_KEYS`, ``BitsStored``,
        ``pixel_spacing`` (row, column spacing in mm), ``spacing_fallback`` (whether it is
        :data:`FALLBACK_PIXEL_SPACING_MM`), and MONAI's ``affine``, ``original_affine``, ``spatial_shape``,
        ``original_channel_dim`` (NaN: no channel) and ``filename_or_obj``.

    Raises:
        DicomInputError: the file is missing, unreadable, not an image, not a greyscale single-frame radiograph of an
            accepted modality, too large, undecodable, or its pixel values are constant or not finite.

    Warns:
        UserWarning: the spacing fell back to :data:`FALLBACK_PIXEL_SPACING_MM`, or an unusable VOI LUT or window
            was ignored; the message names the file.
    """
    path = os.fspath(path)
    ds, pixels = _read_header(path, modalities)
    stored = _decode(path, ds)
    if stored.shape != (pixels.rows, pixels.columns):
        raise DicomInputError(
            path, f"decoded pixel data has shape {stored.shape}, not the declared {(pixels.rows, pixels.columns)}"
        )
    values, value_range = _modality_values(path, ds, pixels, stored)
    _require_usable_values(path, values, "after the Modality LUT")
    values, value_range = _apply_voi(path, ds, values, value_range)
    if pixels.monochrome1:
        low, high = value_range
        values = low + high - values
    with np.errstate(over="ignore"):
        image = values.astype(np.float32)
    _require_usable_values(path, image, "in float32")
    spacing, spacing_fallback = _pixel_spacing(path, ds)
    return image, _metadata(path, ds, pixels, spacing, spacing_fallback)


def read_cxr_header(path: PathLike, modalities: Collection[str] = SUPPORTED_MODALITIES) -> Dataset:
    """Check a file's header as :func:`read_cxr` does, without decoding (or reading) its pixel data.

    Cheap enough to run on every image of a dataset before a long run; :func:`read_cxr` may still refuse the file
    when its pixel data cannot be decoded or give unusable values.

    Args:
        path: the DICOM file.
        modalities: accepted ``Modality`` values.

    Returns:
        The header (the pixel data are read from the file only if accessed).

    Raises:
        DicomInputError: as :func:`read_cxr`, for every reason that the header alone shows.
    """
    return _read_header(os.fspath(path), modalities)[0]


class CXRDicomReader(ImageReader):
    """MONAI ``ImageReader`` that reads chest radiographs with :func:`read_cxr`, for ``LoadImage``/``LoadImaged``.

    Usable by instance, by dotted name (``reader="bundle.data.dicom.CXRDicomReader"``) or in a config
    (``{_target_: bundle.data.dicom.CXRDicomReader}``). The image has no channel dimension
    (``original_channel_dim`` is NaN), so ``ensure_channel_first=True`` gives (1, H, W); several files are stacked
    on a new first axis.

    ``read`` only collects the paths and ``get_data`` decodes: ``LoadImage`` catches whatever ``read`` raises and
    tries its other readers, which would replace the file's :class:`DicomInputError` by "cannot find a suitable
    reader" (or hand a refused file to a reader that decodes it without normalisation). Raised from ``get_data``, the
    error reaches the caller (inside ``Compose``, as the cause of its ``RuntimeError``).

    Args:
        modalities: accepted ``Modality`` values.
    """

    def __init__(self, modalities: Collection[str] = SUPPORTED_MODALITIES) -> None:
        super().__init__()
        self.modalities = tuple(modalities)

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """Whether every file may be DICOM: a DICOM suffix, no suffix, or a UID-like name such as ``1.2.840.1``."""
        return all(_may_be_dicom(Path(name).name) for name in ensure_tuple(filename))

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> tuple[str, ...]:
        """Collect the file paths; decoding happens in :meth:`get_data` (see the class docstring for why).

        Args:
            data: one file or several.
            kwargs: not supported (the options are the constructor's); accepted by the ``ImageReader`` signature.

        Raises:
            TypeError: options were given.
        """
        if kwargs:
            raise TypeError(f"{type(self).__name__}.read takes no options, got {sorted(kwargs)}")
        return tuple(os.fspath(path) for path in ensure_tuple(data))

    def get_data(self, img: Sequence[str]) -> tuple[np.ndarray, dict[str, Any]]:
        """Decode the files collected by :meth:`read`.

        Returns:
            The (H, W) image of one file, or the (N, H, W) stack of several with the first file's metadata and
            ``original_channel_dim`` 0.

        Raises:
            DicomInputError: a file cannot be read, or its image size differs from the first file's.
        """
        decoded = [read_cxr(path, self.modalities) for path in img]
        if len(decoded) == 1:
            return decoded[0]
        (first, meta), first_path = decoded[0], img[0]
        for (image, _), path in zip(decoded[1:], img[1:], strict=True):
            if image.shape != first.shape:
                raise DicomInputError(path, f"image size {image.shape} differs from {first.shape} of {first_path}")
        return np.stack([image for image, _ in decoded]), {**meta, MetaKeys.ORIGINAL_CHANNEL_DIM: 0}


def _may_be_dicom(name: str) -> bool:
    """Whether a file name fits a DICOM file: DICOM suffix, no suffix, or a UID (all digits and dots)."""
    suffix = Path(name).suffix.lower()
    return suffix in DICOM_SUFFIXES or not suffix or suffix[1:].isdigit()


# ---- the header ---------------------------------------------------------------------------------------------------


def _read_header(path: str, modalities: Collection[str]) -> tuple[Dataset, _PixelDescription]:
    """Open the file and check everything its header says, before any pixel data are decoded."""
    _require_regular_file(path)
    try:
        ds = pydicom.dcmread(path, defer_size=_DEFER_BYTES)
    except Exception as error:  # pydicom parsing arbitrary bytes can raise any type; all mean "unreadable"
        raise DicomInputError(path, f"not a readable DICOM file ({_one_line(error)})") from error
    sop_class = _sop_class_name(path, ds)
    if not any(keyword in ds for keyword in ("PixelData", "Rows", "Columns")):
        raise DicomInputError(path, f"not an image ({sop_class}): no PixelData, Rows or Columns")
    modality = _value(path, ds, "Modality")
    if not isinstance(modality, str) or modality not in modalities:
        accepted = ", ".join(modalities)
        raise DicomInputError(
            path, f"Modality {_shown(modality)} ({sop_class}): not a radiograph (accepted: {accepted})"
        )
    if "PixelData" not in ds:
        raise DicomInputError(path, "no PixelData")
    return ds, _pixel_description(path, ds)


def _require_regular_file(path: str) -> None:
    """Refuse a path that is not a non-empty regular file, with the reason."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        raise DicomInputError(path, "file not found") from None
    except (OSError, ValueError) as error:  # a name too long, a null character, no permission
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise DicomInputError(path, f"cannot access the file ({reason})") from error
    if not stat.S_ISREG(status.st_mode):
        raise DicomInputError(path, "not a regular file")
    if status.st_size == 0:
        raise DicomInputError(path, "empty file (0 bytes)")


def _sop_class_name(path: str, ds: Dataset) -> str:
    """The SOP class name for messages, from SOPClassUID or else the file meta's MediaStorageSOPClassUID."""
    uid = _value(path, ds, "SOPClassUID") or _value(path, ds.file_meta, "MediaStorageSOPClassUID")
    if not isinstance(uid, str) or not uid:
        return "unknown SOP class"
    name = UID(uid).name
    return name if name != uid else f"unknown SOP class {uid!r}"


def _pixel_description(path: str, ds: Dataset) -> _PixelDescription:
    """Validate the Image Pixel module and the rescale: greyscale, single frame, sane size and bit depths."""
    samples = _integer(path, ds, "SamplesPerPixel")
    photometric = _value(path, ds, "PhotometricInterpretation")
    if samples != 1 or photometric not in _GREYSCALE:
        raise DicomInputError(
            path,
            f"not a greyscale image (PhotometricInterpretation {_shown(photometric)}, SamplesPerPixel {samples})",
        )
    frames = _integer(path, ds, "NumberOfFrames") if "NumberOfFrames" in ds else 1
    if frames < 1:
        raise DicomInputError(path, f"malformed NumberOfFrames {frames} (at least 1 expected)")
    if frames > 1:
        raise DicomInputError(path, f"multi-frame image ({frames} frames)")
    rows, columns = _integer(path, ds, "Rows"), _integer(path, ds, "Columns")
    if rows < 1 or columns < 1:
        raise DicomInputError(path, f"empty image (Rows {rows}, Columns {columns})")
    if rows * columns > MAX_PIXELS:
        raise DicomInputError(path, f"declared size {rows} x {columns} exceeds the limit of {MAX_PIXELS} pixels")
    allocated, stored = _integer(path, ds, "BitsAllocated"), _integer(path, ds, "BitsStored")
    representation = _integer(path, ds, "PixelRepresentation")
    problem = ""
    if allocated not in _BITS_ALLOCATED:
        problem = f"BitsAllocated must be one of {_BITS_ALLOCATED}"
    elif not 1 <= stored <= allocated:
        problem = "BitsStored must be 1 to BitsAllocated"
    elif representation not in (0, 1):
        problem = "PixelRepresentation 0 or 1 (unsigned or signed) expected"
    if problem:
        description = f"BitsAllocated {allocated}, BitsStored {stored}, PixelRepresentation {representation}"
        raise DicomInputError(path, f"impossible pixel description ({description}): {problem}")
    slope, intercept = _number(path, ds, "RescaleSlope"), _number(path, ds, "RescaleIntercept")
    if slope == 0:
        raise DicomInputError(path, f"RescaleSlope {slope} maps every pixel to one value")
    return _PixelDescription(
        rows=rows,
        columns=columns,
        bits_allocated=allocated,
        bits_stored=stored,
        signed=representation == 1,
        monochrome1=photometric == "MONOCHROME1",
        slope=1.0 if slope is None else slope,
        intercept=0.0 if intercept is None else intercept,
    )


def _value(path: str, dataset: Dataset, keyword: str) -> Any:
    """The value of an element (None when absent), parsed here so that a malformed element is an input error."""
    if keyword not in dataset:
        return None
    try:
        with tag_in_exception(Tag(keyword)):
            return dataset[keyword].value
    except Exception as error:  # pydicom converting raw bytes: any type, all mean "malformed"
        message = str(error).split("\n", 1)[0]  # tag_in_exception appends the traceback
        raise DicomInputError(path, f"malformed DICOM element ({type(error).__name__}: {message})") from error


def _integer(path: str, ds: Dataset, keyword: str) -> int:
    """A required element holding exactly one integer."""
    if keyword not in ds:
        raise DicomInputError(path, f"no {keyword}")
    value = _value(path, ds, keyword)
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    raise DicomInputError(path, f"malformed {keyword} {_shown(value)} (one integer expected)")


def _number(path: str, ds: Dataset, keyword: str) -> float | None:
    """An optional element holding exactly one finite number (None when absent)."""
    if keyword not in ds:
        return None
    value = _value(path, ds, keyword)
    number = _as_finite_float(value)
    if number is None:
        raise DicomInputError(path, f"malformed {keyword} {_shown(value)} (one finite number expected)")
    return number


def _as_finite_float(value: Any) -> float | None:
    """``value`` as a finite float, or None when it is not exactly one finite number."""
    if not isinstance(value, (str, int, float)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _shown(value: Any) -> str:
    """An element value as a message shows it: text quoted, an empty value as ``''``, several values as a list."""
    if value is None:
        return "''"
    if isinstance(value, (MultiValue, list)):
        return f"[{', '.join(_shown(item) for item in value)}]"
    return repr(str(value)) if isinstance(value, str) else str(value)


def _one_line(error: BaseException) -> str:
    """An exception's message on one line (reports and CSV rows hold one line per file)."""
    return " ".join(str(error).split())


# ---- the pixels ---------------------------------------------------------------------------------------------------


def _decode(path: str, ds: Dataset) -> np.ndarray:
    """The stored values: pydicom first, then GDCM for compressed pixel data that pydicom cannot decode.

    Native (uncompressed) pixel data that pydicom refuses are wrong, not merely in a missing codec, so they get no
    second decoder that might read them leniently.
    """
    syntax = _value(path, ds.file_meta, "TransferSyntaxUID")
    known = isinstance(syntax, str) and bool(syntax)
    compressed = known and syntax not in UncompressedTransferSyntaxes
    reason = f"cannot decode the pixel data ({UID(syntax).name if known else 'no transfer syntax'})"
    try:
        return ds.pixel_array
    except Exception as error:  # decoders raise many types on corrupt or unsupported data
        if not compressed:
            raise DicomInputError(path, f"{reason}: {_one_line(error)}") from error
        try:
            return _decode_with_simpleitk(path, ds)
        except Exception as fallback_error:
            raise DicomInputError(
                path, f"{reason}: {_one_line(error)}; SimpleITK: {_one_line(fallback_error)}"
            ) from fallback_error


def _decode_with_simpleitk(path: PathLike, ds: Dataset) -> np.ndarray:
    """The stored values as GDCM (through SimpleITK) decodes them, for the codecs pydicom has no plugin for.

    GDCM applies RescaleSlope / RescaleIntercept and inverts MONOCHROME1 within the stored range as it reads; both
    are undone here, so the result equals what pydicom's ``pixel_array`` gives and the rest of the normalisation is
    shared.

    Args:
        path: the file.
        ds: its header.

    Returns:
        The (Rows, Columns) stored values, in pydicom's data type.
    """
    pixels = _pixel_description(os.fspath(path), ds)
    values = sitk.GetArrayFromImage(sitk.ReadImage(os.fspath(path), sitk.sitkFloat64, imageIO="GDCMImageIO"))
    if values.ndim == 3 and values.shape[0] == 1:  # GDCM reads a single frame as a volume of one slice
        values = values[0]
    values = (values - pixels.intercept) / pixels.slope
    if pixels.monochrome1:
        low, high = pixels.stored_range
        values = low + high - values
    return np.rint(values).astype(pixels.dtype)


def _modality_values(
    path: str, ds: Dataset, pixels: _PixelDescription, stored: np.ndarray
) -> tuple[np.ndarray, tuple[float, float]]:
    """Modality values (float64) and their nominal range, which the window and MONOCHROME1 inversion refer to."""
    if _value(path, ds, "ModalityLUTSequence"):
        try:
            values = apply_modality_lut(stored, ds).astype(np.float64)
            depth = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
            return values, (0.0, float(2**depth - 1))
        except Exception as error:  # pydicom applying an untrusted LUT
            reason = f"unusable Modality LUT Sequence ({type(error).__name__}: {_one_line(error)})"
            raise DicomInputError(path, reason) from error
    low, high = pixels.stored_range
    with np.errstate(over="ignore", invalid="ignore"):
        values = stored * pixels.slope + pixels.intercept
    ends = sorted((low * pixels.slope + pixels.intercept, high * pixels.slope + pixels.intercept))
    return values, (ends[0], ends[1])


def _apply_voi(
    path: str, ds: Dataset, values: np.ndarray, value_range: tuple[float, float]
) -> tuple[np.ndarray, tuple[float, float]]:
    """The first VOI transform and its output range; the values unchanged, with a warning, when it is unusable.

    A VOI LUT Sequence wins over a window, as in the standard. A VOI transform only chooses the displayed range,
    so one that fails, or maps every pixel to one value, is skipped rather than the file refused.
    """
    try:
        with np.errstate(all="ignore"):
            if ds.get("VOILUTSequence"):
                lut = ds.VOILUTSequence[0]
                output = apply_voi(np.rint(values).astype(np.int64), ds, index=0).astype(np.float64)
                output_range = (0.0, float(2 ** int(lut.LUTDescriptor[2]) - 1))
            elif "WindowCenter" in ds or "WindowWidth" in ds:
                output, output_range = apply_windowing(values, ds, index=0), value_range
            else:
                return values, value_range
    except Exception as error:  # pydicom applying untrusted VOI parameters
        problem = f"{type(error).__name__}: {_one_line(error)}"
    else:
        if not np.isfinite(output).all():
            problem = "it gives non-finite values"
        elif output.min() == output.max():
            problem = f"it maps every pixel to {output.min():g}"
        else:
            return output, output_range
    warnings.warn(f"{path}: ignoring unusable VOI LUT/window ({problem})", UserWarning, stacklevel=3)
    return values, value_range


def _require_usable_values(path: str, values: np.ndarray, stage: str) -> None:
    """Refuse pixel values that are not all finite, or all the same (an image with nothing to see)."""
    if not np.isfinite(values).all():
        raise DicomInputError(path, f"non-finite pixel values {stage}")
    if values.min() == values.max():
        raise DicomInputError(path, f"constant image (every pixel {values.min():g} {stage})")


# ---- spacing and metadata -----------------------------------------------------------------------------------------


def _pixel_spacing(path: str, ds: Dataset) -> tuple[np.ndarray, bool]:
    """(row, column) spacing in mm and whether it is the fallback.

    PixelSpacing is in the patient plane; ImagerPixelSpacing is at the detector, so it is divided by
    EstimatedRadiographicMagnificationFactor when that is a positive number. Zero, negative, malformed or missing
    values are skipped; with neither usable, :data:`FALLBACK_PIXEL_SPACING_MM` is assumed and a warning says so.
    """
    problems = []
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = _value(path, ds, keyword)
        numbers = [_as_finite_float(item) for item in value] if isinstance(value, MultiValue) else []
        if len(numbers) == 2 and all(number is not None and number > 0 for number in numbers):
            spacing = np.array(numbers, dtype=np.float64)
            if keyword == "ImagerPixelSpacing":
                magnification = _as_finite_float(_value(path, ds, "EstimatedRadiographicMagnificationFactor"))
                spacing /= magnification if magnification is not None and magnification > 0 else 1.0
            return spacing, False
        problems.append(f"{keyword} {_shown(value)}" if keyword in ds else f"no {keyword}")
    warnings.warn(
        f"{path}: no usable pixel spacing ({', '.join(problems)}); assuming {FALLBACK_PIXEL_SPACING_MM} mm",
        UserWarning,
        stacklevel=3,
    )
    return np.full(2, FALLBACK_PIXEL_SPACING_MM), True


def _metadata(
    path: str, ds: Dataset, pixels: _PixelDescription, spacing: np.ndarray, spacing_fallback: bool
) -> dict[str, Any]:
    """The whitelisted header fields and MONAI's image keys: nothing that identifies the patient."""
    meta: dict[str, Any] = {keyword: _text(_value(path, ds, keyword)) for keyword in META_TEXT_KEYS}
    affine = np.diag([*spacing, 1.0])
    meta.update(
        {
            "BitsStored": pixels.bits_stored,
            "pixel_spacing": spacing,
            "spacing_fallback": spacing_fallback,
            MetaKeys.AFFINE: affine,
            MetaKeys.ORIGINAL_AFFINE: affine.copy(),
            MetaKeys.SPATIAL_SHAPE: np.array([pixels.rows, pixels.columns]),
            MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan"),
            ImageMetaKey.FILENAME_OR_OBJ: path,
        }
    )
    return meta


def _text(value: Any) -> str:
    """A header value as plain text (collatable by MONAI): ``""`` when absent, values joined by a backslash."""
    if value is None:
        return ""
    if isinstance(value, MultiValue):
        return "\\".join(str(item) for item in value)
    return str(value)
