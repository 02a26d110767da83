"""The study tools: grid and shards, statistics on small n, and a tiny study end to end, killed and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from bundle.study.grid import StudySpec, parse_shard, select_shard, with_dependencies
from bundle.study.statistics import compare_pair, friedman, spread
from conftest import ROOT

GRID = {
    "study_dir": "study/x",
    "backbones": ["resnet10", "resnet18", "densenet121"],
    "strategies": ["mdmt_averaged", "ft", "mdmt"],
    "protocols": {"cv": [0, 1, 2, 3, 4], "loco": ["A", "B"]},
}


def test_dependencies_are_added_and_ordered() -> None:
    assert with_dependencies(["ft"]) == ["stl_severity", "ft"]
    assert with_dependencies(["mdmt_averaged", "mdmt"]) == ["stl_prognosis", "stl_severity", "mdmt", "mdmt_averaged"]
    with pytest.raises(ValueError, match="unknown strategies"):
        with_dependencies(["stl"])
    with pytest.raises(ValueError, match="unknown backbones"):
        StudySpec.from_mapping({**GRID, "backbones": ["resnet9"]})


@pytest.mark.parametrize("count", [1, 2, 3, 7, 40])
def test_shards_partition_the_grid_and_keep_dependencies_together(count: int) -> None:
    spec = StudySpec.from_mapping(GRID, base_dir=ROOT)
    grid = spec.runs()
    assert len(grid) == 3 * 7 * 5
    shards = [[run for unit in select_shard(spec.units(), i, count) for run in unit.runs] for i in range(1, count + 1)]
    assert sorted(run for shard in shards for run in shard) == sorted(grid)  # union = grid, and no run twice
    for shard in shards:
        position = {(run.backbone, run.split, run.strategy): i for i, run in enumerate(shard)}
        for (backbone, split, strategy), i in position.items():
            for needed in {"ft": ["stl_severity"], "mdmt_averaged": ["stl_prognosis", "stl_severity"]}.get(
                strategy, []
            ):
                assert position[(backbone, split, needed)] < i
    assert parse_shard("2/3") == (2, 3)
    with pytest.raises(ValueError):
        parse_shard("4/3")


def test_parallel_jobs_share_the_cores_between_subprocesses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--jobs 2`` on 4 cores gives each training 2 threads; a user's own OMP_NUM_THREADS wins."""
    from bundle.study.runner import StudyRunner

    runner = StudyRunner(StudySpec.from_mapping(GRID, base_dir=tmp_path), ROOT)
    show = [sys.executable, "-c", "import os; print('threads', os.environ.get('OMP_NUM_THREADS'))"]
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(StudyRunner, "run_unit", lambda self, unit: {unit: str(self._execute(show, tmp_path / unit))})
    assert runner.run_units(["one", "two"], jobs=2) == {"one": "True", "two": "True"}
    assert "threads 2" in (tmp_path / "one").read_text()
    runner.run_units(["single"], jobs=1)
    assert "threads None" in (tmp_path / "single").read_text()
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    runner.run_units(["mine"], jobs=2)
    assert "threads 3" in (tmp_path / "mine").read_text()


def _pooled(values: dict[str, list[float]], protocol: str = "cv", metric: str = "accuracy") -> pd.DataFrame:
    rows = [
        {"strategy": s, "backbone": f"b{i}", "protocol": protocol, "metric": metric, "value": v}
        for s, vs in values.items()
        for i, v in enumerate(vs)
    ]
    return pd.DataFrame(rows)


def test_paired_tests_are_one_sided_and_name_their_method() -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.6, 0.7, size=12)
    pooled = _pooled({"mdmt": list(base + 0.03 + rng.normal(0, 0.005, 12)), "stl_prognosis": list(base)})
    better = compare_pair(pooled, "cv", "accuracy", "mdmt", "stl_prognosis")
    worse = compare_pair(pooled, "cv", "accuracy", "stl_prognosis", "mdmt")
    assert better["n"] == 12 and better["mean_difference"] == pytest.approx(0.03, abs=0.005)
    for name in ("paired_t", "wilcoxon"):
        assert better["tests"][name]["p"] < 0.001 < 0.99 < worse["tests"][name]["p"]
        assert "one-sided" in better["tests"][name]["method"]


def test_small_n_and_degenerate_inputs_give_notes_not_errors() -> None:
    one = compare_pair(_pooled({"mdmt": [0.7], "ft": [0.6]}), "cv", "accuracy", "mdmt", "ft")
    assert one["tests"]["paired_t"]["p"] is None and "at least 2" in one["tests"]["paired_t"]["note"]
    three = compare_pair(_pooled({"mdmt": [0.7, 0.8, 0.75], "ft": [0.6, 0.7, 0.7]}), "cv", "accuracy", "mdmt", "ft")
    assert three["tests"]["paired_t"]["p"] is not None
    assert "smallest attainable p is 0.125" in three["tests"]["wilcoxon"]["note"]
    equal = compare_pair(_pooled({"mdmt": [0.7, 0.8], "ft": [0.7, 0.8]}), "cv", "accuracy", "mdmt", "ft")
    assert all(test["p"] is None and "zero" in test["note"] for test in equal["tests"].values())
    two_strategies = _pooled({"mdmt": [0.7, 0.8], "ft": [0.6, 0.7]})
    assert "at least 3" in friedman(two_strategies, "cv", "accuracy", ["ft", "mdmt"])["note"]
    constant = compare_pair(two_strategies, "cv", "accuracy", "mdmt", "ft")  # both differences exactly 0.1
    assert constant["tests"]["paired_t"]["p"] is None and "equal" in constant["tests"]["paired_t"]["note"]
    assert spread(two_strategies, "cv", "accuracy", ["ft", "mdmt"])["p"] is None
    absent = compare_pair(two_strategies, "loco", "accuracy", "mdmt", "ft")
    assert absent["n"] == 0 and absent["tests"]["wilcoxon"]["p"] is None


def test_spread_test_finds_a_strategy_that_depends_more_on_the_backbone() -> None:
    rng = np.random.default_rng(1)
    pooled = _pooled({"mdmt": list(0.7 + rng.normal(0, 0.005, 20)), "ft": list(0.7 + rng.normal(0, 0.08, 20))})
    result = spread(pooled, "cv", "accuracy", ["ft", "mdmt"])
    assert result["p"] < 0.01 and result["std"]["ft"] > result["std"]["mdmt"]
    assert "Brown-Forsythe" in result["method"]


# ---- a tiny study, end to end through the real workflows -------------------------------------------------------------
def _study_config(tmp: Path, data: Path) -> Path:
    config = {
        "study_dir": str(tmp / "study"),
        "backbones": ["resnet10", "resnet18"],
        "strategies": ["ft"],  # brings in stl_severity: the dependency is exercised
        "protocols": {"cv": [0, 1]},
        "comparisons": [["ft", "stl_severity"]],
        "overrides": {"image_size": 64},
        "train_overrides": {"max_epochs": 1, "batch_size": 8, "num_workers": 0, "warmup_epochs": 0},
        "eval_overrides": {"n_boot": 20, "num_workers": 0},
        "data": {"demo_data": True, "demo_size": "tiny", "dataset_dir": str(data)},
    }
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _script(name: str, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "scripts" / name), *args]


def _check(completed: subprocess.CompletedProcess) -> None:
    if completed.returncode != 0:
        pytest.fail(
            f"{completed.args} exited {completed.returncode}\n{completed.stdout[-3000:]}{completed.stderr[-5000:]}"
        )


@pytest.fixture(scope="module")
def killed_and_resumed(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Start the study, SIGKILL its process group once the first run is evaluated, then run it again to the end."""
    tmp = tmp_path_factory.mktemp("tiny_study")
    config = _study_config(tmp, tiny_demo)
    study = tmp / "study"
    env = dict(os.environ, OMP_NUM_THREADS="2")
    first = study / "runs" / "resnet10" / "cv-0" / "eval" / "stl_severity" / "predictions.csv"
    process = subprocess.Popen(
        _script("run_study.py", "--config", str(config)),
        cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    while not first.is_file() and process.poll() is None:
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = sorted(study.glob("runs/*/*/eval/*/predictions.csv"))
    stamps = {p: p.stat().st_mtime_ns for path in finished for p in (path, path.parent / "metrics.json")}
    stamps |= {p: p.stat().st_mtime_ns for p in study.glob("runs/*/*/models/*/model.pt")}
    resumed = subprocess.run(
        _script("run_study.py", "--config", str(config)), cwd=ROOT, env=env, capture_output=True, text=True
    )
    _check(resumed)
    for script, *args in (
        ("study_stats.py", "--study", str(study)),
        ("study_report.py", "--study", str(study), "--data", "tiny"),
    ):
        _check(subprocess.run(_script(script, *args), cwd=ROOT, env=env, capture_output=True, text=True))
    return {"study": study, "finished": finished, "stamps": stamps, "log": resumed.stderr}


def test_killed_study_resumes_without_retraining_finished_runs(killed_and_resumed: dict) -> None:
    study, stamps = killed_and_resumed["study"], killed_and_resumed["stamps"]
    assert killed_and_resumed["finished"], "the study was killed before any run finished"
    for path, stamp in stamps.items():
        if "models" in path.parts and path.parent.name == "stl_severity" and path.parents[2].name == "cv-0":
            assert path.stat().st_mtime_ns == stamp, f"{path} was retrained"
    for path in killed_and_resumed["finished"]:
        assert path.stat().st_mtime_ns == stamps[path], f"{path} was re-evaluated"
    assert "skip stl_severity/resnet10/cv-0" in killed_and_resumed["log"]
    assert len(list(study.glob("runs/*/*/eval/*/metrics.json"))) == 2 * 2 * 2


def test_study_results_statistics_and_report_are_complete(killed_and_resumed: dict) -> None:
    study = killed_and_resumed["study"]
    results = pd.read_csv(study / "results.csv", dtype={"fold": str})
    overall = results[(results["task"] == "prognosis") & (results["scope"] == "overall")]
    assert len(overall[["strategy", "backbone", "fold"]].drop_duplicates()) == 8
    assert set(results.columns) >= {"strategy", "backbone", "protocol", "fold", "metric", "value", "ci_low", "ci_high"}
    pooled = pd.read_csv(study / "pooled_metrics.csv")
    assert set(pooled["n_folds"]) == {2} and set(pooled["strategy"]) == {"ft", "stl_severity"}
    # Pooled over folds: every AIforCOVID test patient once per strategy and backbone.
    predictions = pd.read_csv(study / "pooled_predictions.csv", dtype={"fold": str})
    per_run = predictions.groupby(["strategy", "backbone"])["patient"].agg(["count", "nunique"])
    assert (per_run["count"] == per_run["nunique"]).all()
    table = pd.read_csv(study / "table.csv")
    assert set(table["metric"]) == {"accuracy", "f1", "g_mean", "roc_auc"} and set(table["n_backbones"]) == {2}
    stats = json.loads((study / "stats.json").read_text())
    pair = stats["pairwise"][0]
    assert (pair["better"], pair["baseline"], pair["n"]) == ("ft", "stl_severity", 2)
    assert "smallest attainable p" in pair["tests"]["wilcoxon"]["note"] or pair["tests"]["wilcoxon"]["p"] is None
    assert all(row["p"] is None and "at least 3" in row["note"] for row in stats["friedman"])
    report = (study / "report.md").read_text()
    assert "| ft | cv | 2 |" in report and "| 67.3 |" in report  # the paper's FT CV ACC beside the measured
    assert "Measured on: tiny" in report
    for png in ("study_boxplots.png", "study_roc_reliability.png"):
        assert (study / png).stat().st_size > 5000 and f"]({png})" in report
