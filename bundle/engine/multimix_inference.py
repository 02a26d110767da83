"""MultiMix inference: for every radiograph, the class probabilities and the lung mask at the image's own size.

Input is a PNG/JPEG file, a folder (searched recursively) or a datalist JSON, as for the core inference runner, whose
input discovery, error reasons, class columns and atomic writes this reuses. Each image goes through the evaluation
preprocessing; the mask probability is mapped back to the original geometry with MONAI's ``Invertd`` (which undoes
the resize, and any other invertible spatial step the preprocessing gains), thresholded and written as an 8-bit PNG
(0 background, 255 lung) under ``<output_dir>/masks/``, mirroring the input folders. ``predictions.csv`` and
``predictions.json`` hold one row per file: the class probabilities and class, the mask file, the lung share of the
image, or the error of a file that could not be read.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Invertd
from PIL import Image

from bundle.atomic import write_text_atomic
from bundle.engine.checkpoint import load_checkpoint
from bundle.engine.inference import failure_reason, find_inputs, task_columns
from bundle.networks.multimix import CLASS_LOGITS, MASK_LOGITS
from bundle.tasks import Task, TaskSet

__all__ = ["MultiMixInference"]

logger = logging.getLogger(__name__)


class MultiMixInference:
    """Runs a ``MultiMixNet`` on radiographs and writes masks and ``predictions.csv`` / ``predictions.json``.

    Args:
        network: the network (``image`` -> dict with ``class_logits`` and ``mask_logits``).
        tasks: the task declarations: the classification task names the probability columns, the segmentation task
            names the mask files (``<image>_<task>.png``).
        preprocessing: maps ``{"image": path}`` to a dict whose ``image`` is a (C, *spatial) MetaTensor; its
            invertible steps are undone on the mask.
        input_path: an image file, a folder (searched recursively) or a datalist JSON.
        output_dir: where the results and ``masks/`` go.
        device: torch device.
        checkpoint: optional weights file (weights-only loading).
        threshold: mask probability above which a pixel is lung.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        tasks: TaskSet | Sequence[Task | Mapping[str, Any]],
        preprocessing: Callable[[dict], dict],
        input_path: str,
        output_dir: str,
        device: str | torch.device = "cpu",
        checkpoint: str | None = None,
        threshold: float = 0.5,
    ) -> None:
        self.network = network
        self.tasks = tasks if isinstance(tasks, TaskSet) else TaskSet(tasks)
        self.preprocessing = preprocessing
        self.input_path = input_path
        self.output_dir = Path(output_dir)
        self.device = torch.device(device)
        self.checkpoint = checkpoint
        self.threshold = threshold
        self.invert = Invertd(keys="mask", transform=preprocessing, orig_keys="image", nearest_interp=False)

    def _predict(self, file: str, mask_path: Path) -> dict[str, Any]:
        """Predict one image, write its mask, and return its result columns."""
        item = self.preprocessing({"image": file})
        image = item["image"]
        with torch.no_grad():
            output = self.network(torch.as_tensor(image)[None].to(self.device))
        task = self.tasks.tasks[0]
        probabilities = torch.softmax(output[CLASS_LOGITS].float().cpu()[0], dim=0)
        mask = torch.sigmoid(output[MASK_LOGITS].float().cpu()[0])
        item["mask"] = MetaTensor(mask, meta=dict(image.meta))
        restored = np.asarray(self.invert(item)["mask"])[0] > self.threshold
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(restored.astype(np.uint8) * 255).save(mask_path)
        columns = task_columns(task, probabilities)
        return columns | {
            "mask": mask_path.relative_to(self.output_dir).as_posix(),
            "lung_fraction": float(restored.mean()),
        }

    def run(self) -> dict[str, Any]:
        """Predict every input file; return the summary (counts and output paths)."""
        if self.checkpoint:
            self.network.load_state_dict(load_checkpoint(self.checkpoint))
        self.network.to(self.device).eval()
        files = find_inputs(self.input_path)
        base = Path(os.path.commonpath([str(Path(f).parent) for f in files])) if files else Path()
        mask_name = self.tasks.segmentation_tasks[0].name
        rows = []
        for file in files:
            relative = Path(file).relative_to(base)
            mask_path = self.output_dir / "masks" / relative.parent / f"{relative.stem}_{mask_name}.png"
            try:
                rows.append({"file": file, "status": "ok", "error": ""} | self._predict(file, mask_path))
            except Exception as e:  # one unreadable file is that file's error row, never the end of the run
                reason = failure_reason(e)
                logger.warning(f"{file}: skipped: {reason}")
                rows.append({"file": file, "status": "error", "error": reason})
        return self._write(rows)

    def _write(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        columns = list(dict.fromkeys(c for row in rows for c in row)) or ["file", "status", "error"]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
        csv_path, json_path = self.output_dir / "predictions.csv", self.output_dir / "predictions.json"
        write_text_atomic(csv_path, buffer.getvalue())
        write_text_atomic(json_path, json.dumps(rows, indent=1, default=float))
        ok = sum(row["status"] == "ok" for row in rows)
        summary = {"total": len(rows), "ok": ok, "errors": len(rows) - ok, "csv": str(csv_path), "json": str(json_path)}
        logger.info(f"inference: {summary['ok']} ok, {summary['errors']} errors -> {csv_path}")
        return summary
