"""The selected radiograph of a study -> the image the bundle's preprocessing expects, read as the bundle reads it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from monai.deploy.core import Fragment, Image, Operator, OperatorSpec
from monai.deploy.core.domain.dicom_series_selection import SelectedSeries, StudySelectedSeries

logger = logging.getLogger(__name__)


def selected_radiograph(study_selected_series: list[StudySelectedSeries]) -> tuple[SelectedSeries, Path]:
    """The series the rules chose first (the preferred selection) and the file of its first instance.

    Raises:
        ValueError: no series matched the rules (no CR/DX chest radiograph in the input), or the instance was not
            read from a file (so the bundle's reader cannot decode it).
    """
    if not study_selected_series or not study_selected_series[0].selected_series:
        raise ValueError("no series matched the selection rules: the input holds no CR/DX chest radiograph")
    if len(study_selected_series) > 1:
        logger.warning(f"{len(study_selected_series)} studies in the input: only the first is processed")
    selected = study_selected_series[0].selected_series[0]
    instances = selected.series.get_sop_instances()
    if len(instances) > 1:
        logger.warning(f"series {selected.series.SeriesInstanceUID} has {len(instances)} images: using the first")
    path = getattr(instances[0].get_native_sop_instance(), "filename", None)
    if not path:
        raise ValueError(f"series {selected.series.SeriesInstanceUID}: the instance was not read from a file")
    return selected, Path(path)


class CXRSeriesToImageOperator(Operator):
    """Reads the selected radiograph with the bundle's own loader and emits it as an in-memory ``Image``.

    ``MonaiBundleInferenceOperator`` removes every ``LoadImage*`` transform from the bundle's preprocessing and feeds
    in-memory images instead, so the app must produce what that loader would have produced. The SDK's
    ``DICOMSeriesToVolumeOperator`` does not: it builds a 3D volume of stored values, with no VOI transform and no
    MONOCHROME1 inversion. This operator runs exactly the transforms the inference operator removes (``loader``,
    taken from the same embedded config, i.e. ``LoadImaged`` with ``bundle.data.dicom.CXRDicomReader``) on the
    selected file, so DICOM pixels are normalised by the one bundle function, ``read_cxr``.

    Named input:
        study_selected_series_list: from ``DICOMSeriesSelectorOperator``.

    Named output:
        image: ``Image`` holding the (1, H, W) float32 array and the reader's metadata (no ``row_pixel_spacing``
            key, so the inference operator passes it through unchanged).

    Args:
        fragment: the application.
        loader: maps ``{"image": path}`` to a dict whose ``image`` is the loaded (1, H, W) image.
    """

    def __init__(self, fragment: Fragment, *args: Any, loader: Callable[[dict], dict], **kwargs: Any) -> None:
        self.loader = loader
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        """Declare the ports."""
        spec.input("study_selected_series_list")
        spec.output("image")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        """Load the preferred series' radiograph and emit it."""
        selected, path = selected_radiograph(op_input.receive("study_selected_series_list"))
        logger.info(f"reading {path} (selection {selected.selection_name!r})")
        image = self.loader({"image": str(path)})["image"]
        op_output.emit(Image(np.asarray(image), metadata=dict(image.meta)), "image")
