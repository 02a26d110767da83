"""One study's prediction -> a DICOM Comprehensive SR and a JSON summary, with the bundle's own result columns."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import highdicom as hd
import pydicom
import torch
from monai.deploy.core import Fragment, Operator, OperatorSpec
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from bundle.engine.inference import task_columns
from bundle.tasks import TaskSet
from deploy.series_to_image import selected_radiograph

logger = logging.getLogger(__name__)

CODING_SCHEME = "99COVIDMDMT"
"""Private coding scheme of the result concepts: prognosis and binned Brixia severity have no standard codes."""

SR_FILE, JSON_FILE = "cxr_prognosis_sr.dcm", "cxr_prognosis.json"

_REPORT = Code("18748-4", "LN", "Diagnostic imaging report")
_ALGORITHM_NAME = Code("111001", "DCM", "Algorithm Name")
_ALGORITHM_VERSION = Code("111003", "DCM", "Algorithm Version")
_SOURCE = Code("121112", "DCM", "Source of Measurement")
_NO_UNITS = Code("1", "UCUM", "no units")
_SCORE = Code("{score}", "UCUM", "score")


def prediction_columns(tasks: TaskSet, probabilities: Any) -> dict[str, Any]:
    """The result columns of ``bundle.engine.inference.DicomInference`` for one image, from per-task probabilities.

    Args:
        tasks: the bundle's task declarations (from the model's embedded config).
        probabilities: the (C,) output of the bundle's ``postprocessing`` (softmax within each task).

    Returns:
        ``<task>_prob_<class>``, ``<task>_class`` (argmax, computed here: the SDK maps ``int(p)`` through
        ``channel_def`` instead) and ``<task>_expected`` where the task declares class values.
    """
    values = torch.as_tensor(probabilities, dtype=torch.float32).reshape(1, -1)
    columns: dict[str, Any] = {}
    for task, task_values in zip(tasks, tasks.split(values).values(), strict=True):
        columns |= task_columns(task, task_values[0])
    return columns


def result_items(columns: dict[str, Any]) -> list[hd.sr.ContentItem]:
    """One SR content item per result column: TEXT for a class, NUM for a probability or an expected score."""
    items: list[hd.sr.ContentItem] = []
    for key, value in columns.items():
        name = Code(key, CODING_SCHEME, key.replace("_", " "))
        if isinstance(value, str):
            items.append(hd.sr.TextContentItem(name, value, relationship_type="CONTAINS"))
        else:
            unit = _SCORE if key.endswith("_expected") else _NO_UNITS
            items.append(hd.sr.NumContentItem(name, float(value), unit, relationship_type="CONTAINS"))
    return items


def comprehensive_sr(source: pydicom.Dataset, columns: dict[str, Any], model: dict[str, str]) -> hd.sr.ComprehensiveSR:
    """A Comprehensive SR in the source's study: algorithm, result items and a reference to the source image.

    The source instance is referenced twice, as the content tree's "Source of Measurement" image item and in the
    evidence sequence, so a PACS links the report to the radiograph it describes.
    """
    root = hd.sr.ContainerContentItem(_REPORT)
    root.ContentSequence = hd.sr.ContentSequence(
        [
            hd.sr.TextContentItem(_ALGORITHM_NAME, model["name"], relationship_type="HAS OBS CONTEXT"),
            hd.sr.TextContentItem(_ALGORITHM_VERSION, model["version"], relationship_type="HAS OBS CONTEXT"),
            *result_items(columns),
            hd.sr.ImageContentItem(_SOURCE, source.SOPClassUID, source.SOPInstanceUID, relationship_type="CONTAINS"),
        ]
    )
    return hd.sr.ComprehensiveSR(
        evidence=[source],
        content=root,
        series_instance_uid=generate_uid(),
        series_number=9001,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="covid-mdmt-bundle",
        is_complete=True,
    )


class PrognosisReportOperator(Operator):
    """Writes the study's Comprehensive SR and JSON summary to the output folder.

    Named inputs:
        pred: ``MonaiBundleInferenceOperator``'s ``probabilities`` output, ``{"result": ..., "probabilities": (C,)}``;
            only ``probabilities`` is used (see :func:`prediction_columns`).
        study_selected_series_list: from ``DICOMSeriesSelectorOperator``, for the source instance and its UIDs.

    Args:
        fragment: the application.
        output_folder: where ``cxr_prognosis_sr.dcm`` and ``cxr_prognosis.json`` are written.
        tasks: the bundle's task declarations.
        model: ``{"name": ..., "version": ...}`` from the bundle metadata, recorded in both outputs.
    """

    def __init__(
        self,
        fragment: Fragment,
        *args: Any,
        output_folder: Path,
        tasks: TaskSet,
        model: dict[str, str],
        **kwargs: Any,
    ) -> None:
        self.output_folder = Path(output_folder)
        self.tasks = tasks
        self.model = model
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        """Declare the ports."""
        spec.input("pred")
        spec.input("study_selected_series_list")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        """Turn the probabilities into result columns and write both files."""
        pred = op_input.receive("pred")
        selected, path = selected_radiograph(op_input.receive("study_selected_series_list"))
        source = selected.series.get_sop_instances()[0].get_native_sop_instance()
        columns = prediction_columns(self.tasks, pred["probabilities"])
        report = comprehensive_sr(source, columns, self.model)
        self.output_folder.mkdir(parents=True, exist_ok=True)
        report.save_as(self.output_folder / SR_FILE, enforce_file_format=True)
        summary = {
            "file": str(path),
            "StudyInstanceUID": str(source.StudyInstanceUID),
            "SeriesInstanceUID": str(source.SeriesInstanceUID),
            "SOPInstanceUID": str(source.SOPInstanceUID),
            "ViewPosition": str(source.get("ViewPosition", "")),
            "selection": selected.selection_name,
            "model": self.model,
            "sr": {"file": SR_FILE, "SOPInstanceUID": str(report.SOPInstanceUID)},
        } | columns
        (self.output_folder / JSON_FILE).write_text(json.dumps(summary, indent=1))
        logger.info(f"wrote {self.output_folder / SR_FILE} and {JSON_FILE}")
