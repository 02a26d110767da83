"""MONAI Deploy application: chest-radiograph DICOM study -> COVID-19 prognosis and Brixia severity as a DICOM SR.

    python -m deploy.app -i STUDY_FOLDER -o OUTPUT_FOLDER -m models/model.ts

Operators, in order: ``DICOMDataLoaderOperator`` (every DICOM file under the input) -> ``DICOMSeriesSelectorOperator``
(:data:`SELECTION_RULES`) -> :class:`~deploy.series_to_image.CXRSeriesToImageOperator` (the bundle's own DICOM reader)
-> ``MonaiBundleInferenceOperator`` (the exported ``model.ts`` with the preprocessing, inferer and postprocessing of
its embedded ``inference`` config) -> :class:`~deploy.report.PrognosisReportOperator` (Comprehensive SR + JSON).
One study per run, as a MONAI Application Package runs. See docs/deploy.md.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from holoscan.conditions import CountCondition
from monai.bundle import ConfigParser
from monai.deploy.core import Application, Image, IOType
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator
from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator
from monai.deploy.operators.monai_bundle_inference_operator import (
    DISALLOW_LOAD_SAVE,
    BundleConfigNames,
    IOMapping,
    MonaiBundleInferenceOperator,
    get_bundle_config,
)
from monai.transforms import Compose

from bundle.tasks import TaskSet
from deploy.report import PrognosisReportOperator
from deploy.series_to_image import CXRSeriesToImageOperator

CONFIG_NAME = "inference"
"""The embedded config (``models/model.ts`` -> ``extra/inference.json``) both the app and the SDK operator read."""

SELECTION_RULES = {
    "selections": [
        {
            "name": "frontal chest radiograph",
            "conditions": {"Modality": "^(CR|DX)$", "BodyPartExamined": "(?i)chest", "ViewPosition": "^(PA|AP)$"},
        },
        {
            "name": "chest radiograph, view not frontal or not stated",
            "conditions": {"Modality": "^(CR|DX)$", "BodyPartExamined": "(?i)chest"},
        },
    ]
}
"""Series selection, in order of preference: the app uses the first selected series, so a frontal (PA/AP) CR/DX
chest series wins over any other chest radiograph in the study. Non-radiograph series (SR, CT, ...) never match."""


def embedded_loader(config: ConfigParser) -> Compose:
    """The transforms of the embedded ``preprocessing`` that ``MonaiBundleInferenceOperator`` removes (``LoadImage*``).

    Running them in the app on the selected file gives the inference operator exactly the image the bundle's own
    ``LoadImaged`` would have given the rest of the preprocessing.

    Args:
        config: the parsed embedded config (``get_bundle_config(model.ts, ["inference"])``).

    Raises:
        ValueError: the preprocessing has no ``LoadImage*`` transform, so the app would not know how to read DICOM.
    """
    preprocessing = config.get_parsed_content("preprocessing")
    removed = [t for t in preprocessing.transforms if any(name in type(t).__name__ for name in DISALLOW_LOAD_SAVE)]
    if not removed:
        raise ValueError("the embedded preprocessing has no LoadImage transform to read DICOM with")
    return Compose(removed)


class CXRPrognosisApp(Application):
    """The application: see the module docstring for the operators and how to run it."""

    def compose(self) -> None:
        """Build the operator graph from the command-line paths (``-i``, ``-o``, ``-m``)."""
        context = Application.init_app_context(self.argv)
        model_path = Path(context.model_path)
        config = get_bundle_config(str(model_path), [CONFIG_NAME])
        meta: dict[str, Any] = config["_meta_"]
        loader = DICOMDataLoaderOperator(self, CountCondition(self, 1), input_folder=Path(context.input_path))
        selector = DICOMSeriesSelectorOperator(self, rules=json.dumps(SELECTION_RULES), name="series_selector")
        to_image = CXRSeriesToImageOperator(self, loader=embedded_loader(config), name="series_to_image")
        inference = MonaiBundleInferenceOperator(
            self,
            input_mapping=[IOMapping("image", Image, IOType.IN_MEMORY)],
            output_mapping=[IOMapping("pred", dict, IOType.IN_MEMORY)],
            app_context=context,
            bundle_config_names=BundleConfigNames(config_names=[CONFIG_NAME]),
            bundle_path=model_path,
            name="bundle_inference",
        )
        report = PrognosisReportOperator(
            self,
            output_folder=Path(context.output_path),
            tasks=TaskSet(config.get_parsed_content("tasks")),
            model={"name": str(meta.get("name", "")), "version": str(meta.get("version", ""))},
            name="report",
        )
        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, to_image, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(selector, report, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(to_image, inference, {("image", "image")})
        self.add_flow(inference, report, {("pred", "pred")})


def main(argv: Sequence[str] | None = None) -> None:
    """Run the app; ``argv`` as after the program name (``["-i", ..., "-o", ..., "-m", ...]``)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Holoscan treats the first element of an explicit argv as the program name.
    app = CXRPrognosisApp() if argv is None else CXRPrognosisApp(["deploy.app", *argv])
    app.run()


if __name__ == "__main__":
    main()
