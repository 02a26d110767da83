"""Write the synthetic HUST-19-like chest CT demo data (DICOM series + NIfTI + labels) and its prepared datalist.

Example:
    python scripts/make_demo_ct.py --out data/demo_ct --size small
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bundle.data.hust import prepare_hust
from bundle.data.synthetic_ct import CT_DEMO_SIZES, DATASET_FOLDER, generate_ct_demo_data


def main(argv: list[str] | None = None) -> dict:
    """Parse the command line, generate the scans, prepare ``<out>/hust19.json`` and print a summary.

    Returns:
        The generator's summary with the datalist path and split sizes added.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder that receives HUST19/ and hust19.json")
    parser.add_argument("--size", choices=sorted(CT_DEMO_SIZES), default="small", help="default: %(default)s")
    parser.add_argument("--seed", type=int, default=0, help="same seed and size, same files (default: %(default)s)")
    parser.add_argument("--image_source", choices=["nifti", "dicom"], default="nifti", help="what the datalist names")
    args = parser.parse_args(argv)

    summary = generate_ct_demo_data(args.out, args.size, args.seed)
    datalist = Path(args.out) / "hust19.json"
    result = prepare_hust(Path(args.out) / DATASET_FOLDER, datalist, image_source=args.image_source, seed=args.seed)
    summary["datalist"] = str(datalist)
    summary["split"] = {s: sum(r["split"] == s for r in result.records) for s in ("train", "test")}
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
