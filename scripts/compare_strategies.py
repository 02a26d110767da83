"""STL-prognosis vs MDMT on the same data, backbone and budget over several seeds, as a Markdown table.

Each (strategy, seed) run is the bundle's own ``monai.bundle run training`` then ``run evaluating`` (the strategy's
override file on both, as ``bundle/study/runner.py`` does), with ``<out>/<strategy>-<seed>`` as bundle root and one
log per command in ``<out>/logs``. A run whose ``metrics.json`` exists is not run again, so the table can be rebuilt
from finished runs. The table holds the test prognosis ROC AUC (bootstrap 95% CI), accuracy, F1 and G-mean from
``eval/.../metrics.json`` and the trainer's run time from the training log, then mean ± SD per strategy.

Example (the docs/README.md comparison):
    python scripts/make_demo_data.py --out /tmp/strat/data --size small --seed 0
    python scripts/prepare_data.py aiforcovid --root /tmp/strat/data/AIforCOVID --out /tmp/strat/data/aiforcovid.json
    python scripts/prepare_data.py brixia --root /tmp/strat/data/BRIXIA --out /tmp/strat/data/brixia.json
    python scripts/compare_strategies.py --data /tmp/strat/data --out /tmp/strat --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# strategy -> its override file under configs/strategies (None: train.yaml / evaluate.yaml alone)
STRATEGIES = {"stl_prognosis": "configs/strategies/stl_prognosis.yaml", "mdmt": None}
# the same for both strategies; evaluation gets the network and loader ids, training all of them
MODEL = {"backbone": "resnet10", "image_size": "64", "batch_size": "32", "num_workers": "2"}
SCHEDULE = {"max_epochs": "20", "warmup_epochs": "2", "early_stop_patience": "10"}
METRICS = ("roc_auc", "accuracy", "f1", "g_mean")
TRAINER_TIME = re.compile(r"SupervisedTrainer - INFO - Engine run finished\. Time taken: (\d+):(\d+):([\d.]+)")


def _config(workflow: str, strategy: str) -> str:
    files = [f"configs/{workflow}.yaml"] + ([STRATEGIES[strategy]] if STRATEGIES[strategy] else [])
    return json.dumps(files) if len(files) > 1 else files[0]


def run_one(strategy: str, seed: int, data: Path, out: Path) -> Path:
    """Train and evaluate one run unless its metrics exist; returns its ``metrics.json``."""
    root = out / f"{strategy}-{seed}"
    # a strategy file puts the evaluation under eval/<strategy>, evaluate.yaml alone under eval/
    metrics = (root / "eval" / strategy if STRATEGIES[strategy] else root / "eval") / "metrics.json"
    if metrics.is_file():
        return metrics
    common = ["--dataset_dir", str(data), "--demo_size", "small", "--seed", str(seed), "--bundle_root", str(root)]
    (out / "logs").mkdir(parents=True, exist_ok=True)
    for workflow, name, ids in (("train", "training", MODEL | SCHEDULE), ("evaluate", "evaluating", MODEL)):
        command = [sys.executable, "-m", "monai.bundle", "run", name, "--config_file", _config(workflow, strategy)]
        command += common + [item for key, value in ids.items() for item in (f"--{key}", value)]
        with open(out / "logs" / f"{strategy}-{seed}.{workflow[:5]}.log", "w") as log:
            subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True)
    return metrics


def row(strategy: str, seed: int, metrics_file: Path, out: Path) -> dict[str, float]:
    """The run's test prognosis metrics (value, CI bounds) and the trainer's run time in seconds."""
    found = json.loads(metrics_file.read_text())["tasks"]["prognosis"]["metrics"]
    values = {name: found[name]["value"] for name in METRICS}
    values |= {"auc_low": found["roc_auc"]["ci_low"], "auc_high": found["roc_auc"]["ci_high"]}
    times = TRAINER_TIME.findall((out / "logs" / f"{strategy}-{seed}.train.log").read_text())
    hours, minutes, seconds = times[-1] if times else ("nan", "0", "0")
    values["train_s"] = float(hours) * 3600 + float(minutes) * 60 + float(seconds)
    return values


def _fmt(values: list[float], key: str) -> str:
    digits = 0 if key == "train_s" else 3
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table(results: dict[tuple[str, int], dict[str, float]]) -> str:
    """Per-seed rows grouped by strategy, each group closed by mean ± SD (sample SD over seeds)."""
    lines = ["| strategy | seed | ROC AUC [95% CI] | accuracy | F1 | G-mean | training (s) |", "|---" * 7 + "|"]
    for strategy in STRATEGIES:
        runs = {seed: v for (name, seed), v in results.items() if name == strategy}
        for seed, v in runs.items():
            auc = f"{v['roc_auc']:.3f} [{v['auc_low']:.3f}, {v['auc_high']:.3f}]"
            cells = [auc] + [f"{v[key]:.3f}" for key in METRICS[1:]] + [f"{v['train_s']:.0f}"]
            lines.append(f"| {strategy} | {seed} | " + " | ".join(cells) + " |")
        if len(runs) > 1:
            cells = [_fmt([v[key] for v in runs.values()], key) for key in (*METRICS, "train_s")]
            lines.append(f"| **{strategy}** | mean ± SD | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with aiforcovid.json and brixia.json")
    parser.add_argument("--out", type=Path, required=True, help="runs go to OUT/<strategy>-<seed>, logs to OUT/logs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    results = {}
    for seed in args.seeds:
        for strategy in STRATEGIES:
            results[(strategy, seed)] = row(strategy, seed, run_one(strategy, seed, args.data, args.out), args.out)
    print(table(results))


if __name__ == "__main__":
    main()
