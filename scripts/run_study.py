"""Run an MDMT study: every strategy x backbone x split of a study config, through the bundle's own workflows.

    python scripts/run_study.py --config configs/study.yaml [--shard 2/4] [--jobs 2] [--dry-run]

Resumable: finished runs are skipped, killed trainings resume from their last checkpoint (kill the whole process
group, see bundle/study/runner.py). Shards are sets of (backbone, split) units, so each shard holds the runs a
strategy depends on. At the end the finished runs found in the study folder are collected (results.csv, pooled
predictions and metrics, table.csv); then run scripts/study_stats.py and scripts/study_report.py.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import shutil
import sys
from pathlib import Path

from bundle.study.grid import StudySpec, parse_shard, select_shard
from bundle.study.results import collect
from bundle.study.runner import StudyRunner

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the selected units, collect; exit 1 when a run failed."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="study YAML (configs/study.yaml)")
    parser.add_argument("--shard", default="1/1", help="i/n: run the i-th of n deterministic parts of the grid")
    parser.add_argument("--jobs", type=int, default=1, help="(backbone, split) units run at the same time")
    parser.add_argument("--dry-run", action="store_true", help="print each run's state and commands, run nothing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    spec = StudySpec.from_yaml(args.config, base_dir=ROOT)
    units = select_shard(spec.units(), *parse_shard(args.shard))
    runner = StudyRunner(spec, bundle_root=ROOT)
    if args.dry_run:
        for unit in units:
            for run in unit.runs:
                print(f"[{runner.status(run)}] {run.label}")
                print("  " + shlex.join(runner.train_command(run)))
                print("  " + shlex.join(runner.eval_command(run)))
        return 0
    spec.study_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.config, spec.study_dir / "study.yaml")
    outcome = runner.run_units(units, jobs=args.jobs)
    collect(spec.study_dir)
    failed = sorted(label for label, state in outcome.items() if state in ("failed", "blocked"))
    counts = {state: list(outcome.values()).count(state) for state in sorted(set(outcome.values()))}
    logging.info("shard %s: %s", args.shard, counts)
    if failed:
        logging.error("failed or blocked runs: %s", failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
