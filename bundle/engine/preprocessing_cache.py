"""Where the deterministic preprocessing of the training and validation images is kept: RAM, disk or nowhere.

Decoding a 2k x 2k DICOM, segmenting the lung fields, cropping and resizing costs far more than the random
augmentation that follows, and gives the same result every epoch. MONAI's caching datasets run the transforms up to
the first random one once and keep the result:

- ``ram``: ``CacheDataset``, the fastest; every process holds its own copy (under ``torchrun`` every rank on a node
  does), so the size is estimated first and a warning names the alternatives when it will not fit;
- ``disk``: ``PersistentDataset`` under ``cache_dir``, shared by all ranks and by later runs. Its file names carry a
  fingerprint of the cached transforms and their parameters (``image_size``, percentiles, crop margin, ...), so a
  changed preprocessing never reads stale images;
- ``none``: plain ``Dataset``, everything recomputed every epoch (for data that changes, or to measure the cost).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.transforms import Transform

__all__ = ["CACHE_MODES", "available_memory_bytes", "cache_size_bytes", "cached_dataset", "transform_fingerprint"]

logger = logging.getLogger(__name__)

CACHE_MODES = ("ram", "disk", "none")
#: Share of the available memory (or free disk) a cache may take before the warning: workers, the network and the
#: optimiser need the rest.
_BUDGET = 0.8


def available_memory_bytes() -> int:
    """Memory the system can give without swapping (``MemAvailable`` on Linux; free pages elsewhere)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def cache_size_bytes(num_items: int, item_shape: Sequence[int], bytes_per_value: int = 4) -> int:
    """Size of ``num_items`` cached images of ``item_shape`` (e.g. ``(C, H, W)``), float32 by default."""
    return num_items * math.prod(item_shape) * bytes_per_value


def _describe(obj: Any) -> Any:
    """JSON stand-in for an object inside a transform: its class and attributes, or a repr without addresses."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if isinstance(obj, np.ndarray | np.generic):
        return obj.tolist()
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    if isinstance(obj, Transform) or (hasattr(obj, "__dict__") and not callable(obj)):
        return {"__class__": f"{type(obj).__module__}.{type(obj).__qualname__}", **vars(obj)}
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(obj))


def transform_fingerprint(transforms: Sequence[Transform]) -> bytes:
    """Hash of transforms *with* their parameters, for ``PersistentDataset(hash_transform=...)``.

    MONAI's ``json_hashing`` falls back to the class names when a transform holds objects JSON cannot encode (every
    transform here does), so changing ``image_size`` would silently reuse images of the old size. This walks the
    transforms' attributes instead; memory addresses are dropped so the hash is the same in every process.
    """
    text = json.dumps(list(transforms), default=_describe, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest().encode("utf-8")


def _warn_if_too_large(needed: int, available: int, where: str, advice: str) -> None:
    if needed > _BUDGET * available:
        logger.warning(
            f"the preprocessing cache needs about {needed / 2**30:.1f} GiB of {where}, {available / 2**30:.1f} GiB"
            f" available: {advice}"
        )


def cached_dataset(
    data: Sequence[dict],
    transform: Callable,
    cache: str = "ram",
    cache_dir: str | os.PathLike[str] | None = None,
    cache_rate: float = 1.0,
    num_workers: int | None = 1,
    item_shape: Sequence[int] | None = None,
    processes: int | None = None,
    progress: bool = True,
) -> Dataset:
    """The dataset for ``data`` with its deterministic transforms cached as ``cache`` says.

    Args:
        data: the records (datalist items).
        transform: the whole pipeline; caching stops at its first random transform.
        cache: ``ram``, ``disk`` or ``none`` (see the module docstring).
        cache_dir: ``disk``: folder of the cache files.
        cache_rate: ``ram``: share of the records cached (the rest is recomputed every time).
        num_workers: ``ram``: threads that fill the cache.
        item_shape: shape of one cached image, e.g. ``(C, image_size, image_size)``, for the size estimate.
        processes: processes on this machine that each hold a RAM cache; default ``LOCAL_WORLD_SIZE`` (set by
            ``torchrun``) or 1.
        progress: ``ram``: show a progress bar while filling the cache (off on all but one rank).

    Returns:
        A ``CacheDataset``, ``PersistentDataset`` or ``Dataset``.

    Raises:
        ValueError: for an unknown ``cache`` mode, or ``disk`` without ``cache_dir``.
    """
    if cache not in CACHE_MODES:
        raise ValueError(f"cache must be one of {CACHE_MODES}, got {cache!r}")
    if cache == "none":
        return Dataset(data, transform)
    if cache == "disk":
        if cache_dir is None:
            raise ValueError("cache 'disk' needs a cache_dir")
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        if item_shape is not None:
            _warn_if_too_large(
                cache_size_bytes(len(data), item_shape),
                shutil.disk_usage(cache_dir).free,
                f"disk under {cache_dir}",
                "free space or choose another cache_dir",
            )
        return PersistentDataset(data, transform, cache_dir=cache_dir, hash_transform=transform_fingerprint)
    if item_shape is not None:
        processes = processes or int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        _warn_if_too_large(
            cache_size_bytes(round(len(data) * cache_rate), item_shape) * processes,
            available_memory_bytes(),
            f"RAM ({processes} process(es) x {round(len(data) * cache_rate)} images x {tuple(item_shape)} float32)",
            "set `cache: disk` (one copy on disk, shared by all ranks) or lower `cache_rate`",
        )
    return CacheDataset(data, transform, cache_rate=cache_rate, num_workers=num_workers, progress=progress)
