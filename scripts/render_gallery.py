"""Picture check of the synthetic demo data: a PNG grid of radiographs and the crops the network sees.

Usage::

    python scripts/render_gallery.py --root data/demo --out docs/images/gallery.png [--n 8]

Each row is one image: the stored pixels as a plain viewer that ignores the photometric interpretation would show
them (MONOCHROME1 looks inverted), the bundle's decoding (air dark) with the classical lung-field mask outlined, and
the lung-box crop after the full preprocessing. Rows span both photometric interpretations, several centres and
manufacturers, and Brixia global scores from 0 to 18.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pydicom  # noqa: E402
from monai.bundle import ConfigParser  # noqa: E402
from monai.transforms import Compose  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def pick_cases(root: Path, n: int) -> list[dict]:
    """BRIXIA images spread over the global score and both photometric types, plus AIforCOVID centres."""
    table = pd.read_csv(root / "BRIXIA" / "metadata_global_v2.csv", sep=";", dtype=str)
    table["global"] = table["BrixiaScoreGlobal"].astype(int)
    cases = []
    for i, target in enumerate(np.linspace(0, 18, max(2, n - 2)).round()):
        photometric = "MONOCHROME1" if i % 2 else "MONOCHROME2"
        pool = table[table["PhotometricInterpretation"] == photometric]
        row = pool.iloc[(pool["global"] - target).abs().argsort().iloc[0]]
        cases.append(
            {
                "path": root / "BRIXIA" / "dicom_clean" / row["Filename"],
                "title": f"BRIXIA {row['Manufacturer']}, Brixia {row['global']}",
            }
        )
    sheet = pd.read_excel(root / "AIforCOVID" / "AIforCOVID.xlsx", dtype=str)
    for centre in sorted(sheet["Hospital"].unique())[:2]:
        row = sheet[sheet["Hospital"] == centre].iloc[0]
        cases.append(
            {
                "path": root / "AIforCOVID" / "imgs" / f"{Path(row['ImageFile']).stem}.dcm",
                "title": f"AIforCOVID centre {centre}, {row['Prognosis']}",
            }
        )
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT / "data" / "demo")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "gallery.png")
    parser.add_argument("--n", type=int, default=8)
    args = parser.parse_args()

    config = ConfigParser()
    config.read_config(ROOT / "configs" / "common.yaml")
    transforms = config.get_parsed_content("preprocessing_transforms")
    decode = Compose(transforms[:2])  # DICOM reader + lung-field mask
    preprocess = Compose(transforms)

    cases = pick_cases(args.root, args.n)
    fig, axes = plt.subplots(len(cases), 3, figsize=(9, 3 * len(cases)))
    for row, case in zip(axes, cases, strict=True):
        header = pydicom.dcmread(case["path"])
        decoded = decode({"image": str(case["path"])})
        crop = preprocess({"image": str(case["path"])})["image"][0].numpy()
        row[0].imshow(header.pixel_array, cmap="gray")
        row[0].set_title(
            f"stored, {header.PhotometricInterpretation}\n{header.Modality} {header.Rows}x{header.Columns}"
        )
        row[1].imshow(decoded["image"][0].numpy(), cmap="gray")
        row[1].contour(decoded["lung_mask"][0].numpy(), levels=[0.5], colors="tab:orange", linewidths=0.8)
        row[1].set_title(f"decoded (air dark) + lung mask\n{case['title']}")
        row[2].imshow(crop, cmap="gray")
        row[2].set_title("lung-box crop, 256 px")
        for ax in row:
            ax.axis("off")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=60)
    print(f"gallery: {args.out}")


if __name__ == "__main__":
    main()
