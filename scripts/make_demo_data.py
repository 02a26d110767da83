"""Write the synthetic AIforCOVID-like and BRIXIA-like demo datasets (DICOM in the real layouts).

Example:
    python scripts/make_demo_data.py --out data/demo --size default
"""

from __future__ import annotations

import argparse
import json

from bundle.data.synthetic import DEMO_SIZES, generate_demo_data


def main(argv: list[str] | None = None) -> dict:
    """Parse the command line, generate the data and print its summary.

    Returns:
        The summary returned by :func:`bundle.data.synthetic.generate_demo_data`.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder that receives AIforCOVID/ and BRIXIA/")
    parser.add_argument(
        "--size", choices=sorted(DEMO_SIZES), default="default", help="how much data (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="same seed and size, same files (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=None, help="rendering processes (default: 2; 1 for tiny)")
    args = parser.parse_args(argv)

    summary = generate_demo_data(args.out, args.size, args.seed, args.workers)
    aiforcovid, brixia = summary["aiforcovid"], summary["brixia"]
    print(f"AIforCOVID: {aiforcovid['images']} patients {aiforcovid['centres']} {aiforcovid['prognosis']}")
    print(f"BRIXIA: {brixia['images']} images of {brixia['subjects']} subjects {brixia['severity_classes']}")
    print(f"oracle prognosis AUC from image-visible severity: {summary['oracle_auc']:.3f}")
    print(f"elapsed: {summary['elapsed_s']:.1f} s")
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
