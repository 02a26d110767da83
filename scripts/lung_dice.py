"""Measure the classical lung-field mask (LungFieldMask) against the synthetic demo data's ground-truth lung masks.

Usage::

    python scripts/lung_dice.py --root DIR [--limit N] [--overlays OUT_DIR]

``DIR`` holds the demo datasets written by ``scripts/make_demo_data.py`` (``AIforCOVID/imgs/*.dcm`` and
``BRIXIA/dicom_clean/*.dcm``, ground truth in ``<set>/synthetic/masks/<stem>.png``). Each DICOM is read with the
bundle's reader, segmented, and scored with MONAI's Dice. Printed per set, per manufacturer (the demo's centres
and devices) and overall: mean, median and minimum Dice, the number of fallback masks, the lung coverage of the
square lung crop (the fraction of ground-truth lung kept by ``LungBoxCrop``; what the model actually loses) and the
segmentation time per image. A file that cannot be read or has no ground truth is reported and skipped.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.metrics import compute_dice
from PIL import Image
from skimage.segmentation import find_boundaries

from bundle.data.dicom import DicomInputError, read_cxr
from bundle.transforms.lung import LungBoxCrop, LungFieldMask

#: (set name, folder of its DICOM files) under ``--root``.
SETS: tuple[tuple[str, str], ...] = (("AIforCOVID", "imgs"), ("BRIXIA", "dicom_clean"))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="folder holding AIforCOVID/ and BRIXIA/")
    parser.add_argument("--limit", type=int, default=None, help="at most N images per set (default: all)")
    parser.add_argument("--overlays", type=Path, default=None, help="write overlay PNGs (red: mask, green: truth)")
    return parser.parse_args(argv)


def save_overlay(path: Path, image: np.ndarray, mask: np.ndarray, truth: np.ndarray) -> None:
    """Write the image with the mask outline in red and the ground-truth outline in green."""
    low, high = np.percentile(image, (1, 99))
    grey = np.clip((image - low) / max(high - low, 1e-6), 0, 1) * 200
    rgb = np.repeat(grey[..., None], 3, axis=-1).astype(np.uint8)
    rgb[find_boundaries(truth, mode="thick")] = (0, 255, 0)
    rgb[find_boundaries(mask, mode="thick")] = (255, 0, 0)
    Image.fromarray(rgb).save(path)


def evaluate_set(root: Path, name: str, folder: str, limit: int | None, overlays: Path | None) -> list[dict[str, Any]]:
    """Segment every DICOM of one set and score it; returns one row per scored image."""
    segmenter, cropper = LungFieldMask(), LungBoxCrop()
    paths = sorted((root / name / folder).glob("*.dcm"))[:limit]
    if not paths:
        print(f"{name}: no DICOM files in {root / name / folder}")
    rows = []
    for path in paths:
        truth_path = root / name / "synthetic" / "masks" / f"{path.stem}.png"
        if not truth_path.exists():
            print(f"skipped {path}: no ground-truth mask {truth_path}")
            continue
        try:
            image, meta = read_cxr(path)
        except DicomInputError as err:
            print(f"skipped {err}")
            continue
        truth = np.asarray(Image.open(truth_path)) > 127
        if truth.shape != image.shape:
            print(f"skipped {path}: mask {truth.shape} and image {image.shape} differ")
            continue
        start = time.perf_counter()
        mask = segmenter(torch.from_numpy(image)[None])
        seconds = time.perf_counter() - start
        truth_t = torch.from_numpy(truth)[None, None].float()
        dice = float(compute_dice(mask[None].float().as_tensor(), truth_t, include_background=True))
        box_start, box_end = cropper.compute_box(mask)
        inside = truth[max(box_start[0], 0) : box_end[0], max(box_start[1], 0) : box_end[1]].sum()
        rows.append(
            {
                "set": name,
                "file": path.name,
                "manufacturer": meta["Manufacturer"],
                "photometric": meta["PhotometricInterpretation"],
                "dice": dice,
                "fallback": bool(mask.meta["lung_mask_fallback"]),
                "crop_coverage": float(inside / max(truth.sum(), 1)),
                "seconds": seconds,
                "pixels": image.size,
            }
        )
        if overlays is not None:
            overlays.mkdir(parents=True, exist_ok=True)
            save_overlay(overlays / f"{name}_{path.stem}_{dice:.3f}.png", image, mask[0].numpy() > 0, truth)
    return rows


def summarise(table: pd.DataFrame, by: str | list[str]) -> pd.DataFrame:
    """Dice statistics, fallbacks, crop coverage and time per group."""
    return table.groupby(by).agg(
        images=("dice", "size"),
        dice_mean=("dice", "mean"),
        dice_median=("dice", "median"),
        dice_min=("dice", "min"),
        fallbacks=("fallback", "sum"),
        crop_coverage_mean=("crop_coverage", "mean"),
        crop_coverage_min=("crop_coverage", "min"),
        seconds_per_image=("seconds", "mean"),
    )


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    """Run the evaluation and print the summaries.

    Returns:
        One row per scored image (set, file, manufacturer, photometric, dice, fallback, crop_coverage, seconds).

    Raises:
        SystemExit: with status 1 when no image could be scored.
    """
    args = parse_args(argv)
    rows = [row for name, folder in SETS for row in evaluate_set(args.root, name, folder, args.limit, args.overlays)]
    if not rows:
        raise SystemExit(f"no image could be scored under {args.root}")
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 3):
        print(summarise(table, "set"), end="\n\n")
        print(summarise(table, ["set", "manufacturer", "photometric"]), end="\n\n")
        print(summarise(table.assign(set="overall"), "set"))
    return table


if __name__ == "__main__":
    main()
