"""Write the synthetic MultiMix demo data (PNG in the Kermany, JSRT, NIH and Montgomery layouts) and its datalists.

Example:
    python scripts/make_demo_multimix.py --out data/multimix_demo --size default

Training makes the same data on first use; this script makes it ahead (or at another size or seed). The datalists
(``kermany.json``, ``jsrt.json``, ``nih.json``, ``montgomery.json``) are written with the same adapters that read
the real datasets.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bundle.data.multimix_synthetic import DEMO_DATASETS, MULTIMIX_DEMO_SIZES, ensure_multimix_datalists


def main(argv: list[str] | None = None) -> list[str]:
    """Parse the command line, generate the data if needed and write the missing datalists.

    Returns:
        The datalist paths.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder that receives the four datasets")
    parser.add_argument("--size", choices=sorted(MULTIMIX_DEMO_SIZES), default="default", help="how much data")
    parser.add_argument("--seed", type=int, default=0, help="same seed and size, same files")
    args = parser.parse_args(argv)
    datalists = [{name: args.out / f"{name}.json" for name in DEMO_DATASETS}]
    paths = ensure_multimix_datalists(datalists, demo=True, root=args.out, size=args.size, seed=args.seed)
    for path in paths:
        header = json.loads(Path(path).read_text())
        splits = sorted({record["split"] for record in header["data"]})
        print(f"{path}: {header['task']}, {len(header['data'])} images, splits {splits}")
    return paths


if __name__ == "__main__":
    main()
