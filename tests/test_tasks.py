"""Tasks are data: slices, channel names, label packing with explicit missing labels, and the Brixia binning edges."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bundle.tasks import TARGET_ENCODERS, Task, TaskSet
from bundle.transforms.labels import PackLabelsd

MDMT_TASKS = [
    {"name": "prognosis", "classes": ["MILD", "SEVERE"], "target": "prognosis", "head": "prognosis_mlp"},
    {"name": "severity", "classes": ["0-4", "5-9", "10-14", "15-18"], "target": "brixia_global_class"},
]
LUNG_TASK = {"name": "lungs", "classes": [0, 1, 2, 3], "groups": 2, "group_names": ["right", "left"]}
LUNG_TASK["target"] = "brixia_lung_class"
ZONE_TASK = {"name": "zones", "kind": "regression", "channels": list("ABCDEF"), "target": "brixia_zones"}


def zones_with_sum(total: int) -> list[int]:
    """Six zone scores 0..3 adding up to ``total``."""
    zones = []
    for _ in range(6):
        zones.append(min(3, total))
        total -= zones[-1]
    return zones


def test_layout_and_channel_def() -> None:
    tasks = TaskSet(MDMT_TASKS + [LUNG_TASK, ZONE_TASK])
    assert tasks.names == ["prognosis", "severity", "lungs", "zones"]
    assert tasks.out_channels == 2 + 4 + 8 + 6 and tasks.label_size == 1 + 1 + 2 + 6
    assert list(tasks.pred_slices.values()) == [slice(0, 2), slice(2, 6), slice(6, 14), slice(14, 20)]
    assert list(tasks.label_slices.values()) == [slice(0, 1), slice(1, 2), slice(2, 4), slice(4, 10)]
    cd = tasks.channel_def
    assert cd[0] == "prognosis:MILD" and cd[1] == "prognosis:SEVERE" and cd[2] == "severity:0-4"
    assert cd[6] == "lungs[right]:0" and cd[10] == "lungs[left]:0" and cd[19] == "zones:F"
    assert sorted(cd) == list(range(20))
    assert tasks.fields == ("prognosis", "brixia_zones")
    assert len(tasks) == 4 and "lungs" in tasks and tasks["zones"].kind == "regression"


def test_defaults_and_validation() -> None:
    t = Task(name="prognosis", classes=["MILD", "SEVERE"])
    assert (t.kind, t.target, t.head, t.loss, t.weight) == ("classification", "prognosis", "linear", "ce", 1.0)
    assert Task(**ZONE_TASK).loss == "mse" and Task(**ZONE_TASK).head == "mlp"
    assert Task(name="s", classes=["lo", "hi"], class_values=[1, 8], target="prognosis").class_values == [1.0, 8.0]
    for bad in [
        {"name": "x", "classes": ["a"], "target": "prognosis"},  # one class
        {"name": "x", "kind": "ordinal", "classes": ["a", "b"], "target": "prognosis"},
        {"name": "x", "classes": ["a", "b"], "target": "nope"},
        {"name": "x", "classes": ["a", "b"], "target": "prognosis", "loss": "mse"},
        {"name": "x.y", "classes": ["a", "b"], "target": "prognosis"},
        {"name": "x", "kind": "regression", "channels": [], "target": "brixia_zones"},
        {"name": "x", "classes": ["a", "b"], "groups": 2, "group_names": ["r"], "target": "prognosis"},
        {"name": "x", "classes": ["a", "b"], "class_values": [1.0], "target": "prognosis"},
    ]:
        with pytest.raises(ValueError):
            Task(**bad)
    with pytest.raises(ValueError, match="unique"):
        TaskSet(MDMT_TASKS + MDMT_TASKS)


def test_pack_missing_fields_are_nan() -> None:
    tasks = TaskSet(MDMT_TASKS + [LUNG_TASK, ZONE_TASK])
    aiforcovid = tasks.pack({"prognosis": 1, "brixia_zones": None})
    assert aiforcovid.dtype == torch.float32 and aiforcovid.shape == (10,)
    assert aiforcovid[0] == 1 and torch.isnan(aiforcovid[1:]).all()
    brixia = tasks.pack({"prognosis": None, "brixia_zones": [3, 2, 1, 0, 1, 2]})
    assert torch.isnan(brixia[0])
    assert brixia[1:].tolist() == [1.0, 2.0, 1.0, 3.0, 2.0, 1.0, 0.0, 1.0, 2.0]  # global 9; lungs 6 and 3
    # NaN from pandas and arrays/tensors from transforms are understood too.
    assert torch.isnan(tasks.pack({"prognosis": float("nan"), "brixia_zones": np.array([0] * 6)})[0])
    assert tasks.pack({"prognosis": torch.tensor(0), "brixia_zones": torch.zeros(6)})[:2].tolist() == [0.0, 0.0]
    with pytest.raises(KeyError, match="prognosis"):
        tasks.pack({"brixia_zones": None})
    with pytest.raises(ValueError):
        tasks.pack({"prognosis": None, "brixia_zones": [0, 1, 4, 0, 0, 0]})
    with pytest.raises(ValueError, match="string"):
        tasks.pack({"prognosis": None, "brixia_zones": 1000})  # "001000" parsed as an integer
    assert tasks.pack({"prognosis": None, "brixia_zones": "001000"})[1] == 0
    with pytest.raises(ValueError):
        tasks.pack({"prognosis": 2, "brixia_zones": None})


@pytest.mark.parametrize("total,expected", [(0, 0), (4, 0), (5, 1), (9, 1), (10, 2), (14, 2), (15, 3), (18, 3)])
def test_global_binning_edges(total: int, expected: int) -> None:
    assert TARGET_ENCODERS["brixia_global_class"]({"brixia_zones": zones_with_sum(total)}) == [float(expected)]


@pytest.mark.parametrize("lung,expected", [(0, 0), (1, 0), (2, 1), (4, 1), (5, 2), (7, 2), (8, 3), (9, 3)])
def test_lung_binning_edges(lung: int, expected: int) -> None:
    right = zones_with_sum(lung)[:3]
    record = {"brixia_zones": right + [0, 0, 0]}
    assert TARGET_ENCODERS["brixia_lung_class"](record) == [float(expected), 0.0]
    record = {"brixia_zones": [0, 0, 0] + right}
    assert TARGET_ENCODERS["brixia_lung_class"](record) == [0.0, float(expected)]


def test_split_and_probabilities() -> None:
    tasks = TaskSet(MDMT_TASKS + [LUNG_TASK, ZONE_TASK])
    pred = torch.randn(3, tasks.out_channels)
    parts = tasks.split(pred)
    assert [p.shape[1] for p in parts.values()] == [2, 4, 8, 6]
    assert torch.equal(torch.cat(list(parts.values()), dim=1), pred)
    probs = tasks.probabilities(pred)
    assert torch.allclose(probs["prognosis"].sum(1), torch.ones(3))
    assert torch.allclose(probs["lungs"].reshape(3, 2, 4).sum(-1), torch.ones(3, 2))
    assert torch.equal(probs["zones"], parts["zones"])
    labels = tasks.split_labels(torch.zeros(3, tasks.label_size))
    assert [v.shape[1] for v in labels.values()] == [1, 1, 2, 6]
    with pytest.raises(ValueError):
        tasks.split(pred[:, :-1])


def test_pack_labels_transform() -> None:
    transform = PackLabelsd(MDMT_TASKS)
    out = transform({"image": "x.dcm", "prognosis": None, "brixia_zones": [1, 1, 1, 1, 1, 0]})
    assert out["image"] == "x.dcm" and torch.isnan(out["label"][0]) and out["label"][1] == 1
    with pytest.raises(KeyError):
        transform({"image": "x.dcm", "prognosis": 1})
    lenient = PackLabelsd(TaskSet(MDMT_TASKS), output_key="y", allow_missing_keys=True)
    out = lenient({"prognosis": 0})
    assert out["y"][0] == 0 and math.isnan(out["y"][1])
