"""Tasks declared as data: one declaration drives heads, label packing, loss slicing and the output ``channel_def``.

A task is written once in ``configs/common.yaml``::

    tasks:
      - {name: prognosis, kind: classification, classes: [MILD, SEVERE], target: prognosis, head: prognosis_mlp}
      - {name: severity, kind: classification, classes: ["0-4", "5-9", "10-14", "15-18"],
         target: brixia_global_class, head: linear}

Everything else is derived here, so adding a task touches one place:

- the network output ``pred`` (B, ``TaskSet.out_channels``) is the concatenation of every task's logits in task order;
  a classification task with ``groups`` independent label positions owns ``groups * len(classes)`` channels laid out
  group-major (all classes of group 0, then group 1, ...); a regression task owns one channel per named channel;
- the packed ``label`` (``TaskSet.label_size``,) holds, per task, one class index per group (as float) or one value per
  regression channel, and NaN wherever the record does not label that task (missing labels are explicit: NaN can never
  be mistaken for class 0).

Raw record fields (``prognosis``, ``brixia_zones``) are turned into label entries by *target encoders*, small named
functions in ``TARGET_ENCODERS``, so that a task can say ``target: brixia_lung_class`` instead of needing code.

A ``segmentation`` task (MultiMix's lung mask) predicts a mask, not a vector: its ``channels`` name the mask channels,
its ``target`` is the record field holding the mask file(s), and its ``loss`` is ``dice`` or ``dice_ce``. A mask
neither fits in ``pred`` nor packs into ``label``, so a ``TaskSet`` keeps such tasks apart in ``segmentation_tasks``:
iterating it, its names and its ``pred``/``label`` layouts cover the vector tasks only, and every consumer of the
vector layout (loss, metrics, label packing) works unchanged when segmentation tasks are declared next to them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "TARGET_ENCODERS",
    "Task",
    "TaskSet",
    "TargetEncoder",
    "brixia_global_class",
    "brixia_lung_class",
    "brixia_zones",
    "covid_appearance",
    "ct_severity",
    "nat_detection",
    "pneumonia",
    "prognosis",
    "radiology_detection",
]

TASK_KINDS = ("classification", "regression", "segmentation")
LOSSES_BY_KIND = {"classification": ("ce",), "regression": ("mse", "l1"), "segmentation": ("dice", "dice_ce")}
DEFAULT_HEAD = {"classification": "linear", "regression": "mlp", "segmentation": "decoder"}
NUM_BRIXIA_ZONES = 6
TASK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def _is_missing(value: Any) -> bool:
    """A raw label value is missing when it is None or a float NaN (pandas and JSON round trips produce both)."""
    if value is None:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def _zones(value: Any) -> list[float] | None:
    """Six Brixia zone scores (A..F) as floats, or None when the record carries no score.

    Accepts lists, tuples, numpy arrays and tensors (the horizontal-flip transform may hand back any of them) and the
    six-digit BrixiaScore string.

    Raises:
        ValueError: when the value is not six scores in 0..3 (a corrupted label must not be trained on silently), e.g.
            a number: a BrixiaScore parsed as an integer has lost its leading zeros.
    """
    if _is_missing(value):
        return None
    if isinstance(value, (int, float)):
        raise ValueError(f"brixia_zones must be six scores, got the number {value!r} (read BrixiaScore as a string)")
    scores = [float(v) for v in (value.tolist() if hasattr(value, "tolist") else value)]
    if len(scores) != NUM_BRIXIA_ZONES:
        raise ValueError(f"brixia_zones must hold {NUM_BRIXIA_ZONES} scores (A..F), got {len(scores)}: {scores}")
    if any(math.isnan(s) for s in scores):
        return None
    if any(s not in (0.0, 1.0, 2.0, 3.0) for s in scores):
        raise ValueError(f"brixia_zones scores must be integers 0..3, got {scores}")
    return scores


@dataclass(frozen=True)
class TargetEncoder:
    """A named rule that turns raw record fields into a task's label entries.

    Attributes:
        fields: the record keys the rule reads; ``PackLabelsd`` uses them as its ``keys``.
        encode: ``record -> list[float] | None``; None means the record does not label the task.
    """

    fields: tuple[str, ...]
    encode: Callable[[Mapping[str, Any]], list[float] | None]

    def __call__(self, record: Mapping[str, Any]) -> list[float] | None:
        """Encode ``record``; a source field that is absent from the record is an error, not a missing label.

        Raises:
            KeyError: when a source field is not a key of ``record`` (a typo must not turn every label into NaN).
        """
        absent = [f for f in self.fields if f not in record]
        if absent:
            raise KeyError(f"record has no field(s) {absent} needed by this target; give them as null when unlabelled")
        return self.encode(record)


def prognosis(record: Mapping[str, Any]) -> list[float] | None:
    """AIforCOVID outcome: 0 = MILD, 1 = SEVERE."""
    value = record["prognosis"]
    if _is_missing(value):
        return None
    label = float(value)
    if label not in (0.0, 1.0):
        raise ValueError(f"prognosis must be 0 (MILD) or 1 (SEVERE), got {value!r}")
    return [label]


def pneumonia(record: Mapping[str, Any]) -> list[float] | None:
    """Pneumonia CXR datasets (Kermany, MultiMix): 0 = NORMAL, 1 = PNEUMONIA."""
    value = record["pneumonia"]
    if _is_missing(value):
        return None
    label = float(value)
    if label not in (0.0, 1.0):
        raise ValueError(f"pneumonia must be 0 (NORMAL) or 1 (PNEUMONIA), got {value!r}")
    return [label]


def brixia_global_class(record: Mapping[str, Any]) -> list[float] | None:
    """Global Brixia score 0-18 binned into the paper's 4 severity classes: <=4, 5-9, 10-14, >=15."""
    scores = _zones(record["brixia_zones"])
    if scores is None:
        return None
    total = sum(scores)
    return [0.0 if total <= 4 else 1.0 if total <= 9 else 2.0 if total <= 14 else 3.0]


def brixia_lung_class(record: Mapping[str, Any]) -> list[float] | None:
    """Per-lung severity (2 groups: right = A+B+C, left = D+E+F), each score 0-9 binned at <=1, <=4, <=7, >7."""
    scores = _zones(record["brixia_zones"])
    if scores is None:
        return None
    lungs = (sum(scores[:3]), sum(scores[3:]))
    return [0.0 if s <= 1 else 1.0 if s <= 4 else 2.0 if s <= 7 else 3.0 for s in lungs]


def brixia_zones(record: Mapping[str, Any]) -> list[float] | None:
    """The six zone scores A..F as regression targets."""
    return _zones(record["brixia_zones"])


def covid_appearance(record: Mapping[str, Any]) -> list[float] | None:
    """SIIM-FISABIO-RSNA study appearance: 0 negative, 1 typical, 2 indeterminate, 3 atypical."""
    value = record["appearance"]
    if _is_missing(value):
        return None
    label = float(value)
    if label not in (0.0, 1.0, 2.0, 3.0):
        raise ValueError(f"appearance must be 0..3 (negative, typical, indeterminate, atypical), got {value!r}")
    return [label]


def _class_index(record: Mapping[str, Any], key: str, meanings: tuple[str, ...]) -> list[float] | None:
    """A class index 0..len(meanings)-1 read from ``record[key]``, None when missing.

    Raises:
        ValueError: for any other value (naming the field and what its classes mean).
    """
    value = record[key]
    if _is_missing(value):
        return None
    label = float(value)
    if label not in range(len(meanings)):
        classes = ", ".join(f"{i} {m}" for i, m in enumerate(meanings))
        raise ValueError(f"{key} must be one of {classes}; got {value!r}")
    return [label]


def radiology_detection(record: Mapping[str, Any]) -> list[float] | None:
    """HUST-19 COVID-19 detection by the radiologists' reading of the CT: 0 negative, 1 positive."""
    return _class_index(record, "radiology", ("negative", "positive"))


def nat_detection(record: Mapping[str, Any]) -> list[float] | None:
    """HUST-19 COVID-19 detection by nucleic-acid test (RT-PCR): 0 negative, 1 positive."""
    return _class_index(record, "nat", ("negative", "positive"))


def ct_severity(record: Mapping[str, Any]) -> list[float] | None:
    """HUST-19 morbidity in COVID-MTL's 3 classes: 0 control/suspected, 1 mild/regular, 2 severe/critically ill."""
    return _class_index(record, "ct_severity", ("control/suspected", "mild/regular", "severe/critical"))


TARGET_ENCODERS: dict[str, TargetEncoder] = {
    "prognosis": TargetEncoder(("prognosis",), prognosis),
    "pneumonia": TargetEncoder(("pneumonia",), pneumonia),
    "brixia_global_class": TargetEncoder(("brixia_zones",), brixia_global_class),
    "brixia_lung_class": TargetEncoder(("brixia_zones",), brixia_lung_class),
    "brixia_zones": TargetEncoder(("brixia_zones",), brixia_zones),
    "covid_appearance": TargetEncoder(("appearance",), covid_appearance),
    "radiology_detection": TargetEncoder(("radiology",), radiology_detection),
    "nat_detection": TargetEncoder(("nat",), nat_detection),
    "ct_severity": TargetEncoder(("ct_severity",), ct_severity),
}


@dataclass
class Task:
    """One prediction task, as declared in the config.

    Attributes:
        name: unique task name; keys the head, the loss term and the logged metrics.
        kind: ``classification``, ``regression`` or ``segmentation``.
        classes: class names (classification); YAML numbers are turned into strings.
        class_values: optional number standing for each class (e.g. a typical Brixia score of each severity bin), so
            that outputs and reports can give a probability-weighted expected value.
        groups: independent label positions sharing ``classes`` (per-lung severity: 2 groups, right and left); each
            group gets its own softmax.
        group_names: optional names of the groups, used in ``channel_def`` (defaults to ``0..groups-1``).
        channels: names of the regression outputs (regression) or of the mask channels (segmentation).
        target: name of the target encoder in ``TARGET_ENCODERS`` (defaults to the task name); for segmentation, the
            record field holding the mask file(s).
        head: head type in ``bundle.networks.HEADS`` (defaults to ``linear`` / ``mlp`` by kind).
        head_kwargs: extra keyword arguments for the head (e.g. ``dropout``).
        loss: ``ce`` for classification; ``mse`` or ``l1`` for regression; ``dice`` or ``dice_ce`` for segmentation
            (defaults by kind).
        weight: the task's weight under fixed loss weighting.
    """

    name: str
    kind: str = "classification"
    classes: list[str] = field(default_factory=list)
    class_values: list[float] | None = None
    groups: int = 1
    group_names: list[str] | None = None
    channels: list[str] = field(default_factory=list)
    target: str | None = None
    head: str | None = None
    head_kwargs: dict[str, Any] = field(default_factory=dict)
    loss: str | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        """Fill defaults by kind and reject declarations that would only fail later, deep inside training."""
        if not TASK_NAME.fullmatch(self.name):
            raise ValueError(f"task name {self.name!r} must be a letter then letters, digits or '_' (it keys modules)")
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task {self.name!r}: kind must be one of {TASK_KINDS}, got {self.kind!r}")
        self.classes = [str(c) for c in self.classes]
        self.channels = [str(c) for c in self.channels]
        self.target = self.target or self.name
        self.head = self.head or DEFAULT_HEAD[self.kind]
        self.loss = self.loss or LOSSES_BY_KIND[self.kind][0]
        self.weight = float(self.weight)
        if self.kind != "segmentation" and self.target not in TARGET_ENCODERS:
            raise ValueError(f"task {self.name!r}: unknown target {self.target!r}; known: {sorted(TARGET_ENCODERS)}")
        if self.loss not in LOSSES_BY_KIND[self.kind]:
            raise ValueError(f"task {self.name!r}: loss {self.loss!r} does not fit kind {self.kind!r}")
        if self.kind == "classification":
            if len(self.classes) < 2 or self.channels:
                raise ValueError(f"task {self.name!r}: classification needs >= 2 classes and no channels")
            if self.class_values is not None:
                self.class_values = [float(v) for v in self.class_values]
                if len(self.class_values) != len(self.classes):
                    raise ValueError(f"task {self.name!r}: {len(self.class_values)} class_values for {self.classes}")
            if self.groups < 1:
                raise ValueError(f"task {self.name!r}: groups must be >= 1, got {self.groups}")
            self.group_names = [str(g) for g in (self.group_names or range(self.groups))]
            if len(self.group_names) != self.groups:
                raise ValueError(f"task {self.name!r}: {len(self.group_names)} group_names for {self.groups} groups")
        elif not self.channels or self.classes or self.class_values or self.groups != 1:
            raise ValueError(f"task {self.name!r}: {self.kind} needs channels, and no classes, class_values or groups")

    @property
    def out_channels(self) -> int:
        """Number of network output channels the task owns."""
        return self.groups * len(self.classes) if self.kind == "classification" else len(self.channels)

    @property
    def label_size(self) -> int:
        """Number of packed label entries the task owns (class index per group, value per channel, none for a mask)."""
        if self.kind == "segmentation":
            return 0
        return self.groups if self.kind == "classification" else len(self.channels)

    @property
    def fields(self) -> tuple[str, ...]:
        """Record fields the task's target encoder reads (none for segmentation: its mask is not packed)."""
        return () if self.kind == "segmentation" else TARGET_ENCODERS[self.target].fields

    @property
    def channel_names(self) -> list[str]:
        """Names of the task's output channels, ``task:class`` or ``task[group]:class`` or ``task:channel``."""
        if self.kind != "classification":
            return [f"{self.name}:{c}" for c in self.channels]
        if self.groups == 1:
            return [f"{self.name}:{c}" for c in self.classes]
        return [f"{self.name}[{g}]:{c}" for g in self.group_names for c in self.classes]

    def encode(self, record: Mapping[str, Any]) -> list[float]:
        """Label entries of ``record`` for this task, NaN-filled when the record does not label it.

        Raises:
            ValueError: when the encoder returns the wrong number of entries.
        """
        if self.kind == "segmentation":
            return []
        values = TARGET_ENCODERS[self.target](record)
        if values is None:
            return [math.nan] * self.label_size
        if len(values) != self.label_size:
            raise ValueError(
                f"task {self.name!r}: target {self.target!r} gave {len(values)} entries, expected {self.label_size}"
            )
        return [float(v) for v in values]

    def grouped(self, logits: torch.Tensor) -> torch.Tensor:
        """View a classification task's logits (B, groups*classes) as (B, groups, classes)."""
        return logits.reshape(logits.shape[0], self.groups, len(self.classes))


class TaskSet:
    """The ordered tasks of a model, and the layout of ``pred`` and ``label`` they imply.

    Args:
        tasks: ``Task`` objects or the config's dicts of ``Task`` fields (another ``TaskSet`` works too).

    Attributes:
        tasks: the vector tasks (classification, regression), in order: they define ``pred`` and ``label``.
        segmentation_tasks: the segmentation tasks, in order: mask outputs, outside ``pred`` and ``label``.

    Raises:
        ValueError: when no task is given or two tasks share a name.
    """

    def __init__(self, tasks: Iterable[Task | Mapping[str, Any]]) -> None:
        declared = [*tasks.tasks, *tasks.segmentation_tasks] if isinstance(tasks, TaskSet) else tasks
        declared = [t if isinstance(t, Task) else Task(**dict(t)) for t in declared]
        if not declared:
            raise ValueError("a TaskSet needs at least one task")
        names = [t.name for t in declared]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")
        self.tasks: list[Task] = [t for t in declared if t.kind != "segmentation"]
        self.segmentation_tasks: list[Task] = [t for t in declared if t.kind == "segmentation"]
        self.pred_slices: dict[str, slice] = {}
        self.label_slices: dict[str, slice] = {}
        pred_start = label_start = 0
        for task in self.tasks:
            self.pred_slices[task.name] = slice(pred_start, pred_start + task.out_channels)
            self.label_slices[task.name] = slice(label_start, label_start + task.label_size)
            pred_start += task.out_channels
            label_start += task.label_size
        self.out_channels = pred_start
        self.label_size = label_start

    @property
    def names(self) -> list[str]:
        """Task names in order."""
        return [t.name for t in self.tasks]

    @property
    def fields(self) -> tuple[str, ...]:
        """Record fields needed to pack the labels of every task, without repeats."""
        return tuple(dict.fromkeys(f for t in self.tasks for f in t.fields))

    @property
    def channel_def(self) -> dict[int, str]:
        """Name of every output channel, for ``network_data_format.outputs.pred.channel_def`` in metadata.json."""
        return dict(enumerate(n for t in self.tasks for n in t.channel_names))

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, name: str) -> Task:
        for task in [*self.tasks, *self.segmentation_tasks]:
            if task.name == name:
                return task
        raise KeyError(f"no task named {name!r}; tasks: {self.names + [t.name for t in self.segmentation_tasks]}")

    def __contains__(self, name: object) -> bool:
        return name in self.names or any(t.name == name for t in self.segmentation_tasks)

    def __repr__(self) -> str:
        return f"TaskSet({self.names}, out_channels={self.out_channels}, label_size={self.label_size})"

    def split(self, pred: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-task logits: ``pred`` (B, out_channels, ...) -> {name: (B, task.out_channels, ...)}.

        Raises:
            ValueError: when ``pred`` does not have ``out_channels`` channels.
        """
        if pred.shape[1] != self.out_channels:
            raise ValueError(f"pred has {pred.shape[1]} channels, the tasks need {self.out_channels}")
        return {name: pred[:, s] for name, s in self.pred_slices.items()}

    def split_labels(self, label: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-task labels: ``label`` (B, label_size) -> {name: (B, task.label_size)}, NaN where missing.

        Raises:
            ValueError: when ``label`` does not have ``label_size`` entries per sample.
        """
        if label.shape[1] != self.label_size:
            raise ValueError(f"label has {label.shape[1]} entries, the tasks need {self.label_size}")
        return {name: label[:, s] for name, s in self.label_slices.items()}

    def pack(self, record: Mapping[str, Any]) -> torch.Tensor:
        """Packed float32 label (label_size,) of one record, NaN wherever a task is not labelled."""
        return torch.tensor([v for t in self.tasks for v in t.encode(record)], dtype=torch.float32)

    def probabilities(self, pred: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-task outputs made readable: softmax within each group for classification, identity for regression."""
        out = {}
        for task, logits in zip(self.tasks, self.split(pred).values(), strict=True):
            if task.kind == "classification":
                out[task.name] = torch.softmax(task.grouped(logits), dim=-1).reshape(logits.shape)
            else:
                out[task.name] = logits
        return out
