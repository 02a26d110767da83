"""DICOM inference on a file, folder or datalist: a result row for every good file, an error row for every bad one."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.data import load_decathlon_datalist

from bundle.atomic import write_text_atomic
from bundle.data.dicom import DicomInputError
from bundle.tasks import Task, TaskSet

logger = logging.getLogger(__name__)


def find_inputs(input_path: str | os.PathLike) -> list[str]:
    """Resolve the inference input: one DICOM file, a folder searched recursively, or a datalist JSON.

    Every regular file under a folder is a candidate (DICOM files often have no suffix); those that are not
    readable radiographs get an error row rather than being skipped silently.
    """
    path = Path(input_path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: inference input does not exist")
    if path.is_dir():
        return sorted(str(p) for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    if path.suffix.lower() == ".json":
        return [str(item["image"]) for item in load_decathlon_datalist(str(path), data_list_key="data")]
    return [str(path)]


def failure_reason(error: BaseException) -> str:
    """The reason a file failed, from the error MONAI's ``Compose`` wraps around the transform's own error.

    A ``DicomInputError`` anywhere in the chain gives its reason (the file is named in its own column); otherwise
    the innermost error's message.
    """
    chain = [error]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    for item in chain:
        if isinstance(item, DicomInputError):
            return item.reason
    return f"{type(chain[-1]).__name__}: {chain[-1]}"


def error_row(file: str, reason: str, uid: str = "") -> dict[str, Any]:
    """The result row of a file that got no prediction: ``status=error`` and the reason."""
    return {"file": file, "status": "error", "error": reason, "SOPInstanceUID": uid, "duplicate_of": ""}


def mark_duplicate_instances(rows: list[dict[str, Any]]) -> int:
    """Name, in ``duplicate_of``, the first file holding the same SOPInstanceUID as a later good row.

    The same SOP instance in two files is one acquisition counted twice (a copy, an export repeated, a datalist
    listing a file twice). Both files keep their result, so nothing the user asked for is dropped, and every row
    after the first points at the first, so results can be de-duplicated before they are pooled or counted.

    Args:
        rows: the result rows in output order; ``duplicate_of`` is set in place.

    Returns:
        The number of rows marked.
    """
    first: dict[str, str] = {}
    marked = 0
    for row in rows:
        uid = row["SOPInstanceUID"]
        if row["status"] != "ok" or not uid:
            continue
        if uid in first:
            row["duplicate_of"] = first[uid]
            marked += 1
        else:
            first[uid] = row["file"]
    if marked:
        logger.warning(f"inference: {marked} file(s) repeat a SOP instance already seen; see the duplicate_of column")
    return marked


def task_columns(task: Task, values: torch.Tensor) -> dict[str, Any]:
    """Result columns of one task for one image, named from the task's declaration.

    Classification: ``<task>_prob_<class>`` and ``<task>_class`` per group (groups after the first are suffixed
    with their index), plus ``<task>_expected`` (probability-weighted ``class_values``) when the task declares
    values for its classes, e.g. the expected Brixia global score. Regression: ``<task>_<channel>``.
    """
    if task.kind != "classification":
        return {f"{task.name}_{channel}": float(v) for channel, v in zip(task.channels, values.tolist(), strict=True)}
    columns: dict[str, Any] = {}
    for group, probs in enumerate(values.reshape(task.groups, len(task.classes))):
        prefix = task.name if group == 0 else f"{task.name}{group}"
        columns |= {f"{prefix}_prob_{c}": float(p) for c, p in zip(task.classes, probs.tolist(), strict=True)}
        columns[f"{prefix}_class"] = task.classes[int(probs.argmax())]
        if task.class_values:
            columns[f"{prefix}_expected"] = float((probs * torch.tensor(task.class_values)).sum())
    return columns


class DicomInference:
    """Runs the bundle's network on DICOM radiographs and writes ``predictions.csv`` and ``predictions.json``.

    Each file goes through the same ``preprocessing`` as evaluation (DICOM decoding included); a file that fails
    (unreadable, not a radiograph, another modality such as a CT slice, ...) or whose prediction is not finite
    becomes a row with ``status=error`` and the reason, and the run goes on. A file repeating the SOP instance of an
    earlier one keeps its result and names the earlier file in ``duplicate_of`` (:func:`mark_duplicate_instances`).
    Rows carry the file path and SOPInstanceUID only: never patient name, ID or birth date.

    Args:
        network: the multi-head network (``image`` -> ``pred``).
        tasks: the task declarations; they name the output columns.
        preprocessing: maps ``{"image": path}`` to a dict whose ``image`` is a (C, H, W) tensor.
        input_path: a DICOM file, a folder (searched recursively) or a datalist JSON.
        output_dir: where the two result files go (written atomically).
        device: torch device.
        batch_size: images per forward pass.
        checkpoint: optional weights file (weights-only loading) for the network.
        strict: raise after writing the results when any file failed (default: exit normally with a summary).
        input_finder: resolves ``input_path`` to the inputs (default :func:`find_inputs`: one file per input); the CT
            family passes ``bundle.data.ct_series.find_ct_inputs`` (a DICOM series folder is one input).
        network_inputs: keys of the preprocessed item passed to the network as keyword arguments next to the image
            (the CT family's ``radiomics`` vector).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        tasks: TaskSet | Sequence[dict],
        preprocessing: Callable[[dict], dict],
        input_path: str,
        output_dir: str,
        device: str | torch.device = "cpu",
        batch_size: int = 8,
        checkpoint: str | None = None,
        strict: bool = False,
        input_finder: Callable[[str], list[str]] = find_inputs,
        network_inputs: Sequence[str] = (),
    ) -> None:
        self.network = network
        self.tasks = tasks if isinstance(tasks, TaskSet) else TaskSet(tasks)
        self.preprocessing = preprocessing
        self.input_path = input_path
        self.output_dir = Path(output_dir)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.checkpoint = checkpoint
        self.strict = strict
        self.input_finder = input_finder
        self.network_inputs = tuple(network_inputs)

    def _prepared(self, files: Sequence[str]) -> Iterator[tuple[str, dict | None, str]]:
        for file in files:
            try:
                yield file, self.preprocessing({"image": file}), ""
            except Exception as e:  # any failure of one file is that file's error row, never the run's end
                reason = failure_reason(e)
                logger.warning(f"{file}: skipped: {reason}")
                yield file, None, reason

    def _result_columns(self, pred: torch.Tensor) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = [{} for _ in range(pred.shape[0])]
        probabilities = self.tasks.probabilities(pred)
        for task in self.tasks:
            for row, values in zip(rows, probabilities[task.name], strict=True):
                row.update(task_columns(task, values))
        return rows

    def run(self) -> dict[str, Any]:
        """Predict every input file; return the summary (counts, duplicate SOP instances and output paths)."""
        if self.checkpoint:
            from bundle.engine.checkpoint import load_checkpoint

            self.network.load_state_dict(load_checkpoint(self.checkpoint))
        self.network.to(self.device).eval()
        files = self.input_finder(self.input_path)
        rows: list[dict[str, Any]] = []
        batch: list[tuple[str, dict]] = []

        def flush() -> None:
            if not batch:
                return
            images = torch.stack([torch.as_tensor(item["image"]) for _, item in batch]).to(self.device)
            extra = {
                key: torch.stack([torch.as_tensor(item[key]) for _, item in batch]).to(self.device)
                for key in self.network_inputs
            }
            with torch.no_grad():
                pred = self.network(images, **extra).float().cpu()
            for (file, item), values, columns in zip(batch, pred, self._result_columns(pred), strict=True):
                uid = getattr(item["image"], "meta", {}).get("SOPInstanceUID", "")
                if not torch.isfinite(values).all():  # never report a NaN probability as a result
                    logger.warning(f"{file}: skipped: the network's output is not finite")
                    rows.append(error_row(file, "the network's output is not finite (NaN or inf)", uid))
                    continue
                rows.append({"file": file, "status": "ok", "error": "", "SOPInstanceUID": uid, "duplicate_of": ""})
                rows[-1].update(columns)
            batch.clear()

        for file, item, reason in self._prepared(files):
            if item is None:
                rows.append(error_row(file, reason))
                continue
            batch.append((file, item))
            if len(batch) == self.batch_size:
                flush()
        flush()
        rows.sort(key=lambda r: files.index(r["file"]))
        duplicates = mark_duplicate_instances(rows)
        summary = self._write(rows) | {"duplicates": duplicates}
        logger.info(
            f"inference: {summary['ok']} ok ({duplicates} duplicate SOP instances), {summary['errors']} errors "
            f"-> {summary['csv']}"
        )
        if self.strict and summary["errors"]:
            raise RuntimeError(f"{summary['errors']} of {summary['total']} inputs failed; see {summary['csv']}")
        return summary

    def _write(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        columns: list[str] = []
        for row in rows:
            columns += [c for c in row if c not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
        csv_path, json_path = self.output_dir / "predictions.csv", self.output_dir / "predictions.json"
        write_text_atomic(csv_path, buffer.getvalue())
        clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()} for row in rows]
        write_text_atomic(json_path, json.dumps(clean, indent=1))
        ok = sum(row["status"] == "ok" for row in rows)
        return {"total": len(rows), "ok": ok, "errors": len(rows) - ok, "csv": str(csv_path), "json": str(json_path)}
