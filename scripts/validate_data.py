"""Check datalists before a long run: every record (labels, fold) and every image file (exists, header, decode).

Usage::

    python scripts/validate_data.py DATALIST.json [DATALIST.json ...] [--out REPORT.csv] [--sample N]

The checks are those of ``bundle.data.validation``. Every problem becomes a row of the report (``image,check,reason``,
by default ``DATALIST.validation.csv`` beside the first datalist) and a summary is printed. Exit status: 0 when
nothing was found, 1 when anything was (the report says what).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bundle.data.dicom import SUPPORTED_MODALITIES
from bundle.data.validation import validate_datalists

LISTED = 20
"""Findings printed in the summary; the report holds all of them."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("datalists", type=Path, nargs="+", help="datalist JSON(s) written by prepare_data.py")
    parser.add_argument("--out", type=Path, help="report CSV (default: FIRST_DATALIST.validation.csv)")
    parser.add_argument(
        "--sample", type=int, help="decode only N randomly chosen images (0: headers only; default: decode all)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    parser.add_argument(
        "--modalities",
        nargs="+",
        default=list(SUPPORTED_MODALITIES),
        help="accepted Modality values (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.sample is not None and args.sample < 0:
        parser.error(f"--sample must be 0 or more, got {args.sample}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the checks, write the report, print the summary; returns the exit status (see the module docstring)."""
    args = parse_args(argv)
    report = validate_datalists(args.datalists, sample=args.sample, seed=args.seed, modalities=args.modalities)
    out = report.write(args.out or args.datalists[0].with_suffix(".validation.csv"))
    print(report.summary())
    for finding in report.findings[:LISTED]:
        print(f"  {finding.image}: {finding.check}: {finding.reason}")
    if len(report.findings) > LISTED:
        print(f"  ... and {len(report.findings) - LISTED} more")
    print(f"report: {out}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
