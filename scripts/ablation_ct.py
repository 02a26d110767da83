"""COVID-MTL ablation on the synthetic CT data: Shift3D, loss weighting, radiomics, single- vs multi-task.

Every variant is the bundle's own training config (configs/covid_mtl_ct/train.yaml) with a few ids overridden; the
CT preprocessing (reading, lung segmentation, radiomics, lung box) runs once and is shared by all variants, which then
train with the config's trainer, loss, optimiser and checkpointer and are scored on the 30% test split with the model
selected on validation. Small budget by design (tiny network, few epochs): read the numbers as a smoke-level
comparison on synthetic data, not as a reproduction of the paper.

Example:
    python scripts/ablation_ct.py --data data/ablation_ct --epochs 15 --seeds 0 1 --json docs/ablation_ct.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose
from monai.utils import set_determinism
from sklearn.metrics import roc_auc_score

from bundle.data.synthetic_ct import CT_DEMO_SIZES
from bundle.engine.checkpoint import load_checkpoint
from bundle.tasks import TaskSet

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/covid_mtl_ct/train.yaml"
SINGLE = "%configs/covid_mtl_ct/single_task.yaml#"
# name -> config overrides on top of the full model (Shift3D, Dirichlet weighting, radiomics, three tasks)
VARIANTS: dict[str, dict[str, Any]] = {
    "full (Shift3D + Dirichlet + radiomics, MTL)": {},
    "without Shift3D": {"shift_prob": 0.0},
    "fixed weighting": {"weighting": "fixed"},
    "uncertainty weighting": {"weighting": "uncertainty"},
    "without radiomics": {"radiomics": False},
    "single-task: radiology": {"tasks": SINGLE + "radiology"},
    "single-task: NAT": {"tasks": SINGLE + "nat"},
    "single-task: severity": {"tasks": SINGLE + "severity"},
}


def base_overrides(data: Path, size: str, epochs: int) -> dict[str, Any]:
    """The small-budget settings every variant shares: native demo grid, 4 mm snake, 32^3 box, narrow network."""
    return {
        "dataset_dir": str(data),
        "demo_size": size,
        "ct_spacing": list(CT_DEMO_SIZES[size].spacing),
        "snake_spacing": 4.0,
        "roi_size": 32,
        "fire_channels": [16, 16, 32, 32, 48, 48, 64, 64],
        "stem_channels": 16,
        "radiomics_image_types": ["Original"],
        "max_epochs": epochs,
        "num_workers": 0,
    }


def config(overrides: dict[str, Any], store: dict[str, Any] | None = None) -> ConfigParser:
    """The training config with ``overrides``; ``store`` is visible to its expressions as ``PRE``."""
    parser = ConfigParser(globals={"PRE": store} if store is not None else None)
    parser.read_config(CONFIG)
    parser.update(overrides)
    return parser


def preprocess(base: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Run the CT preprocessing once (radiomics included) on the train, validation and test records.

    The result is kept in ``<dataset_dir>/ablation_preprocessed.pt`` with the settings it was made with, so a rerun
    with the same settings starts training at once.
    """
    cache = Path(base["dataset_dir"]) / "ablation_preprocessed.pt"
    settings = json.dumps({k: v for k, v in base.items() if k != "max_epochs"}, sort_keys=True)
    if cache.is_file():
        stored = torch.load(cache, weights_only=True)
        if stored["settings"] == settings:
            return stored["store"]
    parser = config({**base, "radiomics": True})
    parser.get_parsed_content("initialize")
    pipeline = Compose(parser.get_parsed_content("preprocessing_transforms"))
    splits = parser.get_parsed_content("splits")
    store = {
        part: [
            {k: v.as_tensor() if hasattr(v, "as_tensor") else v for k, v in pipeline(dict(r)).items()} for r in records
        ]
        for part, records in splits.items()
    }
    torch.save({"settings": settings, "store": store}, cache)
    return store


def scores(tasks: TaskSet, pred: torch.Tensor, label: torch.Tensor) -> dict[str, float]:
    """Per task accuracy and ROC AUC (binary; macro one-vs-rest for severity) on the labelled test scans."""
    out = {}
    probabilities, labels = tasks.probabilities(pred), tasks.split_labels(label)
    for task in tasks:
        present = ~labels[task.name][:, 0].isnan()
        y, p = labels[task.name][present, 0].long().numpy(), probabilities[task.name][present].numpy()
        out[f"{task.name}_accuracy"] = float((p.argmax(1) == y).mean())
        if len(np.unique(y)) < len(task.classes):
            out[f"{task.name}_auc"] = math.nan
        elif len(task.classes) == 2:
            out[f"{task.name}_auc"] = float(roc_auc_score(y, p[:, 1]))
        else:
            out[f"{task.name}_auc"] = float(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    return out


def run_variant(base: dict[str, Any], overrides: dict[str, Any], store: dict[str, Any], seed: int) -> dict:
    """Train one variant with the bundle's trainer and score its validation-selected model on the test split."""
    with tempfile.TemporaryDirectory() as scratch:
        parser = config(
            {
                **base,
                **overrides,
                "seed": seed,
                "bundle_root": scratch,
                "train#data": "$PRE['train']",
                "validate#data": "$PRE['val']",
                "train#preprocessing#transforms": "@label_transforms",
                "validate#preprocessing#transforms": "@label_transforms",
                "train#handlers": [  # the config's validation, schedule and checkpoint handlers, without logging
                    {"_target_": "ValidationHandler", "validator": "@validate#evaluator", "interval": 1},
                    {"_target_": "LrScheduleHandler", "lr_scheduler": "@lr_scheduler", "epoch_level": True},
                    "@train#checkpointer",
                ],
                "validate#handlers": [],
            },
            store,
        )
        set_determinism(seed)
        start = time.perf_counter()
        parser.get_parsed_content("train#trainer").run()
        network = parser.get_parsed_content("network")
        network.load_state_dict(load_checkpoint(Path(parser.get_parsed_content("ckpt_dir")) / "model.pt"))
        network.eval()
        labels = Compose(parser.get_parsed_content("label_transforms"))
        test = [labels(dict(item)) for item in store["test"]]
        with torch.no_grad():
            image = torch.stack([t["image"] for t in test])
            extra = {"radiomics": torch.stack([t["radiomics"] for t in test])} if "radiomics" in test[0] else {}
            pred = network(image, **extra)
        tasks = TaskSet(parser.get_parsed_content("tasks"))
        return scores(tasks, pred, torch.stack([t["label"] for t in test])) | {"seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> dict:
    """Parse the command line, preprocess once, run every variant for every seed, print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/ablation_ct"), help="generated on first use")
    parser.add_argument("--size", choices=sorted(CT_DEMO_SIZES), default="small")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--json", type=Path, help="write the per-seed results here")
    args = parser.parse_args(argv)
    data, json_path = args.data.resolve(), args.json.resolve() if args.json else None
    os.chdir(ROOT)  # the config's %file macros are relative to the bundle root
    logging.getLogger("ignite").setLevel(logging.WARNING)
    base = base_overrides(data, args.size, args.epochs)
    start = time.perf_counter()
    store = preprocess(base)
    prep_seconds = time.perf_counter() - start
    counts = {part: len(items) for part, items in store.items()}
    print(f"preprocessed {counts} in {prep_seconds:.0f} s")
    results: dict[str, list[dict]] = {}
    for name, overrides in VARIANTS.items():
        results[name] = [run_variant(base, overrides, store, seed) for seed in args.seeds]
        print(
            name, json.dumps({k: round(float(np.nanmean([r[k] for r in results[name]])), 3) for k in results[name][0]})
        )
    columns = [f"{t}_{m}" for t in ("detection_radiology", "detection_nat", "severity") for m in ("auc", "accuracy")]
    lines = ["| variant | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, runs in results.items():
        cells = []
        for column in columns:
            values = [r[column] for r in runs if column in r]
            cells.append("-" if not values else f"{np.nanmean(values):.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    summary = {"splits": counts, "preprocessing_s": prep_seconds, "settings": base, "seeds": args.seeds}
    if json_path:
        json_path.write_text(json.dumps({"summary": summary, "results": results}, indent=1))
    return results


if __name__ == "__main__":
    main()
