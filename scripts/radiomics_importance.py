"""LightGBM importance of the radiomics features for each COVID-MTL task: the top 10 features per task.

The features are those the bundle's CT pipeline gives the radiomics network (same preprocessing, same cache), taken
from the training and validation scans of the datalist; one gradient-boosted classifier per task is fitted on the
scans that carry its label, and the features are ranked by their total split gain. This is an analysis (as in the
paper), not an input selection: the network gets every feature.

Example:
    python scripts/radiomics_importance.py --dataset_dir data/demo_ct --out eval/covid_mtl_ct/radiomics_importance
    python scripts/radiomics_importance.py --dataset_dir data/ablation_ct \\
        --overrides '{"ct_spacing": [5.625, 5.625, 6.0], "snake_spacing": 4.0, "radiomics_image_types": ["Original"]}'
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from monai.bundle import ConfigParser
from monai.transforms import Compose

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/covid_mtl_ct/train.yaml"


def radiomics_table(overrides: dict[str, Any]) -> tuple[pd.DataFrame, list[dict[str, Any]], Any]:
    """Radiomics vectors (rows = training + validation scans) through the bundle's own CT pipeline.

    Returns:
        The feature table (columns = feature names), the records in the same order, and the task set.
    """
    os.chdir(ROOT)  # the config's %file macros are relative to the bundle root
    parser = ConfigParser()
    parser.read_config(CONFIG)
    parser.update({**overrides, "radiomics": True})
    parsed = parser.get_parsed_content
    parsed("initialize")  # generates and prepares the demo data when it is missing
    pipeline = Compose(parsed("load_transforms") + parsed("radiomics_transforms"))
    names = parsed("radiomics_transforms")[0].extractor.names
    splits = parsed("splits")
    records = splits["train"] + splits["val"]
    rows = [pipeline(dict(record))["radiomics"].numpy() for record in records]
    return pd.DataFrame(np.stack(rows), columns=names), records, parsed("tasks")


def importance(features: pd.DataFrame, records: list[dict[str, Any]], tasks: Any, top: int = 10, seed: int = 0):
    """Top ``top`` features by LightGBM gain for every task, as {task: [(feature, gain share), ...]}."""
    from lightgbm import LGBMClassifier

    from bundle.tasks import TaskSet

    tasks = TaskSet(tasks)
    result: dict[str, list[tuple[str, float]]] = {}
    for task in tasks:
        labels = np.array([task.encode(record)[0] for record in records])
        present = ~np.isnan(labels)
        model = LGBMClassifier(
            n_estimators=200,
            learning_rate=0.05,
            num_leaves=15,
            min_child_samples=3,
            importance_type="gain",
            random_state=seed,
            verbose=-1,
        )
        model.fit(features[present], labels[present].astype(int))
        gain = pd.Series(model.feature_importances_, index=features.columns)
        share = (gain / max(gain.sum(), 1e-12)).sort_values(ascending=False)
        result[task.name] = [(name, float(value)) for name, value in share.head(top).items()]
    return result


def main(argv: list[str] | None = None) -> dict:
    """Parse the command line, compute (or read from the cache) the features, rank them, print and save."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset_dir", default="data/demo_ct", help="CT demo or HUST-19 root with hust19.json")
    parser.add_argument("--overrides", default="{}", help="JSON of config ids to override (e.g. ct_spacing)")
    parser.add_argument("--out", type=Path, default=Path("eval/covid_mtl_ct/radiomics_importance"))
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args(argv)
    out = args.out.resolve()
    overrides = {"dataset_dir": str(Path(args.dataset_dir).resolve()), **json.loads(args.overrides)}
    features, records, tasks = radiomics_table(overrides)
    ranking = importance(features, records, tasks, args.top)
    out.mkdir(parents=True, exist_ok=True)
    (out / "top_features.json").write_text(json.dumps(ranking, indent=1))
    features.assign(patient=[r["patient"] for r in records]).to_csv(out / "features.csv", index=False)
    for task, top in ranking.items():
        print(f"\n{task} (n={len(records)} scans, gain share):")
        for name, share in top:
            print(f"  {share:6.3f}  {name}")
    return ranking


if __name__ == "__main__":
    main()
