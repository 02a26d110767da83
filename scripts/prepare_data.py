"""Write the datalist JSON (and its rejected-rows report) of one dataset from its published layout.

Usage::

    python scripts/prepare_data.py aiforcovid --root DIR --out FILE.json [--folds 5] [--seed 0]
    python scripts/prepare_data.py brixia --root DIR --out FILE.json [--folds 5] [--seed 0]

Rejected rows go to ``FILE.rejected.csv`` (``source,row,image,reason``). The exit status is 0 even when rows are
rejected, 1 when nothing usable is left (no accepted record, or too few patients for the folds), 2 when the layout
itself is unusable (missing sheet, folder or column).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bundle.data.datalist import AdapterResult, DatasetLayoutError, rejected_report_path
from bundle.data.prepare import ADAPTERS, prepare_dataset


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line: one subcommand per dataset, the same options for each."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    subparsers = parser.add_subparsers(dest="dataset", required=True)
    for name in ADAPTERS:
        sub = subparsers.add_parser(name, help=f"prepare the {name} datalist")
        sub.add_argument("--root", type=Path, required=True, help="dataset folder in its published layout")
        sub.add_argument("--out", type=Path, required=True, help="datalist JSON to write")
        sub.add_argument("--folds", type=int, default=5, help="number of cross-validation folds (default 5)")
        sub.add_argument("--seed", type=int, default=0, help="seed of the fold assignment (default 0)")
    return parser.parse_args(argv)


def print_counts(result: AdapterResult) -> None:
    """Print how many rows were read, accepted and rejected, and the rejections by kind."""
    print(f"rows read: {result.rows_read}, accepted: {len(result.records)}, rejected: {len(result.rejected)}")
    for kind, count in sorted(Counter(rejection.kind for rejection in result.rejected).items()):
        print(f"  rejected {kind}: {count}")


def print_balance(records: Sequence[dict[str, Any]], strata: Sequence[tuple[str, str]], subgroup: str) -> None:
    """Print the images per subgroup and class, and the images per fold and class with the patients per fold."""
    table = pd.DataFrame(strata, columns=["class", subgroup])
    table["fold"] = [record["fold"] for record in records]
    table["patient"] = [record["patient"] for record in records]
    print(f"\nimages per {subgroup} and class:\n{pd.crosstab(table[subgroup], table['class'], margins=True)}")
    per_fold = pd.crosstab(table["fold"], table["class"], margins=True)
    patients = table.groupby("fold")["patient"].nunique()
    per_fold["patients"] = pd.concat([patients, pd.Series({"All": table["patient"].nunique()})])
    print(f"\nimages per fold and class:\n{per_fold}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the preparation and print its counts; returns the exit status (see the module docstring)."""
    args = parse_args(argv)
    try:
        result = prepare_dataset(args.dataset, args.root, args.out, args.folds, args.seed)
    except DatasetLayoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"error: {error}; rejected rows: {rejected_report_path(args.out)}", file=sys.stderr)
        return 1
    print_counts(result)
    if not result.records:
        print(f"error: no usable row in {args.root}; rejected rows: {rejected_report_path(args.out)}", file=sys.stderr)
        return 1
    adapter = ADAPTERS[args.dataset]
    print_balance(result.records, [adapter.stratum(record) for record in result.records], adapter.subgroup)
    print(f"\ndatalist: {args.out}\nrejected rows: {rejected_report_path(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
