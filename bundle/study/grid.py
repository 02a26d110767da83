"""The study grid: strategies x backbones x protocol splits, grouped into units that can be sharded across machines.

A *run* is one strategy trained and evaluated on one backbone and one split (``cv`` fold or ``loco`` centre). The
runs of one backbone and split form a *unit*: they share a folder, ``<study_dir>/runs/<backbone>/<protocol>-<fold>/``,
because FT and MDMT-averaged start from the single-task models trained there. A unit is therefore the smallest
piece of work that can go to another machine, and its runs are ordered so that every strategy follows the ones it
starts from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DEPENDENCIES",
    "EVALUATION_MARKER",
    "PROTOCOLS",
    "STRATEGIES",
    "Run",
    "StudySpec",
    "Unit",
    "parse_shard",
    "select_shard",
    "with_dependencies",
]

#: The strategies of the paper (methods.md, section 1), in an order where each follows those it starts from.
STRATEGIES: tuple[str, ...] = ("stl_prognosis", "stl_severity", "ft", "mdmt", "mdmt_averaged")

#: Strategy -> the strategies of the same backbone and split whose trained models it is initialised from.
DEPENDENCIES: dict[str, tuple[str, ...]] = {"ft": ("stl_severity",), "mdmt_averaged": ("stl_prognosis", "stl_severity")}

#: The evaluation protocols of ``configs/common.yaml``: cross-validation folds and leave-one-centre-out centres.
PROTOCOLS: tuple[str, ...] = ("cv", "loco")

#: The file the evaluation writes last (``bundle.engine.evaluation_report``): its presence means a run is evaluated.
EVALUATION_MARKER = "predictions.csv"

_KEYS = {
    "study_dir",
    "backbones",
    "strategies",
    "protocols",
    "comparisons",
    "overrides",
    "train_overrides",
    "eval_overrides",
    "backbone_kwargs",
    "data",
}


def with_dependencies(strategies: Iterable[str]) -> list[str]:
    """The strategies with those they start from added, in :data:`STRATEGIES` order.

    Args:
        strategies: strategy names.

    Returns:
        Every named strategy and its dependencies, once each, dependencies first.

    Raises:
        ValueError: a name is not in :data:`STRATEGIES`.
    """
    wanted = set(strategies)
    unknown = sorted(wanted - set(STRATEGIES))
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; known: {list(STRATEGIES)}")
    pending = list(wanted)
    while pending:
        for needed in DEPENDENCIES.get(pending.pop(), ()):
            if needed not in wanted:
                wanted.add(needed)
                pending.append(needed)
    return [name for name in STRATEGIES if name in wanted]


@dataclass(frozen=True, order=True)
class Run:
    """One strategy on one backbone and split.

    Attributes:
        backbone: a name of :data:`bundle.networks.backbones.BACKBONES`.
        protocol: ``cv`` or ``loco``.
        fold: the CV fold or the held-out centre, as text (it names a folder).
        strategy: a name of :data:`STRATEGIES`.
    """

    backbone: str
    protocol: str
    fold: str
    strategy: str

    @property
    def split(self) -> str:
        """``<protocol>-<fold>``: the name of the unit's folder."""
        return f"{self.protocol}-{self.fold}"

    @property
    def label(self) -> str:
        """``<strategy>/<backbone>/<protocol>-<fold>``, as logs and outcomes name the run."""
        return f"{self.strategy}/{self.backbone}/{self.split}"

    def unit_dir(self, study_dir: Path) -> Path:
        """The folder shared by the runs of this backbone and split (the workflows' ``bundle_root``)."""
        return study_dir / "runs" / self.backbone / self.split

    def model_dir(self, study_dir: Path) -> Path:
        """Checkpoints of the run (the workflows' ``ckpt_dir``)."""
        return self.unit_dir(study_dir) / "models" / self.strategy

    def output_dir(self, study_dir: Path) -> Path:
        """TensorBoard logs and the preflight report of the training (the training's ``output_dir``)."""
        return self.unit_dir(study_dir) / "runs" / self.strategy

    def eval_dir(self, study_dir: Path) -> Path:
        """Metrics, predictions and figures of the evaluation (the evaluation's ``eval_dir``)."""
        return self.unit_dir(study_dir) / "eval" / self.strategy

    def log_dir(self, study_dir: Path) -> Path:
        """Console output of the unit's training and evaluation subprocesses."""
        return self.unit_dir(study_dir) / "logs"


@dataclass(frozen=True)
class Unit:
    """The runs of one backbone and split, dependencies first.

    Attributes:
        backbone: the backbone of every run.
        protocol: the protocol of every run.
        fold: the fold or centre of every run.
        runs: the runs, in :data:`STRATEGIES` order.
    """

    backbone: str
    protocol: str
    fold: str
    runs: tuple[Run, ...]

    @property
    def label(self) -> str:
        """``<backbone>/<protocol>-<fold>``."""
        return f"{self.backbone}/{self.protocol}-{self.fold}"


@dataclass(frozen=True)
class StudySpec:
    """A validated study configuration (``configs/study.yaml``).

    Attributes:
        study_dir: where every run, table and report goes (absolute).
        backbones: backbone names, validated against the registry.
        strategies: the requested strategies with their dependencies, dependencies first.
        protocols: protocol -> its folds (CV) or centres (LOCO), as text.
        comparisons: ``(better, baseline)`` pairs tested one-sided by ``scripts/study_stats.py``.
        overrides: config ids given to both training and evaluation.
        train_overrides: config ids given to training only.
        eval_overrides: config ids given to evaluation only.
        backbone_kwargs: backbone -> its ``backbone_kwargs`` (e.g. ViT's ``img_size``).
        data: data ids given to both workflows (``demo_data``, ``dataset_dir``, ``datalists``, ...).
    """

    study_dir: Path
    backbones: tuple[str, ...]
    strategies: tuple[str, ...]
    protocols: dict[str, tuple[str, ...]]
    comparisons: tuple[tuple[str, str], ...] = ()
    overrides: dict[str, Any] = field(default_factory=dict)
    train_overrides: dict[str, Any] = field(default_factory=dict)
    eval_overrides: dict[str, Any] = field(default_factory=dict)
    backbone_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], base_dir: str | os.PathLike[str] | None = None) -> StudySpec:
        """Read and validate a study YAML; see :meth:`from_mapping`."""
        with open(path) as f:
            return cls.from_mapping(yaml.safe_load(f) or {}, base_dir=base_dir)

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any], base_dir: str | os.PathLike[str] | None = None) -> StudySpec:
        """Validate a study configuration before anything runs, so that a typo fails in a second, not after a day.

        Args:
            config: the study keys (``study_dir``, ``backbones``, ``strategies``, ``protocols`` and the optional
                ``comparisons``, ``overrides``, ``train_overrides``, ``eval_overrides``, ``backbone_kwargs``, ``data``).
            base_dir: folder a relative ``study_dir`` is taken from (the bundle root); ``None``: the working folder.

        Returns:
            The spec, strategies completed with their dependencies.

        Raises:
            ValueError: an unknown key, strategy, backbone or protocol, an empty list, or a malformed comparison.
        """
        # Imported here: the registry pulls in torch and MONAI, which the grid itself does not need.
        from bundle.networks.backbones import BACKBONES

        unknown_keys = sorted(set(config) - _KEYS)
        if unknown_keys:
            raise ValueError(f"unknown study keys {unknown_keys}; known: {sorted(_KEYS)}")
        missing = [key for key in ("study_dir", "backbones", "strategies", "protocols") if not config.get(key)]
        if missing:
            raise ValueError(f"the study config needs non-empty {missing}")
        backbones = tuple(dict.fromkeys(config["backbones"]))
        unknown = sorted(set(backbones) - set(BACKBONES))
        if unknown:
            raise ValueError(f"unknown backbones {unknown}; known: {sorted(BACKBONES)}")
        protocols = {
            str(name): tuple(dict.fromkeys(str(f) for f in folds)) for name, folds in config["protocols"].items()
        }
        unknown = sorted(set(protocols) - set(PROTOCOLS))
        if unknown or not all(protocols.values()):
            raise ValueError(f"protocols must map {list(PROTOCOLS)} to non-empty fold lists, got {config['protocols']}")
        comparisons = tuple(tuple(pair) for pair in config.get("comparisons") or ())
        if any(len(pair) != 2 or pair[0] == pair[1] for pair in comparisons):
            raise ValueError(f"comparisons must be pairs of two different strategies, got {comparisons}")
        with_dependencies(name for pair in comparisons for name in pair)  # raises on an unknown name
        kwargs = dict(config.get("backbone_kwargs") or {})
        unknown = sorted(set(kwargs) - set(backbones))
        if unknown:
            raise ValueError(f"backbone_kwargs for backbones the study does not run: {unknown}")
        study_dir = Path(config["study_dir"])
        if not study_dir.is_absolute():
            study_dir = Path(base_dir or os.getcwd()) / study_dir
        return cls(
            study_dir=study_dir.resolve(),
            backbones=backbones,
            strategies=tuple(with_dependencies(config["strategies"])),
            protocols=protocols,
            comparisons=comparisons,
            overrides=dict(config.get("overrides") or {}),
            train_overrides=dict(config.get("train_overrides") or {}),
            eval_overrides=dict(config.get("eval_overrides") or {}),
            backbone_kwargs=kwargs,
            data=dict(config.get("data") or {}),
        )

    def units(self) -> list[Unit]:
        """Every backbone and split with its runs, in a fixed order (backbone, protocol, fold)."""
        return [
            Unit(backbone, protocol, fold, tuple(Run(backbone, protocol, fold, s) for s in self.strategies))
            for backbone in self.backbones
            for protocol, folds in self.protocols.items()
            for fold in folds
        ]

    def runs(self) -> list[Run]:
        """Every run of the grid, unit by unit."""
        return [run for unit in self.units() for run in unit.runs]


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``1 <= i <= n``.

    Raises:
        ValueError: anything else.
    """
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None or not 1 <= int(match[1]) <= int(match[2]):
        raise ValueError(f"a shard is i/n with 1 <= i <= n, got {text!r}")
    return int(match[1]), int(match[2])


def select_shard(units: Sequence[Unit], index: int, count: int) -> list[Unit]:
    """The ``index``-th of ``count`` deterministic, disjoint parts of ``units`` (1-based), dealt round-robin.

    Dealing round-robin spreads the backbones (whose costs differ by an order of magnitude) over the shards; whole
    units keep each strategy on the machine that trains the models it starts from.

    Args:
        units: the study's units, in :meth:`StudySpec.units` order (every machine must see the same order).
        index: which part, 1..count.
        count: how many parts.

    Returns:
        The units of that part; empty when ``count`` exceeds the number of units and this part gets none.

    Raises:
        ValueError: ``index`` outside 1..count.
    """
    if not 1 <= index <= count:
        raise ValueError(f"shard index must be in 1..{count}, got {index}")
    return list(units[index - 1 :: count])
