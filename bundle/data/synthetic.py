"""Synthetic AIforCOVID-like and BRIXIA-like demo datasets: phantom radiographs written as DICOM in the real layouts.

Real data cannot be shipped, yet every part of the bundle (adapters, DICOM reader, lung crop, training, evaluation,
inference) must run on the demo. The generator therefore writes both datasets exactly in their published layouts
(see ``docs/architecture.md``), so the same adapters read them, and it reproduces what makes real multi-centre data
hard:

- acquisition differs per centre and manufacturer (:data:`MANUFACTURER_PROTOCOLS`): CR and DX, MONOCHROME1 and
  MONOCHROME2, BitsStored 10-16, rescale slope/intercept, windows and VOI LUT sequences, PixelSpacing or only
  ImagerPixelSpacing, PixelSpacing 0 or missing, and the detector's contrast (gamma), noise and blur, so that the
  centre shift is real and every decoding path of the reader is exercised;
- prognosis is not a function of the image: ``P(SEVERE) = logistic(image-visible severity, age, a hidden clinical
  factor)``, and the label is drawn from it; the oracle AUC of the image-visible severity alone is reported;
- the clinical sheet has missing values, BRIXIA subjects have follow-up studies, Brixia scores keep leading zeros.

Each case's latent variables go to ``synthetic/latents.csv`` and its exact lung mask to ``synthetic/masks/``, never
into the files the adapters read. Identifiers are synthetic (``SYNTH^...``) and UIDs derive from the case, so the
same seed and size give byte-identical DICOM files whatever the number of worker processes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import date, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from scipy import ndimage
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from bundle.data.phantom import Anatomy, make_phantom, sample_anatomy

__all__ = [
    "CR_IMAGE_STORAGE",
    "DEMO_SIZES",
    "DX_IMAGE_STORAGE_FOR_PRESENTATION",
    "GENERATED_MARKER",
    "MANUFACTURER_PROTOCOLS",
    "Acquisition",
    "DemoSize",
    "acquisition_variants",
    "generate_demo_data",
    "simulate_detector",
    "write_cxr_dicom",
]

CR_IMAGE_STORAGE = pydicom.uid.ComputedRadiographyImageStorage
DX_IMAGE_STORAGE_FOR_PRESENTATION = pydicom.uid.DigitalXRayImageStorageForPresentation

#: File written in the output folder once both datasets are complete; its presence means "nothing to generate".
GENERATED_MARKER = "demo_generated.json"

#: Where the generator keeps what the adapters must never read (latent variables, ground-truth lung masks).
SIDECAR = "synthetic"

_SPACINGS = ("pixel", "imager", "zero", "missing")
_STORED_RANGE = (0.04, 0.96)  # the image spans this part of the stored range: headroom as a real detector keeps
_VOI_LUT_BITS = 16
_DETECTOR_WIDTH_MM = 430.0  # a 43 cm detector: the pixel spacing follows from the image size
_ZONE_COLUMNS = tuple(f"zone_{zone}" for zone in "ABCDEF")


@dataclass(frozen=True)
class Acquisition:
    """How one device encodes a radiograph: the DICOM attributes that decoding depends on, and its detector.

    Attributes:
        modality: ``"CR"`` (Computed Radiography Image Storage) or ``"DX"`` (Digital X-Ray, For Presentation).
        manufacturer: written as Manufacturer.
        photometric: ``"MONOCHROME1"`` (air bright in the stored values) or ``"MONOCHROME2"`` (air dark).
        bits_stored: 10-16 (BitsAllocated is always 16, unsigned).
        rescale_slope: RescaleSlope; DX For Presentation requires 1.
        rescale_intercept: RescaleIntercept; DX For Presentation requires 0.
        window: ``(centre, width)`` of a linear VOI window as fractions of the image's modality-value range
            (0 = its lowest value, 1 = its highest), or None. It must contain the whole range (``centre - width / 2
            <= 0`` and ``centre + width / 2 >= 1``): the demo never clips what the phantom draws.
        voi_lut: write a monotonic VOI LUT Sequence (an S-shaped film curve); needs the identity rescale, because
            a VOI LUT is indexed by integer modality values.
        spacing: ``"pixel"`` (PixelSpacing), ``"imager"`` (only ImagerPixelSpacing), ``"zero"`` (PixelSpacing
            ``0\\0``) or ``"missing"`` (neither).
        gamma: detector response exponent applied to the radiograph (contrast).
        noise: standard deviation of the detector noise at mid grey, in image units (0-1).
        blur: standard deviation of the detector's Gaussian unsharpness, in pixels of the image it is applied to.

    Raises:
        ValueError: on any value outside those above.
    """

    modality: str = "DX"
    manufacturer: str = "SYNTH"
    photometric: str = "MONOCHROME2"
    bits_stored: int = 12
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    window: tuple[float, float] | None = None
    voi_lut: bool = False
    spacing: str = "pixel"
    gamma: float = 1.0
    noise: float = 0.01
    blur: float = 0.5

    def __post_init__(self) -> None:
        problems = []
        if self.modality not in ("CR", "DX"):
            problems.append(f"modality must be CR or DX, got {self.modality!r}")
        if self.photometric not in ("MONOCHROME1", "MONOCHROME2"):
            problems.append(f"photometric must be MONOCHROME1 or MONOCHROME2, got {self.photometric!r}")
        if not (isinstance(self.bits_stored, int) and 10 <= self.bits_stored <= 16):
            problems.append(f"bits_stored must be an integer 10-16, got {self.bits_stored!r}")
        if self.spacing not in _SPACINGS:
            problems.append(f"spacing must be one of {_SPACINGS}, got {self.spacing!r}")
        if not self.rescale_slope > 0:
            problems.append(f"rescale_slope must be positive, got {self.rescale_slope}")
        if self.modality == "DX" and (self.rescale_slope != 1 or self.rescale_intercept != 0):
            problems.append("DX For Presentation requires RescaleSlope 1 and RescaleIntercept 0")
        if self.voi_lut and (self.rescale_slope != 1 or self.rescale_intercept != 0):
            problems.append("a VOI LUT needs the identity rescale (it is indexed by integer modality values)")
        if self.window is not None:
            centre, width = self.window
            if not (centre - width / 2 <= 0 and centre + width / 2 >= 1):
                problems.append(f"window {self.window} must contain the whole range [0, 1] of the image")
        if not (self.gamma > 0 and self.noise >= 0 and self.blur >= 0):
            problems.append(
                f"gamma must be positive, noise and blur non-negative: {self.gamma}, {self.noise}, {self.blur}"
            )
        if problems:
            raise ValueError("invalid Acquisition: " + "; ".join(problems))

    @property
    def decode_key(self) -> tuple:
        """The attributes a DICOM reader must handle differently; the detector and manufacturer are not among them."""
        return (
            self.modality,
            self.photometric,
            self.bits_stored,
            self.rescale_slope,
            self.rescale_intercept,
            self.window,
            self.voi_lut,
            self.spacing,
        )

    @property
    def sop_class_uid(self) -> str:
        """SOP Class UID of the modality."""
        return CR_IMAGE_STORAGE if self.modality == "CR" else DX_IMAGE_STORAGE_FOR_PRESENTATION


#: Fictional manufacturers and their protocols (two devices each). Together they cover every decoding case the
#: reader must handle, and their detectors differ in contrast, noise and blur. The blur is in pixels of a 512-pixel
#: image; the demo generator scales it with the size of the image it renders.
# fmt: off
MANUFACTURER_PROTOCOLS: dict[str, tuple[Acquisition, ...]] = {
    "Borealis Medical": (
        Acquisition("CR", "Borealis Medical", "MONOCHROME1", 12, window=(0.5, 1.1),
                    gamma=0.9, noise=0.012, blur=0.8),
        Acquisition("DX", "Borealis Medical", "MONOCHROME2", 14, spacing="imager",
                    gamma=1.1, noise=0.008, blur=0.5),
    ),
    "Meridian Imaging": (
        Acquisition("CR", "Meridian Imaging", "MONOCHROME1", 10, rescale_slope=2.0, rescale_intercept=-100.0,
                    spacing="zero", gamma=1.25, noise=0.02, blur=1.2),
        Acquisition("DX", "Meridian Imaging", "MONOCHROME2", 12, voi_lut=True,
                    gamma=1.0, noise=0.01, blur=0.6),
    ),
    "Halcyon Systems": (
        Acquisition("DX", "Halcyon Systems", "MONOCHROME2", 16, window=(0.5, 1.05), voi_lut=True, spacing="imager",
                    gamma=0.85, noise=0.006, blur=0.4),
        Acquisition("CR", "Halcyon Systems", "MONOCHROME2", 15, rescale_slope=0.5, rescale_intercept=1024.0,
                    spacing="missing", gamma=1.15, noise=0.015, blur=1.0),
    ),
    "Aurora Diagnostics": (
        Acquisition("CR", "Aurora Diagnostics", "MONOCHROME1", 13, rescale_intercept=-4096.0, window=(0.45, 1.2),
                    gamma=1.35, noise=0.025, blur=1.5),
        Acquisition("DX", "Aurora Diagnostics", "MONOCHROME1", 16, voi_lut=True,
                    gamma=0.95, noise=0.009, blur=0.5),
    ),
}
# fmt: on


def acquisition_variants() -> list[Acquisition]:
    """Every distinct encoding the generator writes (one acquisition per :attr:`Acquisition.decode_key`).

    Tests decode each of them; the list spans both photometric interpretations, CR and DX, every spacing case,
    several bit depths, rescaled values, windows, VOI LUTs and both together.
    """
    variants: dict[tuple, Acquisition] = {}
    for protocols in MANUFACTURER_PROTOCOLS.values():
        for acquisition in protocols:
            variants.setdefault(acquisition.decode_key, acquisition)
    return list(variants.values())


def simulate_detector(image: np.ndarray, acquisition: Acquisition, rng: np.random.Generator) -> np.ndarray:
    """What a detector makes of a phantom: unsharpness, response curve (contrast) and quantum noise.

    Noise grows with the square root of the signal (more photons absorbed, more quanta), scaled so that
    ``acquisition.noise`` is its standard deviation at mid grey.

    Args:
        image: air-dark radiograph in [0, 1] ``(H, W)``, e.g. from :func:`bundle.data.phantom.make_phantom`.
        acquisition: gives ``blur`` (pixels), ``gamma`` and ``noise``.
        rng: random generator of the noise.

    Returns:
        ``(H, W)`` float32 in [0, 1], air dark.
    """
    detected = np.asarray(image, dtype=np.float32)
    if acquisition.blur > 0:
        detected = ndimage.gaussian_filter(detected, acquisition.blur, mode="nearest")
    detected = np.clip(detected, 0.0, 1.0) ** acquisition.gamma
    if acquisition.noise > 0:
        scale = acquisition.noise * np.sqrt(np.maximum(detected, 0.02) / 0.5)
        detected = detected + scale * rng.standard_normal(detected.shape, dtype=np.float32)
    return np.clip(detected, 0.0, 1.0).astype(np.float32)


def _stored_values(image: np.ndarray, acquisition: Acquisition) -> np.ndarray:
    """Linear encoding of an air-dark image into the stored range; MONOCHROME1 stores air bright."""
    top = 2**acquisition.bits_stored - 1
    low, high = _STORED_RANGE[0] * top, _STORED_RANGE[1] * top
    if acquisition.photometric == "MONOCHROME1":
        low, high = high, low
    return np.rint(low + image * (high - low)).astype(np.uint16)


def _voi_lut_item(first: int, last: int) -> Dataset:
    """A VOI LUT mapping modality values ``first..last`` through a monotonic S-shaped (film-like) curve."""
    position = np.linspace(-1.0, 1.0, last - first + 1)
    curve = (np.tanh(1.2 * position) / np.tanh(1.2) + 1) / 2
    item = Dataset()
    entries = last - first + 1
    item.LUTDescriptor = [entries if entries < 65536 else 0, first, _VOI_LUT_BITS]
    item.LUTExplanation = "SYNTHETIC FILM CURVE"
    item.add_new("LUTData", "OW", np.rint(curve * (2**_VOI_LUT_BITS - 1)).astype("<u2").tobytes())
    return item


def _format_ds(value: float) -> str:
    """A Decimal String of at most 16 characters."""
    return f"{value:.6g}"


def write_cxr_dicom(
    path: str | os.PathLike[str],
    image: np.ndarray,
    acquisition: Acquisition,
    *,
    patient_name: str,
    patient_id: str,
    pixel_spacing_mm: tuple[float, float],
    uid_key: str,
    accession_number: str = "",
    patient_birth_date: str = "",
    patient_sex: str = "",
    patient_age: int | None = None,
    study_date: str = "20200315",
    view_position: str = "PA",
    institution_name: str = "",
) -> Path:
    """Write an air-dark image in [0, 1] as a valid CR or DX chest radiograph DICOM file.

    The stored values are a linear function of the image (air dark after the modality LUT and the photometric
    interpretation), so any correct reader recovers the image up to a monotonic function. Nothing depends on the
    clock: UIDs derive from ``uid_key`` and dates are given, so the same arguments give the same bytes.

    Args:
        path: output file.
        image: ``(H, W)`` air-dark image, values in [0, 1].
        acquisition: the device's encoding.
        patient_name: PatientName (synthetic, e.g. ``SYNTH^AB1234``).
        patient_id: PatientID.
        pixel_spacing_mm: ``(row, column)`` spacing written as the acquisition's spacing case asks.
        uid_key: a key unique to this image; Study, Series and SOP Instance UIDs are derived from it.
        accession_number: AccessionNumber.
        patient_birth_date: PatientBirthDate ``YYYYMMDD``.
        patient_sex: PatientSex (``M``, ``F`` or empty).
        patient_age: PatientAge in years, or None to leave it out.
        study_date: StudyDate ``YYYYMMDD`` (also the series, content and acquisition date).
        view_position: ViewPosition (``PA``, ``AP``, ``LL`` ...).
        institution_name: InstitutionName.

    Returns:
        The path written.

    Raises:
        ValueError: if the image is not 2D, not finite or outside [0, 1].
    """
    image = np.asarray(image)
    if image.ndim != 2 or not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
        raise ValueError(f"{path}: image must be a finite 2D array in [0, 1], got shape {image.shape}.")
    path = Path(path)
    stored = _stored_values(image, acquisition)
    sop_uid = generate_uid(entropy_srcs=[uid_key, "instance"])

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = acquisition.sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = acquisition.sop_class_uid
    ds.SOPInstanceUID = sop_uid
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "093000"
    ds.AccessionNumber = accession_number
    ds.Modality = acquisition.modality
    ds.Manufacturer = acquisition.manufacturer
    ds.InstitutionName = institution_name
    ds.ReferringPhysicianName = ""
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = patient_birth_date
    ds.PatientSex = patient_sex
    if patient_age is not None:
        ds.PatientAge = f"{int(patient_age):03d}Y"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view_position
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[uid_key, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[uid_key, "series"])
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ["L", "F"]  # columns towards the patient's left, rows towards the feet
    if acquisition.modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImageLaterality = "U"
        ds.DetectorType = "SCINTILLATOR"
        ds.PixelIntensityRelationship = "LIN"
        # +1: lower stored values mean less beam intensity (air, most intensity, is stored bright in MONOCHROME1)
        ds.PixelIntensityRelationshipSign = 1 if acquisition.photometric == "MONOCHROME1" else -1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = acquisition.photometric
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = acquisition.bits_stored
    ds.HighBit = acquisition.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.RescaleSlope = _format_ds(acquisition.rescale_slope)
    ds.RescaleIntercept = _format_ds(acquisition.rescale_intercept)
    ds.RescaleType = "US"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    spacing = [_format_ds(s) for s in pixel_spacing_mm]
    if acquisition.spacing == "pixel":
        ds.PixelSpacing = spacing
    elif acquisition.spacing == "imager":
        ds.ImagerPixelSpacing = spacing
    elif acquisition.spacing == "zero":
        ds.PixelSpacing = ["0", "0"]

    top = 2**acquisition.bits_stored - 1
    first, last = round(_STORED_RANGE[0] * top), round(_STORED_RANGE[1] * top)
    modality_range = [v * acquisition.rescale_slope + acquisition.rescale_intercept for v in (first, last)]
    if acquisition.window is not None:
        centre, width = acquisition.window
        span = modality_range[1] - modality_range[0]
        ds.WindowCenter = _format_ds(modality_range[0] + centre * span)
        ds.WindowWidth = _format_ds(width * span)
    if acquisition.voi_lut:
        ds.VOILUTSequence = [_voi_lut_item(int(modality_range[0]), int(modality_range[1]))]
    ds.PixelData = stored.astype("<u2").tobytes()

    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


# ---- the demo datasets ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoSize:
    """How much data a demo size holds.

    Attributes:
        aiforcovid: number of AIforCOVID patients (one image each).
        brixia: number of BRIXIA images.
        long_side: range of the images' long side in pixels (the short side is 78-95% of it).
        workers: default number of rendering processes.
    """

    aiforcovid: int
    brixia: int
    long_side: tuple[int, int]
    workers: int


DEMO_SIZES: dict[str, DemoSize] = {
    "tiny": DemoSize(24, 48, (160, 256), workers=1),
    "small": DemoSize(120, 360, (512, 768), workers=2),
    "default": DemoSize(200, 600, (1000, 2000), workers=2),
}

#: Real centre sizes of AIforCOVID releases 1-3 (methods.md section 2): the synthetic centres keep these shares.
AIFORCOVID_CENTRES: dict[str, int] = {"A": 120, "B": 104, "C": 151, "D": 139, "E": 101, "F": 970}

#: The device of each AIforCOVID centre and of the BRIXIA hospital's rooms: ``(manufacturer, protocol index)``.
CENTRE_DEVICES: dict[str, tuple[str, int]] = {
    "A": ("Borealis Medical", 0),
    "B": ("Meridian Imaging", 0),
    "C": ("Halcyon Systems", 1),
    "D": ("Aurora Diagnostics", 0),
    "E": ("Meridian Imaging", 1),
    "F": ("Halcyon Systems", 0),
}
BRIXIA_DEVICES: tuple[tuple[str, int], ...] = (
    ("Borealis Medical", 1),
    ("Aurora Diagnostics", 1),
    ("Halcyon Systems", 0),
    ("Meridian Imaging", 0),
)

# Latent model. Centres differ in case mix (severity offset) and in how often labs are missing.
_CENTRE_SEVERITY = {"A": 0.05, "B": -0.05, "C": 0.1, "D": 0.0, "E": -0.1, "F": 0.0}
_CENTRE_MISSING = {"A": 0.12, "B": 0.2, "C": 0.1, "D": 0.25, "E": 0.15, "F": 0.08}
_ZONE_BIAS = np.array([-0.5, 0.0, 0.35, -0.5, 0.0, 0.35])  # COVID pneumonia favours the lower zones
_ZONE_NOISE = 0.55
# P(SEVERE) = logistic(intercept + b_visible * z(visible severity) + b_age * (age - 65) / 10 + b_hidden * hidden).
_PROGNOSIS = {"intercept": -0.25, "visible": 1.6, "age": 0.45, "hidden": 0.8}
_COMORBIDITIES = ("Hypertension", "Diabetes", "Cardiovascular_Disease")
_STUDY_PERIOD = (date(2020, 3, 1), 420)  # first study date and the span in days
_TOKEN_ALPHABET = np.array(list("ABCDEFGHJKLMNPQRSTUVWXYZ23456789"))


@dataclass(frozen=True)
class _Case:
    """Everything needed to render and write one image; picklable for the worker processes."""

    dicom: str  # relative to the output root
    mask: str
    seed: tuple[int, ...]
    shape: tuple[int, int]
    zones: tuple[int, ...]
    anatomy: Anatomy
    acquisition: Acquisition
    header: dict[str, Any]


def _largest_remainder(weights: Mapping[str, float], total: int, minimum: int) -> dict[str, int]:
    """Split ``total`` in proportion to ``weights`` (Hamilton's method), at least ``minimum`` each."""
    counts = {key: minimum for key in weights}
    rest = total - minimum * len(weights)
    share = {key: rest * weight / sum(weights.values()) for key, weight in weights.items()}
    for key in weights:
        counts[key] += int(share[key])
    order = sorted(weights, key=lambda key: share[key] - int(share[key]), reverse=True)
    for key in order[: total - sum(counts.values())]:
        counts[key] += 1
    return counts


def _zone_scores(rng: np.random.Generator, severity: float) -> tuple[int, ...]:
    """Six Brixia zone scores 0-3 around ``3 * severity``, lower zones more involved."""
    level = 3 * severity + _ZONE_BIAS + rng.normal(0.0, _ZONE_NOISE, 6) + rng.normal(0.0, 0.25) * np.repeat([1, -1], 3)
    return tuple(int(score) for score in np.clip(np.rint(level), 0, 3))


def _token(rng: np.random.Generator, used: set[str]) -> str:
    """A fresh random identifier token (never reused within a dataset)."""
    while (token := "".join(rng.choice(_TOKEN_ALPHABET, 6))) in used:
        pass
    used.add(token)
    return token


def _shape(rng: np.random.Generator, long_side: tuple[int, int], portrait: float) -> tuple[int, int]:
    """A non-square ``(height, width)``: long side in range, short side 78-95% of it, portrait with probability."""
    long = int(rng.integers(long_side[0], long_side[1] + 1))
    short = int(round(long * rng.uniform(0.78, 0.95)))
    return (long, short) if rng.random() < portrait else (short, long)


def _detector(protocol: Acquisition, shape: tuple[int, int]) -> Acquisition:
    """The protocol's detector at this image size: its blur is given for a 512-pixel long side."""
    return replace(protocol, blur=protocol.blur * max(shape) / 512)


def _header(
    rng: np.random.Generator, token: str, age: float, sex: str | None, study_day: int, institution: str, key: str
) -> dict[str, Any]:
    """Synthetic DICOM identifiers and demographics of one study."""
    study = _STUDY_PERIOD[0] + timedelta(days=study_day)
    birth = study - timedelta(days=int(age * 365.25 + rng.integers(0, 365)))
    return {
        "patient_name": f"SYNTH^{token}",
        "patient_id": f"SYNTH-{token}",
        "patient_birth_date": birth.strftime("%Y%m%d"),
        "patient_sex": sex or "",
        "patient_age": int(age),
        "study_date": study.strftime("%Y%m%d"),
        "accession_number": f"SYNTH{token}{study_day:03d}",
        "view_position": "PA" if rng.random() < 0.6 else "AP",
        "institution_name": institution,
        "uid_key": key,
    }


def _plan_aiforcovid(seed: int, size: DemoSize) -> tuple[list[_Case], pd.DataFrame, pd.DataFrame]:
    """Cases, clinical sheet and latents of the AIforCOVID-like set."""
    rng = np.random.default_rng([seed, 1])
    counts = _largest_remainder(AIFORCOVID_CENTRES, size.aiforcovid, minimum=2)
    cases, sheet, latents, used = [], [], [], set()
    for centre, count in counts.items():
        manufacturer, index = CENTRE_DEVICES[centre]
        protocol = MANUFACTURER_PROTOCOLS[manufacturer][index]
        for number in range(1, count + 1):
            name = f"P_{centre}_{number:04d}"
            severity = float(np.clip(rng.beta(2.0, 2.6) + _CENTRE_SEVERITY[centre], 0.0, 1.0))
            zones = _zone_scores(rng, severity)
            visible = sum(zones) / 18
            age = float(np.clip(rng.normal(66, 14), 25, 97))
            sex = "M" if rng.random() < 0.62 else "F"
            hidden = float(rng.normal())
            logit = (
                _PROGNOSIS["intercept"]
                + _PROGNOSIS["visible"] * (visible - 0.4) / 0.2
                + _PROGNOSIS["age"] * (age - 65) / 10
                + _PROGNOSIS["hidden"] * hidden
            )
            risk = float(expit(logit))
            prognosis = int(rng.random() < risk)
            clinical = _clinical(rng, severity, hidden, age)
            missing = rng.random(len(clinical) + 2) < np.r_[0.03, 0.03, np.full(len(clinical), _CENTRE_MISSING[centre])]
            row = {"ImageFile": name, "Hospital": centre, "Prognosis": "SEVERE" if prognosis else "MILD"}
            row |= {"Age": round(age), "Sex": sex} | clinical
            for column, gone in zip(["Age", "Sex", *clinical], missing, strict=True):
                if gone:
                    row[column] = None
            sheet.append(row)
            shape = _shape(rng, size.long_side, portrait=0.7)
            token = _token(rng, used)
            day = int(rng.integers(0, _STUDY_PERIOD[1]))
            header = _header(rng, token, age, sex, day, f"SYNTH HOSPITAL {centre}", f"aiforcovid/{seed}/{name}")
            cases.append(
                _Case(
                    dicom=f"AIforCOVID/imgs/{name}.dcm",
                    mask=f"AIforCOVID/{SIDECAR}/masks/{name}.png",
                    seed=(seed, 1, len(cases)),
                    shape=shape,
                    zones=zones,
                    anatomy=sample_anatomy(rng),
                    acquisition=_detector(protocol, shape),
                    header=header,
                )
            )
            latents.append(
                {"ImageFile": name, "Hospital": centre, "manufacturer": manufacturer, "severity": round(severity, 4)}
                | dict(zip(_ZONE_COLUMNS, zones, strict=True))
                | {"visible_severity": round(visible, 4), "age": round(age, 1), "hidden_factor": round(hidden, 4)}
                | {"risk": round(risk, 4), "prognosis": prognosis}
            )
    return cases, pd.DataFrame(sheet), pd.DataFrame(latents)


def _clinical(rng: np.random.Generator, severity: float, hidden: float, age: float) -> dict[str, Any]:
    """Admission clinical values that reflect the severity and, partly, the hidden factor the image does not show."""
    values = {
        "Temp_C": round(float(36.7 + 1.2 * severity + 0.4 * rng.normal()), 1),
        "Cough": int(rng.random() < 0.4 + 0.3 * severity),
        "Dyspnoea": int(rng.random() < expit(-1.0 + 2.5 * severity + 0.5 * hidden)),
        "WBC": round(float(np.exp(np.log(7.0) + 0.15 * hidden + 0.3 * rng.normal())), 2),
        "CRP": round(float(np.exp(np.log(15.0) + 2.0 * severity + 0.5 * hidden + 0.7 * rng.normal())), 1),
        "LDH": round(float(200 + 220 * severity + 60 * hidden + 50 * rng.normal())),
        "D_dimer": round(float(np.exp(np.log(500.0) + 1.0 * severity + 0.5 * hidden + 0.6 * rng.normal()))),
        "PaO2": round(float(np.clip(88 - 30 * severity - 8 * hidden + 10 * rng.normal(), 35, 120))),
        "SaO2": round(float(np.clip(97.5 - 8 * severity - 2 * hidden + 2 * rng.normal(), 70, 100)), 1),
    }
    for name in _COMORBIDITIES:
        values[name] = int(rng.random() < expit(-2.2 + 0.05 * (age - 60) + 0.4 * hidden))
    return values


def _plan_brixia(seed: int, size: DemoSize) -> tuple[list[_Case], pd.DataFrame, pd.DataFrame]:
    """Cases, metadata table and latents of the BRIXIA-like set: subjects with one to three studies."""
    rng = np.random.default_rng([seed, 2])
    cases, meta, latents, used = [], [], [], set()
    subject = 0
    while len(cases) < size.brixia:
        subject += 1
        studies = min(int(rng.choice([1, 1, 1, 2, 3])), size.brixia - len(cases))
        anatomy = sample_anatomy(rng)
        age = float(np.clip(rng.normal(64, 15), 20, 95))
        sex = "M" if rng.random() < 0.65 else "F"
        severity = float(rng.uniform(0.0, 1.0))
        day = int(rng.integers(0, _STUDY_PERIOD[1] - 30))
        token = _token(rng, used)
        for _ in range(studies):
            study_id = f"{len(cases) + 1:06d}"
            filename = f"{study_id}.dcm"
            zones = _zone_scores(rng, severity)
            manufacturer, index = BRIXIA_DEVICES[int(rng.integers(len(BRIXIA_DEVICES)))]
            protocol = MANUFACTURER_PROTOCOLS[manufacturer][index]
            shape = _shape(rng, size.long_side, portrait=0.5)
            pose = replace(  # the same patient, positioned anew
                anatomy,
                tilt_deg=float(np.clip(anatomy.tilt_deg + rng.normal(0, 0.8), -2.0, 2.0)),
                scale=float(np.clip(anatomy.scale * rng.uniform(0.97, 1.03), 0.9, 1.06)),
            )
            header = _header(rng, token, age, sex, day, "SYNTH BRESCIA HOSPITAL", f"brixia/{seed}/{study_id}")
            cases.append(
                _Case(
                    dicom=f"BRIXIA/dicom_clean/{filename}",
                    mask=f"BRIXIA/{SIDECAR}/masks/{study_id}.png",
                    seed=(seed, 2, len(cases)),
                    shape=shape,
                    zones=zones,
                    anatomy=pose,
                    acquisition=_detector(protocol, shape),
                    header=header,
                )
            )
            score = "".join(str(zone) for zone in zones)
            meta.append(
                {
                    "Filename": filename,
                    "StudyDate": header["study_date"],
                    "Modality": protocol.modality,
                    "StudyId": study_id,
                    "BrixiaScore": score,
                    "BrixiaScoreGlobal": str(sum(zones)),
                    "ConsensusTestset": "0",
                    "Subject": str(subject),
                    "Sex": sex,
                    "AgeAtStudyDateFiveYear": str(int(age // 5 * 5)),
                    "Manufacturer": manufacturer,
                    "PhotometricInterpretation": protocol.photometric,
                }
            )
            latents.append(
                {"Filename": filename, "Subject": subject, "manufacturer": manufacturer, "severity": round(severity, 4)}
                | dict(zip(_ZONE_COLUMNS, zones, strict=True))
                | {"visible_severity": round(sum(zones) / 18, 4)}
            )
            severity = float(np.clip(severity + rng.normal(0.05, 0.15), 0.0, 1.0))  # follow-up: progression
            day += int(rng.integers(2, 15))
    table = pd.DataFrame(meta)
    consensus = rng.choice(len(table), size=max(2, round(0.06 * len(table))), replace=False)
    table.loc[consensus, "ConsensusTestset"] = "1"  # the radiologists' consensus test images
    return cases, table, pd.DataFrame(latents)


def _render_case(root: str, case: _Case) -> None:
    """Render, detect and write one image and its lung mask (run in a worker process)."""
    rng = np.random.default_rng(list(case.seed))
    image, lungs = make_phantom(rng, case.shape, case.zones, case.anatomy)
    image = simulate_detector(image, case.acquisition, rng)
    spacing = _DETECTOR_WIDTH_MM / max(case.shape)
    write_cxr_dicom(
        Path(root) / case.dicom, image, case.acquisition, pixel_spacing_mm=(spacing, spacing), **case.header
    )
    mask_path = Path(root) / case.mask
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(lungs.astype(np.uint8) * 255).save(mask_path)


def _render_all(root: Path, cases: Sequence[_Case], workers: int) -> None:
    """Render every case, in ``workers`` processes when more than one (results do not depend on it)."""
    if workers <= 1:
        for case in cases:
            _render_case(str(root), case)
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        list(pool.map(_render_case, [str(root)] * len(cases), cases, chunksize=max(1, len(cases) // (8 * workers))))


def _check_replaceable(folder: Path) -> None:
    """Refuse to overwrite a dataset folder that the generator did not write (it has no synthetic sidecar)."""
    if folder.exists() and not (folder / SIDECAR).is_dir():
        raise FileExistsError(
            f"{folder} exists and is not synthetic demo data (no {SIDECAR}/ folder): refusing to replace it; "
            "choose another output folder."
        )


def generate_demo_data(
    out: str | os.PathLike[str], size: str = "default", seed: int = 0, workers: int | None = None
) -> dict[str, Any]:
    """Write the synthetic AIforCOVID and BRIXIA datasets under ``out`` in their published layouts.

    Everything is written to ``out/.generating`` first and moved into place when complete, then
    :data:`GENERATED_MARKER` is written; an interrupted run leaves no half dataset behind. Previously generated
    demo data is replaced; a real dataset folder is never touched.

    Args:
        out: folder that receives ``AIforCOVID/``, ``BRIXIA/`` and the marker.
        size: a key of :data:`DEMO_SIZES`.
        seed: same seed and size, same files (whatever ``workers``).
        workers: rendering processes; None for the size's default.

    Returns:
        A summary: per dataset the number of images and their breakdown, the oracle prognosis AUC of the
        image-visible severity, the size, seed and elapsed seconds.

    Raises:
        ValueError: for an unknown size.
        FileExistsError: if ``out`` holds a dataset folder that is not synthetic demo data.
    """
    if size not in DEMO_SIZES:
        raise ValueError(f"unknown demo size {size!r}: expected one of {', '.join(DEMO_SIZES)}")
    start = time.perf_counter()
    demo = DEMO_SIZES[size]
    out = Path(out)
    for name in ("AIforCOVID", "BRIXIA"):
        _check_replaceable(out / name)
    staging = out / ".generating"
    shutil.rmtree(staging, ignore_errors=True)
    (out / GENERATED_MARKER).unlink(missing_ok=True)

    aiforcovid_cases, sheet, aiforcovid_latents = _plan_aiforcovid(seed, demo)
    brixia_cases, metadata, brixia_latents = _plan_brixia(seed, demo)
    for name in ("AIforCOVID", "BRIXIA"):
        (staging / name / SIDECAR / "masks").mkdir(parents=True)
    sheet.to_excel(staging / "AIforCOVID" / "AIforCOVID.xlsx", index=False)
    aiforcovid_latents.to_csv(staging / "AIforCOVID" / SIDECAR / "latents.csv", index=False)
    metadata.to_csv(staging / "BRIXIA" / "metadata_global_v2.csv", sep=";", index=False)
    brixia_latents.to_csv(staging / "BRIXIA" / SIDECAR / "latents.csv", index=False)
    _render_all(staging, aiforcovid_cases + brixia_cases, workers or demo.workers)
    for name in ("AIforCOVID", "BRIXIA"):
        shutil.rmtree(out / name, ignore_errors=True)
        os.replace(staging / name, out / name)
    staging.rmdir()

    global_classes = pd.cut(
        metadata["BrixiaScoreGlobal"].astype(int), [-1, 4, 9, 14, 18], labels=["0-4", "5-9", "10-14", "15-18"]
    )
    summary = {
        "size": size,
        "seed": seed,
        "aiforcovid": {
            "images": len(sheet),
            "centres": dict(sorted(Counter(sheet["Hospital"]).items())),
            "prognosis": dict(sorted(Counter(sheet["Prognosis"]).items())),
        },
        "brixia": {
            "images": len(metadata),
            "subjects": int(metadata["Subject"].nunique()),
            "manufacturers": dict(sorted(Counter(metadata["Manufacturer"]).items())),
            "severity_classes": {str(k): int(v) for k, v in global_classes.value_counts(sort=False).items()},
        },
        "oracle_auc": float(roc_auc_score(aiforcovid_latents["prognosis"], aiforcovid_latents["visible_severity"])),
    }
    (out / GENERATED_MARKER).write_text(json.dumps(summary, indent=2) + "\n")
    return summary | {"elapsed_s": time.perf_counter() - start}
