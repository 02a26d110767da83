"""MultiMix on synthetic data: label budgets x {MultiMix, classification-only, segmentation-only U-Net}, in-domain and
cross-domain.

Each run is the bundle's own training workflow (configs/multimix/train.yaml, plus a baseline override) followed by its
evaluation workflow on the in-domain test split (Kermany / JSRT style) and on the cross-domain sets (NIH / Montgomery
style, never trained on). Runs go through ``monai.bundle.run`` in this one process, so torch and MONAI load once.
The schedule is a small budget (small images and network, a few short epochs, a higher learning rate than the
paper's 1e-4 so that something is learned in so few steps); every setting is written beside the results.

Example:
    OMP_NUM_THREADS=1 nice -n 10 python scripts/multimix_experiment.py --data data/multimix_small \
        --out runs/multimix_experiment
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from monai.bundle import run

from bundle.data.multimix_synthetic import ensure_multimix_datalists

ROOT = Path(__file__).resolve().parents[1]
METHODS = {
    "multimix": [],
    "classification_only": ["configs/multimix/classification_only.yaml"],
    "segmentation_only": ["configs/multimix/segmentation_only.yaml"],
}
COLUMNS = ("accuracy", "f1_NORMAL", "f1_PNEUMONIA", "dice", "hd95")


def _datalists(data: Path) -> tuple[dict[str, str], dict[str, str]]:
    inside = {"classification": str(data / "kermany.json"), "segmentation": str(data / "jsrt.json")}
    cross = {"classification": str(data / "nih.json"), "segmentation": str(data / "montgomery.json")}
    return inside, cross


def run_one(method: str, cls_labels: str, seg_labels: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train one method under one label budget and evaluate it in-domain and cross-domain."""
    name = f"{method}_cls{cls_labels}_seg{seg_labels}"
    out = Path(args.out) / name
    common = {
        "dataset_dir": str(args.data),
        "demo_size": args.size,
        "ckpt_dir": str(out / "models"),
        "image_size": args.image_size,
        "channels": args.channels,
        "seed": args.seed,
    }
    configs = ["configs/multimix/train.yaml", *METHODS[method]]
    start = time.perf_counter()
    run(
        "training",
        config_file=[str(ROOT / c) for c in configs],
        output_dir=str(out / "runs"),
        cls_labels=cls_labels,
        seg_labels=seg_labels,
        batch_size=args.batch_size,
        max_epochs=args.epochs,
        iterations_per_epoch=args.iterations,
        learning_rate=args.learning_rate,
        lr_step=args.lr_step,
        num_workers=0,
        **common,
    )
    seconds = time.perf_counter() - start
    result: dict[str, Any] = {"method": method, "cls_labels": cls_labels, "seg_labels": seg_labels, "train_s": seconds}
    evaluation = ["configs/multimix/evaluate.yaml", *METHODS[method]]
    for domain in ("in", "cross"):
        run(
            "evaluating",
            config_file=[str(ROOT / c) for c in evaluation],
            eval_dir=str(out / "eval"),
            test_domain=domain,
            num_workers=0,
            **common,
        )
        metrics = json.loads((out / "eval" / f"metrics_{domain}.json").read_text())["metrics"]
        result[domain] = {key: metrics.get(key) for key in (*COLUMNS, "n_classification", "n_segmentation")}
    return result


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def markdown_table(results: list[dict[str, Any]]) -> str:
    """The results as a markdown table; a baseline's untrained task is shown as '-'."""
    lines = [
        "| method | labels (cls / seg) | in: acc | in: F1 N / P | in: Dice | in: HD95 | cross: acc | cross: Dice "
        "| cross: HD95 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cls = r["method"] != "segmentation_only"
        seg = r["method"] != "classification_only"
        i, c = r["in"], r["cross"]
        lines.append(
            f"| {r['method']} | {r['cls_labels']} / {r['seg_labels']} "
            f"| {_cell(i['accuracy']) if cls else '-'} "
            f"| {(_cell(i['f1_NORMAL']) + ' / ' + _cell(i['f1_PNEUMONIA'])) if cls else '-'} "
            f"| {_cell(i['dice']) if seg else '-'} | {_cell(i['hd95']) if seg else '-'} "
            f"| {_cell(c['accuracy']) if cls else '-'} | {_cell(c['dice']) if seg else '-'} "
            f"| {_cell(c['hd95']) if seg else '-'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Parse the command line, make the data if needed, run every budget and method, write the results.

    Returns:
        One result per run (also in ``<out>/results.json`` and, as a table, ``<out>/results.md``).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/multimix_small"), help="synthetic data folder")
    parser.add_argument("--size", default="small", help="synthetic data size (made on first use)")
    parser.add_argument("--out", type=Path, default=Path("runs/multimix_experiment"))
    parser.add_argument("--budgets", default="100:10,1000:50,all:all", help="cls:seg label budgets, comma-separated")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--channels", type=lambda s: [int(c) for c in s.split(",")], default=[8, 16, 32, 64, 128])
    parser.add_argument("--batch_size", type=int, default=5, help="images per stream and step")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=30, help="steps per epoch")
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--lr_step", type=int, default=4, help="StepLR period in epochs (gamma 0.1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING)

    inside, cross = _datalists(args.data)
    ensure_multimix_datalists([inside, cross], demo=True, root=args.data, size=args.size, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for budget in args.budgets.split(","):
        cls_labels, seg_labels = budget.split(":")
        for method in args.methods.split(","):
            results.append(run_one(method, cls_labels, seg_labels, args))
            print(json.dumps(results[-1]), flush=True)
            settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
            (args.out / "results.json").write_text(json.dumps({"settings": settings, "results": results}, indent=1))
            (args.out / "results.md").write_text(markdown_table(results) + "\n")
    print(markdown_table(results))
    return results


if __name__ == "__main__":
    main()
