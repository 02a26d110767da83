"""The quick-start demo (`make demo`): synthetic DICOM data -> datalists -> MDMT training -> evaluation -> inference.

Every step is the real command a user runs (`scripts/make_demo_data.py`, `scripts/prepare_data.py`,
`python -m monai.bundle run ...`); the demo only adds overrides that make training fit in a few minutes on a 2-core
CPU (a smaller backbone and image size, fewer epochs). The configs' own defaults stay the paper's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bundle.data.synthetic import GENERATED_MARKER

ROOT = Path(__file__).resolve().parents[1]

# Sized for the 10-minute budget of `make demo` on 2 CPU cores (docs/performance.md: what each step costs). The
# demo's fold has 120/40/40 AIforCOVID and 360/120/120 BRIXIA images: 8 epochs of resnet10 at 64 px, no model
# selection in the first 2 (noisy) epochs, and selection on the total validation loss, not the paper's prognosis
# loss: 40 validation prognosis labels are too few to select on, while the severity loss (120 BRIXIA images) tracks
# the image-visible severity that the prognosis depends on. Measured times and AUCs: docs/README.md (Performance).
DEMO_NETWORK = ["--backbone", "resnet10", "--image_size", "64"]
DEMO_TRAINING = [
    "--max_epochs", "8",
    "--warmup_epochs", "2",
    "--early_stop_patience", "8",
    "--select_metric", "total_loss",
    "--batch_size", "32",
    "--num_workers", "2",
]  # fmt: skip
# Inference runs on a folder of this many DICOMs (the evaluation step has already scored the whole test split).
INBOX_SIZE = 16
# --quick (tests, e.g. the PHI scan of every output): the smallest run that still goes through every step.
QUICK_NETWORK = ["--backbone", "resnet10", "--image_size", "64"]
QUICK_TRAINING = ["--max_epochs", "1", "--warmup_epochs", "0", "--batch_size", "8", "--num_workers", "0"]
QUICK_EVALUATION = ["--n_boot", "20", "--num_workers", "0"]


def run(step: str, command: list[str]) -> float:
    """Run one step, streaming its output; stop the demo with the step's exit status if it fails."""
    print(f"\n=== {step}\n$ {' '.join(command)}", flush=True)
    start = time.perf_counter()
    completed = subprocess.run(command, cwd=ROOT)
    if completed.returncode != 0:
        print(f"demo: step '{step}' failed with exit status {completed.returncode}", file=sys.stderr)
        sys.exit(completed.returncode)
    return time.perf_counter() - start


def inbox(data: Path, count: int = INBOX_SIZE) -> Path:
    """A folder of DICOMs as a PACS export would deliver them: links to the first ``count`` AIforCOVID images."""
    folder = data / "inbox"
    folder.mkdir(exist_ok=True)
    for image in sorted((data / "AIforCOVID" / "imgs").glob("*.dcm"))[:count]:
        link = folder / image.name
        if not link.exists():
            link.symlink_to(image.resolve())
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/demo", help="where the synthetic datasets and datalists go")
    parser.add_argument("--size", choices=["tiny", "small", "default"], help="default: tiny with --quick, else default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny data, tiny network, 1 epoch (for tests)")
    parser.add_argument(
        "--out", type=Path, help="where models/, runs/, eval/ and outputs/ go (default: the bundle root)"
    )
    args = parser.parse_args()
    data = Path(args.data)
    size = args.size or ("tiny" if args.quick else "default")
    out = args.out or Path(".")
    network, training = (QUICK_NETWORK, QUICK_TRAINING) if args.quick else (DEMO_NETWORK, DEMO_TRAINING)
    evaluation = QUICK_EVALUATION if args.quick else []
    py = sys.executable
    root_args = ["--bundle_root", str(out)] if args.out else []
    bundle_args = ["--dataset_dir", str(data), "--seed", str(args.seed), *root_args]
    timings: dict[str, float] = {}

    if not (data / GENERATED_MARKER).exists():
        timings["generate"] = run(
            "generate synthetic DICOM data",
            [py, "scripts/make_demo_data.py", "--out", str(data), "--size", size, "--seed", str(args.seed)],
        )
    for name, folder in (("aiforcovid", "AIforCOVID"), ("brixia", "BRIXIA")):
        timings[f"prepare {name}"] = run(
            f"prepare the {name} datalist",
            [py, "scripts/prepare_data.py", name, "--root", str(data / folder), "--out", str(data / f"{name}.json")],
        )
    bundle = [py, "-m", "monai.bundle", "run"]
    timings["train"] = run(
        "train MDMT",
        [*bundle, "training", "--config_file", "configs/train.yaml", *bundle_args, *network, *training],
    )
    timings["evaluate"] = run(
        "evaluate on the test split",
        [*bundle, "evaluating", "--config_file", "configs/evaluate.yaml", *bundle_args, *network, *evaluation],
    )
    timings["infer"] = run(
        "infer on a folder of DICOMs",
        [
            *bundle, "inference", "--config_file", "configs/inference.yaml", *root_args, *network,
            "--input", str(inbox(data)), "--output_dir", str(out / "outputs" / "demo"),
        ],
    )  # fmt: skip

    report = json.loads((ROOT / out / "eval" / "metrics.json").read_text())
    auc = report["tasks"]["prognosis"]["metrics"]["roc_auc"]
    print("\n=== demo finished")
    for step, seconds in timings.items():
        print(f"  {step:<22} {seconds:7.1f} s")
    print(f"  {'total':<22} {sum(timings.values()):7.1f} s")
    print(f"test prognosis ROC AUC: {auc['value']:.3f} (95% CI {auc['ci_low']:.3f}-{auc['ci_high']:.3f})")
    print(f"results (under {out}):")
    print("  best model weights      models/model.pt (resumable state: models/checkpoint_last.pt)")
    print("  training logs           runs/ (tensorboard --logdir runs)")
    print("  test metrics and plots  eval/metrics.json, eval/*.png, eval/predictions.csv")
    print("  inference results       outputs/demo/predictions.csv and predictions.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
