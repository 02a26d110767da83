"""Write the MultiMix datalist JSON (and its rejected-files report) of one dataset from its published layout.

Usage::

    python scripts/prepare_multimix.py classification --root KERMANY_DIR --out data/kermany.json
    python scripts/prepare_multimix.py segmentation --root JSRT_DIR --layout images_masks --out data/jsrt.json
    python scripts/prepare_multimix.py segmentation --root MONTGOMERY_DIR --layout montgomery --test_fraction 1 \\
        --out data/montgomery.json
    python scripts/prepare_multimix.py segmentation --root SHENZHEN_DIR --layout shenzhen --out data/shenzhen.json

Layouts are described in ``bundle/data/multimix_data.py``. Rejected files go to ``FILE.rejected.csv``
(``source,row,image,reason``). Exit status 0 even when files are rejected, 1 when no usable image is left, 2 when the
layout itself is unusable.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from bundle.data.datalist import DatasetLayoutError
from bundle.data.multimix_data import SEGMENTATION_LAYOUTS, prepare_multimix


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, prepare the dataset, print what was accepted and rejected.

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", choices=["classification", "segmentation"])
    parser.add_argument("--root", type=Path, required=True, help="dataset folder in its published layout")
    parser.add_argument("--out", type=Path, required=True, help="datalist JSON to write")
    parser.add_argument("--layout", choices=SEGMENTATION_LAYOUTS, default="images_masks", help="segmentation layout")
    parser.add_argument("--dataset", default=None, help="dataset name in the records (default: from the folder)")
    parser.add_argument(
        "--test_fraction", type=float, default=0.2, help="segmentation: share of patients held out (1: test only)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the segmentation split")
    args = parser.parse_args(argv)
    try:
        result = prepare_multimix(
            args.task, args.root, args.out, args.layout, args.dataset, args.test_fraction, args.seed
        )
    except DatasetLayoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"files read: {result.rows_read}, accepted: {len(result.records)}, rejected: {len(result.rejected)}")
    for kind, count in sorted(Counter(rejection.kind for rejection in result.rejected).items()):
        print(f"  rejected {kind}: {count}")
    for split, count in sorted(Counter(str(record["split"]) for record in result.records).items()):
        print(f"  {split}: {count}")
    if not result.records:
        print("error: no usable image", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
