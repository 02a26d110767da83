"""Radiomics features of the lung volume (pyradiomics), cached per scan, as a transform for the COVID-MTL side network.

COVID-MTL feeds hand-crafted texture features of the lungs to an auxiliary MLP next to the CNN: first-order, GLCM,
GLRLM and GLSZM features of the original image and of its 8 wavelet decompositions, with a bin width of 25 HU.
Extraction takes seconds to minutes per scan, so results are cached on disk per scan, keyed by the image path, its
modification time, the lung mask and the extraction settings: evaluation, inference, ablations and the LightGBM
importance analysis reuse what training computed.

pyradiomics is an optional extra (``pip install --no-build-isolation pyradiomics==3.0.1``); it is imported only when
features are extracted or named, with an error saying how to install it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from bundle.atomic import write_text_atomic

__all__ = [
    "FEATURE_CLASSES",
    "IMAGE_TYPES",
    "RadiomicsExtractor",
    "RadiomicsFeaturesd",
    "feature_names",
    "num_features",
]

logger = logging.getLogger(__name__)

FEATURE_CLASSES = ("firstorder", "glcm", "glrlm", "glszm")
IMAGE_TYPES = ("Original", "Wavelet")
WAVELET_BANDS_3D = tuple(f"wavelet-{a}{b}{c}" for a in "LH" for b in "LH" for c in "LH")
INSTALL_HINT = "pip install --no-build-isolation pyradiomics==3.0.1 (after numpy; it needs a C compiler)"


def _pyradiomics() -> Any:
    """Import pyradiomics, or raise an error that says how to install the optional extra."""
    try:
        import radiomics
        from radiomics import featureextractor
    except ImportError as error:
        raise ImportError(f"radiomics features need the optional pyradiomics extra: {INSTALL_HINT}") from error
    radiomics.setVerbosity(logging.ERROR)
    logging.getLogger("radiomics").setLevel(logging.ERROR)  # its per-feature INFO lines would flood the bundle's log
    return featureextractor


def feature_names(
    feature_classes: Sequence[str] = FEATURE_CLASSES, image_types: Sequence[str] = IMAGE_TYPES
) -> list[str]:
    """Names of the features a 3D extraction gives, in the fixed order of the feature vector.

    Derived from pyradiomics' feature classes without extracting anything, so a config can size the radiomics
    network before any scan is read. Deprecated features (which pyradiomics does not compute) are left out.

    Raises:
        ValueError: for an image type other than ``Original`` and ``Wavelet``.
    """
    from radiomics import getFeatureClasses

    _pyradiomics()
    unknown = sorted(set(image_types) - set(IMAGE_TYPES))
    if unknown:
        raise ValueError(f"unsupported image types {unknown}; supported: {IMAGE_TYPES}")
    prefixes = (["original"] if "Original" in image_types else []) + (
        list(WAVELET_BANDS_3D) if "Wavelet" in image_types else []
    )
    classes = getFeatureClasses()
    names = [
        f"{cls}_{name}"
        for cls in feature_classes
        for name, deprecated in sorted(classes[cls].getFeatureNames().items())
        if not deprecated
    ]
    return [f"{prefix}_{name}" for prefix in prefixes for name in names]


def num_features(feature_classes: Sequence[str] = FEATURE_CLASSES, image_types: Sequence[str] = IMAGE_TYPES) -> int:
    """Length of the feature vector (the radiomics network's input width)."""
    return len(feature_names(feature_classes, image_types))


class RadiomicsExtractor:
    """pyradiomics extraction on a (1, X, Y, Z) HU volume and its lung mask, returning the features as a vector.

    Args:
        feature_classes: pyradiomics feature classes.
        image_types: ``Original`` and/or ``Wavelet``.
        bin_width: grey-level bin width (HU) of the texture matrices (25 in COVID-MTL).
    """

    def __init__(
        self,
        feature_classes: Sequence[str] = FEATURE_CLASSES,
        image_types: Sequence[str] = IMAGE_TYPES,
        bin_width: float = 25.0,
    ) -> None:
        self.feature_classes = tuple(feature_classes)
        self.image_types = tuple(image_types)
        self.bin_width = float(bin_width)
        self.names = feature_names(self.feature_classes, self.image_types)

    @property
    def settings(self) -> dict[str, Any]:
        """What determines the features (part of the cache key)."""
        return {"classes": self.feature_classes, "types": self.image_types, "bin_width": self.bin_width}

    def __call__(self, image: np.ndarray, mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        """Extract the features.

        Args:
            image: (1, X, Y, Z) or (X, Y, Z) volume in HU.
            mask: the lungs, same shape (anything > 0 is lung).
            spacing: voxel size (mm) along X, Y, Z.

        Returns:
            float64 (F,) in the order of ``self.names``.

        Raises:
            ValueError: when the mask is empty or shapes differ.
        """
        import SimpleITK as sitk

        volume, lungs = np.asarray(image, dtype=np.float32).squeeze(), np.asarray(mask).squeeze() > 0
        if volume.shape != lungs.shape:
            raise ValueError(f"image {volume.shape} and mask {lungs.shape} differ")
        if not lungs.any():
            raise ValueError("the lung mask is empty: no radiomics features can be computed")
        extractor = _pyradiomics().RadiomicsFeatureExtractor(binWidth=self.bin_width)
        extractor.disableAllFeatures()
        extractor.disableAllImageTypes()
        for cls in self.feature_classes:
            extractor.enableFeatureClassByName(cls)
        for image_type in self.image_types:
            extractor.enableImageTypeByName(image_type)
        itk_image = sitk.GetImageFromArray(volume.transpose(2, 1, 0))  # SimpleITK arrays are (z, y, x)
        itk_mask = sitk.GetImageFromArray(lungs.transpose(2, 1, 0).astype(np.uint8))
        for item in (itk_image, itk_mask):
            item.SetSpacing([float(s) for s in spacing])
        result = extractor.execute(itk_image, itk_mask, label=1)
        missing = [n for n in self.names if n not in result]
        if missing:
            raise RuntimeError(f"pyradiomics did not return {len(missing)} expected features, e.g. {missing[:3]}")
        return np.array([float(result[n]) for n in self.names], dtype=np.float64)


def _modified(path: Path) -> float:
    """Modification time of a file, or of the newest file in a folder (a DICOM series)."""
    if path.is_dir():
        return max((p.stat().st_mtime for p in path.iterdir() if p.is_file()), default=path.stat().st_mtime)
    return path.stat().st_mtime


class RadiomicsFeaturesd(MapTransform):
    """Adds the radiomics vector of an image's lungs to the data, computing it once per scan and settings.

    The vector is passed through ``sign(x) * log1p(|x|)``: raw features span many orders of magnitude (energies of
    1e9 next to correlations in [-1, 1]); the log keeps them in a range the network's BatchNorm can standardise.
    Non-finite features (a degenerate texture matrix) become 0, with a warning naming the scan.

    The cache holds raw features in ``<cache_dir>/<key>.json`` with key = hash of the image's source path
    (``filename_or_obj`` of its meta data), modification time, voxel spacing and shape, the lung mask and the
    extraction settings.
    Images without a source path are extracted every time.

    Args:
        keys: the image key (HU, at the resolution the lung mask was made at).
        mask_key: the lung mask key.
        output_key: where the (F,) float32 tensor goes.
        cache_dir: cache folder; None disables caching.
        log_scale: apply the signed log.
        allow_missing_keys: skip a missing image.
        kwargs: :class:`RadiomicsExtractor` arguments.
    """

    def __init__(
        self,
        keys: KeysCollection,
        mask_key: str = "lung_mask",
        output_key: str = "radiomics",
        cache_dir: str | os.PathLike[str] | None = None,
        log_scale: bool = True,
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key
        self.output_key = output_key
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.log_scale = log_scale
        self.extractor = RadiomicsExtractor(**kwargs)

    def _cache_path(self, image: torch.Tensor | np.ndarray, mask: np.ndarray, spacing: Sequence[float]) -> Path | None:
        source = image.meta.get("filename_or_obj") if isinstance(image, MetaTensor) else None
        if self.cache_dir is None or not source or not Path(str(source)).exists():
            return None
        path = Path(str(source)).resolve()
        identity = {
            "path": str(path),
            "mtime": _modified(path),
            "spacing": [round(float(s), 4) for s in spacing],
            "shape": list(image.shape),
            "mask": hashlib.sha256(np.packbits(mask > 0).tobytes()).hexdigest(),  # other lung settings, other mask
            **self.extractor.settings,
        }
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]
        return self.cache_dir / f"{key}.json"

    def features(self, image: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray) -> np.ndarray:
        """Raw features of one image, from the cache when present (written there after extraction)."""
        spacing = [float(s) for s in image.pixdim] if isinstance(image, MetaTensor) else [1.0, 1.0, 1.0]
        lungs = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        cache = self._cache_path(image, lungs, spacing)
        if cache is not None and cache.is_file():
            stored = json.loads(cache.read_text())
            if stored["names"] == self.extractor.names:
                return np.asarray(stored["values"], dtype=np.float64)
        volume = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        values = self.extractor(volume, lungs, spacing)
        if cache is not None:
            write_text_atomic(cache, json.dumps({"names": self.extractor.names, "values": values.tolist()}))
        return values

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with the radiomics vector under ``output_key``."""
        d = dict(data)
        for key in self.key_iterator(d):
            values = self.features(d[key], d[self.mask_key])
            if not np.isfinite(values).all():
                source = getattr(d[key], "meta", {}).get("filename_or_obj", key)
                logger.warning(f"{source}: {int((~np.isfinite(values)).sum())} non-finite radiomics features set to 0")
                values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
            if self.log_scale:
                values = np.sign(values) * np.log1p(np.abs(values))
            d[self.output_key] = torch.as_tensor(values, dtype=torch.float32)
        return d
