"""Pack a record's raw label fields into the one label tensor the trainer and the loss read.

It runs after augmentation, so a horizontal flip that swaps the Brixia zones (A<->D, ...) is seen by the per-lung and
per-zone targets. MONAI's ``SupervisedTrainer`` forwards ``batch["label"]`` only when it is a tensor; packing every
task into one float tensor with NaN for missing labels keeps the default batch preparation working.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from monai.transforms import MapTransform

from bundle.tasks import Task, TaskSet

__all__ = ["PackLabelsd"]


class PackLabelsd(MapTransform):
    """Set ``data[output_key]`` to ``TaskSet.pack(data)``: a (label_size,) float32 tensor, NaN where unlabelled.

    The transform's ``keys`` are the record fields the tasks' target encoders read (e.g. ``prognosis``,
    ``brixia_zones``).

    Args:
        tasks: a ``TaskSet`` or the config's list of task dicts.
        output_key: where the packed label is written.
        allow_missing_keys: treat an absent field as unlabelled instead of raising ``KeyError``. Off by default: the
            datalist contract writes every label field (``null`` when unlabelled), so an absent one is a mistake.
    """

    def __init__(
        self,
        tasks: TaskSet | Iterable[Task | Mapping[str, Any]],
        output_key: str = "label",
        allow_missing_keys: bool = False,
    ) -> None:
        self.tasks = tasks if isinstance(tasks, TaskSet) else TaskSet(tasks)
        super().__init__(keys=self.tasks.fields, allow_missing_keys=allow_missing_keys)
        self.output_key = output_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with the packed label added.

        Raises:
            KeyError: when a label field is absent and ``allow_missing_keys`` is False.
        """
        d = dict(data)
        record = {key: None for key in self.keys}
        for key in self.key_iterator(d):
            record[key] = d[key]
        d[self.output_key] = self.tasks.pack(record)
        return d
