"""The SSL family's recorded experiment: {no pre-training, MoCo, inpainting} x {single-task, multi-task} at small
label budgets, on synthetic SIIM-like data, every run a real ``monai.bundle run`` of the family's configs.

1. synthetic data (``experiment`` size) and its datalist with 3 study-level folds (test = fold 0, validation = 1);
2. MoCo and inpainting pre-training on every train+validation image, labels unused;
3. for each label budget (labelled training images per class) and each encoder initialisation, single-task and
   multi-task fine-tuning, then ``scripts/critical_eval.py`` on the test fold (numbers for every run, figures for
   the run named by ``--figures_for``);
4. ``results.json`` and ``results.md`` (the table of docs/ssl.md) under ``--out``.

A training that finished leaves a marker (``complete.json`` in its checkpoint folder) and is skipped; one that was
killed resumes from its last checkpoint; an evaluation with ``metrics.json`` is skipped. The fine-tuning seeds are
the outer loop, so an experiment stopped early still holds every cell for the seeds it finished (rerun it with
those seeds to build the table). Sized for a shared 2-core CPU: a half-width ResNet-10 at 64 px, few epochs, model
selection on part of the validation fold.
Usage::

    nice -n 10 python scripts/ssl_experiment.py --out runs/ssl_experiment --figures docs/ssl
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bundle.data.siim_covid import prepare_siim_covid
from bundle.data.synthetic_siim import generate_siim

ROOT = Path(__file__).resolve().parents[1]
INITS = ("none", "moco", "inpainting")
MODES = ("single", "multi")


def train(args: list[str], ckpt_dir: Path, log: Path) -> None:
    """Run a training (resuming a killed one) unless its completion marker exists; write the marker when it ends."""
    marker = ckpt_dir / "complete.json"
    if marker.exists():
        return
    run([*args, "--ckpt_dir", str(ckpt_dir), "--resume", "True"], log)
    marker.write_text(json.dumps({"command": args}) + "\n")


def run(args: list[str], log: Path) -> None:
    """Run a command from the bundle root, its output appended to ``log``; raise with the log's tail when it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(log, "a") as f:
        completed = subprocess.run(args, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env={**os.environ})
    print(f"  {time.time() - start:6.0f} s  {log.name}", flush=True)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{log.read_text()[-3000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/ssl_experiment"))
    parser.add_argument("--figures", type=Path, default=Path("docs/ssl"), help="where the documented figures go")
    parser.add_argument("--figures_for", default="moco_multi_24_s0", help="run whose evaluation figures to keep")
    parser.add_argument("--size", default="experiment")
    parser.add_argument("--budgets", type=int, nargs="+", default=[8, 24])
    parser.add_argument("--backbone", default="resnet10")
    parser.add_argument("--backbone_kwargs", default="{'widen_factor': 0.5}", help="as in the configs (a dict literal)")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--pretrain_epochs", type=int, default=15)
    parser.add_argument("--finetune_epochs", type=int, default=20)
    parser.add_argument("--queue_size", type=int, default=128)
    parser.add_argument("--val_images", type=int, default=40, help="validation images used for model selection")
    parser.add_argument("--seed", type=int, default=0, help="data, folds and pre-training seed")
    parser.add_argument("--finetune_seeds", type=int, nargs="+", default=[0], help="label draws and fine-tuning seeds")
    args = parser.parse_args(argv)

    out = args.out.resolve()
    data = out / "data"
    datalist = data / "siim_covid.json"
    if not datalist.exists():
        print(json.dumps(generate_siim(data, size=args.size, seed=args.seed)), flush=True)
        prepare_siim_covid(data, datalist, n_folds=3, seed=args.seed)
    common = [
        "--dataset_dir", str(data), "--datalist", str(datalist), "--backbone", args.backbone,
        "--backbone_kwargs", args.backbone_kwargs, "--image_size", str(args.image_size), "--num_workers", "0",
    ]  # fmt: skip
    bundle = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file"]

    # The MoCo queue must stay below the images seen per epoch, or an image's own older key is one of its negatives.
    method_args = {"moco": ["--queue_size", str(args.queue_size)], "inpainting": []}
    for method, extra in method_args.items():
        train(
            [*bundle, f"configs/ssl/{method}.yaml", *common, *extra, "--seed", str(args.seed),
             "--output_dir", str(out / "tensorboard" / method), "--max_epochs", str(args.pretrain_epochs)],
            out / "pretrain" / method,
            out / "logs" / f"pretrain_{method}.log",
        )  # fmt: skip

    results = []
    runs = [(b, i, m, s) for s in args.finetune_seeds for b in args.budgets for i in INITS for m in MODES]
    for budget, init, mode, seed in runs:
        name = f"{init}_{mode}_{budget}_s{seed}"
        overrides = [*common, "--seed", str(seed), "--label_budget", str(budget)]
        overrides += ["--multitask", str(mode == "multi")]
        selection = ["--validate#data", f"$@splits['val'][:{args.val_images}]"]
        if init != "none":
            overrides += ["--pretrained", str(out / "pretrain" / init / f"{init}_backbone.pt")]
        ckpt = out / "finetune" / name
        train(
            [*bundle, "configs/ssl/finetune.yaml", *overrides, *selection,
             "--output_dir", str(out / "tensorboard" / name), "--max_epochs", str(args.finetune_epochs)],
            ckpt,
            out / "logs" / f"finetune_{name}.log",
        )  # fmt: skip
        evaluation = out / "eval" / name
        if not (evaluation / "metrics.json").exists():
            figures = [] if name == args.figures_for else ["--no-figures"]
            run(
                [sys.executable, "scripts/critical_eval.py", "--config_file", "configs/ssl/finetune.yaml",
                 "--checkpoint", str(ckpt / "model.pt"), "--out", str(evaluation), *figures, *overrides],
                out / "logs" / f"eval_{name}.log",
            )  # fmt: skip
        metrics = json.loads((evaluation / "metrics.json").read_text())
        results.append({"name": name, "budget": budget, "init": init, "mode": mode, "seed": seed, **summary(metrics)})

    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    table = markdown_table(results) + "\n" + mean_table(results)
    (out / "results.md").write_text(table)
    print(table)
    chosen = out / "eval" / args.figures_for
    if chosen.is_dir():
        args.figures.mkdir(parents=True, exist_ok=True)
        for png in sorted(chosen.glob("*.png")):
            (args.figures / png.name).write_bytes(png.read_bytes())
        (args.figures / "readout.md").write_text((chosen / "readout.md").read_text())
    return 0


def summary(metrics: dict) -> dict:
    """The numbers of one run that go into the table."""
    classification, shortcut = metrics["classification"], metrics["shortcut"]
    return {
        "n_test": metrics["n"],
        "accuracy": classification["accuracy"],
        "macro_f1": classification["macro_f1"],
        "recall": {name: c["recall"] for name, c in classification["per_class"].items()},
        "top_label_ece": metrics["calibration"]["top_label_ece"],
        "dice": metrics.get("opacity_dice"),
        "acc_lungs_hidden": shortcut["accuracy"]["lungs"],
        "acc_outside_hidden": shortcut["accuracy"]["outside"],
        "majority_rate": shortcut["majority_rate"],
    }


def markdown_table(results: list[dict]) -> str:
    """One row per run: budget, initialisation, mode, accuracy, macro F1, per-class recall, Dice, ECE, shortcut test."""
    header = (
        "| labels/class | seed | encoder init | tasks | accuracy | macro F1 | recall neg / typ / ind / aty "
        "| opacity Dice | top-label ECE | acc. lungs hidden | acc. outside hidden |\n" + "|---" * 11 + "|\n"
    )
    rows = []
    for r in results:
        recall = " / ".join(f"{v:.2f}" for v in r["recall"].values())
        dice = f"{r['dice']:.3f}" if r["dice"] is not None else "-"
        rows.append(
            f"| {r['budget']} | {r['seed']} | {r['init']} | {r['mode']} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} "
            f"| {recall} | {dice} | {r['top_label_ece']:.3f} | {r['acc_lungs_hidden']:.3f} "
            f"| {r['acc_outside_hidden']:.3f} |"
        )
    return header + "\n".join(rows) + "\n"


def mean_table(results: list[dict]) -> str:
    """Mean and standard deviation over the fine-tuning seeds of each (budget, initialisation, tasks) cell."""
    header = (
        "| labels/class | encoder init | tasks | seeds | accuracy | macro F1 | opacity Dice | acc. lungs hidden "
        "| acc. outside hidden |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    cells: dict[tuple, list[dict]] = {}
    for r in results:
        cells.setdefault((r["budget"], r["init"], r["mode"]), []).append(r)

    def stat(runs: list[dict], key: str) -> str:
        values = [r[key] for r in runs if r[key] is not None]
        return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if values else "-"

    rows = [
        f"| {b} | {i} | {m} | {len(rs)} | {stat(rs, 'accuracy')} | {stat(rs, 'macro_f1')} | {stat(rs, 'dice')} "
        f"| {stat(rs, 'acc_lungs_hidden')} | {stat(rs, 'acc_outside_hidden')} |"
        for (b, i, m), rs in cells.items()
    ]
    return header + "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.exit(main())
