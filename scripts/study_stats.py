"""Statistics of a finished (or partly finished) study: collect its runs, then test strategies across backbones.

    python scripts/study_stats.py --study study/mdmt

Writes results.csv, pooled_predictions.csv, pooled_metrics.csv, table.csv, stats.json and stats.md in the study
folder. The comparisons come from the study.yaml that run_study.py copied there (default: MDMT vs STL-prognosis and
MDMT vs FT).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import yaml

from bundle.metrics import to_jsonable
from bundle.study.results import TABLE_METRICS, collect
from bundle.study.statistics import study_statistics, to_markdown

DEFAULT_COMPARISONS = [("mdmt", "stl_prognosis"), ("mdmt", "ft")]


def main(argv: list[str] | None = None) -> int:
    """Collect, test, write stats.json and stats.md."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", required=True, type=Path, help="the study folder (study_dir of the config)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    config = args.study / "study.yaml"
    raw = yaml.safe_load(config.read_text()) if config.is_file() else {}
    comparisons = [tuple(pair) for pair in raw.get("comparisons", DEFAULT_COMPARISONS)]
    pooled = collect(args.study)["pooled_metrics"]
    if pooled.empty:
        logging.error("no finished run in %s", args.study)
        return 1
    result = study_statistics(pooled, comparisons, TABLE_METRICS)
    (args.study / "stats.json").write_text(json.dumps(to_jsonable(result), indent=2))
    (args.study / "stats.md").write_text(to_markdown(result))
    print(to_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
