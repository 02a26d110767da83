"""Run a study's units through ``python -m monai.bundle run training|evaluating``, resumably.

Every run is two subprocesses started from the bundle root: training with ``configs/train.yaml`` and the strategy's
override file, then evaluation with ``configs/evaluate.yaml`` and the same override file, both with the unit folder as
``bundle_root`` so that the strategies' ``@bundle_root/models/<strategy>`` paths (FT and MDMT-averaged start from the
STL models) point into the unit. Running the real workflows, rather than a Python shortcut, makes every number of the
study one that the documented bundle commands reproduce.

Resuming: training always runs with ``--resume True`` (``bundle.engine.checkpoint.TrainingCheckpointer``), so a
training that was killed continues from its last complete epoch; when it exits cleanly the runner writes
``models/<strategy>/training_complete.json``, and a run with that marker is never trained again. A run whose
evaluation wrote :data:`~bundle.study.grid.EVALUATION_MARKER` is skipped altogether. The subprocesses stay in the
study's process group, so killing the group (``kill -- -PGID``, or Ctrl-C in a terminal) stops the study with every
training it started, and the next invocation picks up where they were.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bundle.atomic import write_text_atomic
from bundle.study.grid import DEPENDENCIES, EVALUATION_MARKER, Run, StudySpec, Unit

__all__ = ["TRAINING_MARKER", "StudyRunner"]

logger = logging.getLogger(__name__)

#: Written into the run's ``models/<strategy>`` folder when its training subprocess has exited cleanly.
TRAINING_MARKER = "training_complete.json"


def _cli_value(value: Any) -> str:
    """A config value as ``monai.bundle``'s command line (python-fire) parses it back: text as is, the rest as
    Python literals (``True``, ``[1, 2]``, ``{'img_size': 256}``)."""
    return value if isinstance(value, str) else repr(value)


def _cli_overrides(overrides: Mapping[str, Any]) -> list[str]:
    """``{"image_size": 64}`` -> ``["--image_size", "64"]``."""
    return [item for key, value in overrides.items() for item in (f"--{key}", _cli_value(value))]


class StudyRunner:
    """Builds the two commands of every run, tells a run's state from its files, and runs units to completion.

    Args:
        spec: the study.
        bundle_root: the repository root: the subprocesses' working folder, holding ``configs/``.
        python: the interpreter of the subprocesses (default: this one).
    """

    def __init__(self, spec: StudySpec, bundle_root: str | os.PathLike[str], python: str = sys.executable) -> None:
        self.spec = spec
        self.bundle_root = Path(bundle_root)
        self.python = python
        self.threads: int | None = None  # OMP_NUM_THREADS of the subprocesses; set by run_units

    def _config_files(self, workflow: str, run: Run) -> str:
        """The ``--config_file`` list, merged in order: the workflow file, then the strategy's overrides when it has a
        file (MDMT is ``train.yaml`` itself). Written as a JSON list, which python-fire reads back as a list."""
        files = [f"configs/{workflow}.yaml"]
        strategy_file = f"configs/strategies/{run.strategy}.yaml"
        if (self.bundle_root / strategy_file).is_file():
            files.append(strategy_file)
        return json.dumps(files)

    def _common(self, run: Run) -> list[str]:
        """Overrides shared by training and evaluation: the unit as bundle root, the split, backbone and data."""
        study_dir = self.spec.study_dir
        ids: dict[str, Any] = {
            "bundle_root": str(run.unit_dir(study_dir)),
            "ckpt_dir": str(run.model_dir(study_dir)),
            "backbone": run.backbone,
            "protocol": run.protocol,
            "fold": run.fold,
            **self.spec.data,
            **self.spec.overrides,
        }
        if run.backbone in self.spec.backbone_kwargs:
            ids["backbone_kwargs"] = self.spec.backbone_kwargs[run.backbone]
        return _cli_overrides(ids)

    def train_command(self, run: Run) -> list[str]:
        """``python -m monai.bundle run training`` for ``run``, resuming from its last checkpoint when there is one."""
        return [
            *(self.python, "-m", "monai.bundle", "run", "training"),
            *("--config_file", self._config_files("train", run)),
            *self._common(run),
            *_cli_overrides({"output_dir": str(run.output_dir(self.spec.study_dir)), **self.spec.train_overrides}),
            *("--resume", "True"),
        ]

    def eval_command(self, run: Run) -> list[str]:
        """``python -m monai.bundle run evaluating`` of the run's best model on its test split."""
        return [
            *(self.python, "-m", "monai.bundle", "run", "evaluating"),
            *("--config_file", self._config_files("evaluate", run)),
            *self._common(run),
            *_cli_overrides({"eval_dir": str(run.eval_dir(self.spec.study_dir)), **self.spec.eval_overrides}),
        ]

    def status(self, run: Run) -> str:
        """``evaluated``, ``trained`` (to evaluate), ``interrupted`` (a checkpoint to resume from) or ``pending``."""
        study_dir = self.spec.study_dir
        if not (run.model_dir(study_dir) / TRAINING_MARKER).is_file():
            return "interrupted" if (run.model_dir(study_dir) / "checkpoint_last.pt").is_file() else "pending"
        return "evaluated" if (run.eval_dir(study_dir) / EVALUATION_MARKER).is_file() else "trained"

    def _execute(self, command: Sequence[str], log: Path) -> bool:
        """Run one workflow, its output appended to ``log`` (a resumed attempt keeps the killed one's output)."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f:
            f.write(f"\n### {datetime.now(timezone.utc).isoformat(timespec='seconds')}  {' '.join(command)}\n")
            f.flush()
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            if self.threads is not None:
                env.setdefault("OMP_NUM_THREADS", str(self.threads))
            completed = subprocess.run(command, cwd=self.bundle_root, stdout=f, stderr=subprocess.STDOUT, env=env)
        return completed.returncode == 0

    def run_one(self, run: Run) -> str:
        """Train (or resume) and evaluate one run unless its files say it is done.

        Returns:
            ``skipped`` (already evaluated), ``ran`` or ``failed`` (the log's path is logged).
        """
        state = self.status(run)
        if state == "evaluated":
            logger.info("skip %s (evaluated)", run.label)
            return "skipped"
        study_dir, log_dir = self.spec.study_dir, run.log_dir(self.spec.study_dir)
        if state != "trained":
            logger.info("train %s (%s)", run.label, state)
            start = time.monotonic()
            if not self._execute(self.train_command(run), log_dir / f"{run.strategy}_train.log"):
                logger.error("training of %s failed, see %s", run.label, log_dir / f"{run.strategy}_train.log")
                return "failed"
            marker = {
                "run": run.label,
                "seconds": round(time.monotonic() - start, 1),  # of the attempt that finished
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            write_text_atomic(run.model_dir(study_dir) / TRAINING_MARKER, json.dumps(marker, indent=2))
        logger.info("evaluate %s", run.label)
        if not self._execute(self.eval_command(run), log_dir / f"{run.strategy}_eval.log"):
            logger.error("evaluation of %s failed, see %s", run.label, log_dir / f"{run.strategy}_eval.log")
            return "failed"
        return "ran"

    def run_unit(self, unit: Unit) -> dict[str, str]:
        """The unit's runs in order; a run whose starting model failed is ``blocked``, the others still run."""
        outcome: dict[str, str] = {}
        by_strategy: dict[str, str] = {}
        for run in unit.runs:
            if any(by_strategy.get(needed) in ("failed", "blocked") for needed in DEPENDENCIES.get(run.strategy, ())):
                logger.error("blocked %s: a run it starts from failed", run.label)
                by_strategy[run.strategy] = outcome[run.label] = "blocked"
                continue
            by_strategy[run.strategy] = outcome[run.label] = self.run_one(run)
        return outcome

    def run_units(self, units: Sequence[Unit], jobs: int = 1) -> dict[str, str]:
        """Run units, ``jobs`` of them at a time (each unit's runs one after another).

        Args:
            units: the units (a shard of the study).
            jobs: units run in parallel; each training uses its own ``num_workers`` besides. With several jobs the
                subprocesses get ``OMP_NUM_THREADS`` = cores / jobs unless it is set: torch starts one thread per
                core in every process, so parallel trainings would otherwise oversubscribe the CPU.

        Returns:
            Run label -> ``ran``, ``skipped``, ``failed`` or ``blocked``.
        """
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        self.threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
        outcome: dict[str, str] = {}
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for result in pool.map(self.run_unit, units):
                outcome.update(result)
        return outcome
