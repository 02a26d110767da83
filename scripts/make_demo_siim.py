"""Write synthetic SIIM-FISABIO-RSNA-like data, or prepare the datalist of a dataset in that layout (real or synthetic).

Usage::

    python scripts/make_demo_siim.py generate --out data/demo_siim --size small [--seed 0]
    python scripts/make_demo_siim.py prepare --root data/demo_siim --out data/demo_siim/siim_covid.json [--folds 5]

``prepare`` reads ``train_study_level.csv``, ``train_image_level.csv`` and ``train/<study>/<series>/<image>.dcm``,
writes the datalist and ``FILE.rejected.csv`` (one line per rejected row, with the reason). Exit status 0, or 1 when
no usable row is left.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from bundle.data.siim_covid import APPEARANCE_CLASSES, prepare_siim_covid
from bundle.data.synthetic_siim import SIIM_SIZES, generate_siim


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the subcommand; print a JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    generate = sub.add_parser("generate", help="write synthetic data in the SIIM layout")
    generate.add_argument("--out", type=Path, required=True, help="dataset folder to write")
    generate.add_argument("--size", choices=sorted(SIIM_SIZES), default="small")
    generate.add_argument("--seed", type=int, default=0)
    prepare = sub.add_parser("prepare", help="validate a dataset in the SIIM layout and write its datalist")
    prepare.add_argument("--root", type=Path, required=True, help="folder with the two CSVs and train/")
    prepare.add_argument("--out", type=Path, required=True, help="datalist JSON to write")
    prepare.add_argument("--folds", type=int, default=5)
    prepare.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "generate":
        print(json.dumps(generate_siim(args.out, size=args.size, seed=args.seed), indent=1))
        return 0
    result = prepare_siim_covid(args.root, args.out, n_folds=args.folds, seed=args.seed)
    classes = Counter(APPEARANCE_CLASSES[r["appearance"]] for r in result.records)
    rejected = Counter(r.kind for r in result.rejected)
    summary = {"datalist": str(args.out), "images": len(result.records), "classes": classes, "rejected": rejected}
    print(json.dumps(summary, indent=1))
    return 0 if result.records else 1


if __name__ == "__main__":
    sys.exit(main())
