"""Report of a study: report.md with box plots, LOCO per-centre accuracy, ROC and reliability curves, and the
paper's numbers beside the measured ones. Run scripts/study_stats.py first.

    python scripts/study_report.py --study study/mdmt --data "synthetic demo data (size small)"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bundle.study.report import write_report


def main(argv: list[str] | None = None) -> int:
    """Write the report and print its path."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", required=True, type=Path, help="the study folder")
    parser.add_argument("--data", required=True, help="what the runs were trained and tested on, for the report")
    args = parser.parse_args(argv)
    print(write_report(args.study, data_note=args.data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
