"""Dice of the unsupervised CT lung segmentation against the synthetic phantoms' ground-truth lungs.

Example:
    python scripts/ct_lung_dice.py --data data/demo_ct --limit 10
    python scripts/ct_lung_dice.py --size tiny --limit 6 --snake_spacing 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from bundle.data.synthetic_ct import CT_DEMO_SIZES, DATASET_FOLDER, generate_ct_demo_data
from bundle.transforms.ct_lung import CTLungMask, dice


def measure(root: Path, segmenter: CTLungMask, limit: int | None = None) -> pd.DataFrame:
    """Dice, volume ratio and time per scan of the dataset under ``root`` (the ``HUST19`` folder)."""
    latents = pd.read_csv(root / "synthetic" / "latents.csv").set_index("PatientID")
    rows = []
    for path in sorted((root / "nifti").glob("*.nii.gz"))[:limit]:
        patient = path.name.removesuffix(".nii.gz")
        image = nib.load(path)
        hu = np.asarray(image.dataobj, dtype=np.float32)
        truth = np.asarray(nib.load(root / "synthetic" / "masks" / path.name).dataobj) > 0
        start = time.perf_counter()
        mask = segmenter(hu[None], spacing=image.header.get_zooms()[:3])[0] > 0
        rows.append(
            {
                "patient": patient,
                "burden": float(latents.loc[patient, "burden"]),
                "dice": dice(mask, truth),
                "volume_ratio": float(mask.sum()) / max(int(truth.sum()), 1),
                "seconds": time.perf_counter() - start,
            }
        )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> dict:
    """Parse the command line, segment every scan (or the first ``--limit``), print the table and the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="folder holding HUST19/ (default: generate --size in a temp dir)")
    parser.add_argument("--size", choices=sorted(CT_DEMO_SIZES), default="tiny")
    parser.add_argument("--limit", type=int, default=None, help="segment only the first N scans")
    parser.add_argument("--snake_spacing", type=float, default=1.0, help="mm per pixel of the per-slice refinement")
    parser.add_argument("--json", type=Path, help="also write the summary and the table here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        data = args.data or Path(scratch)
        if args.data is None:
            generate_ct_demo_data(data, size=args.size)
        table = measure(data / DATASET_FOLDER, CTLungMask(snake_spacing=args.snake_spacing), args.limit)
    lesions = table["burden"] > 0
    summary = {
        "scans": len(table),
        "snake_spacing_mm": args.snake_spacing,
        "dice_mean": float(table["dice"].mean()),
        "dice_min": float(table["dice"].min()),
        "dice_mean_no_lesion": float(table.loc[~lesions, "dice"].mean()) if (~lesions).any() else None,
        "dice_mean_burden_over_10pct": float(table.loc[table["burden"] > 0.1, "dice"].mean())
        if (table["burden"] > 0.1).any()
        else None,
        "seconds_per_scan": float(table["seconds"].mean()),
    }
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "scans": table.to_dict("records")}, indent=1))
    return summary


if __name__ == "__main__":
    main()
