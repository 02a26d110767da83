"""CT inference inputs: a DICOM series folder is one scan, a NIfTI file is one scan.

A chest CT arrives as a folder of slice files (one per axial image) or as one NIfTI volume. The CXR inference finder
treats every file as an input, which would make each CT slice a scan of its own; this finder groups them instead, so
that ``LoadImaged`` gets the folder and MONAI's PydicomReader stacks the slices by their position.
"""

from __future__ import annotations

import os
from pathlib import Path

from monai.data import load_decathlon_datalist
from pydicom.misc import is_dicom

__all__ = ["find_ct_inputs"]


def find_ct_inputs(input_path: str | os.PathLike[str]) -> list[str]:
    """Resolve a CT inference input into scans: series folders, NIfTI files, or the images of a datalist JSON.

    Under a folder (searched recursively, hidden entries skipped), a folder that directly holds DICOM files (files
    with the ``DICM`` preamble, whatever their suffix) is one input: one series, as DICOM exporters write one folder
    per series. Every other regular file is an input of its own: a NIfTI volume is a scan, and anything else (a
    spreadsheet, notes, a DICOM without preamble) gets an error row from the inference runner rather than being
    skipped silently.

    Args:
        input_path: a series folder, a NIfTI file, a folder of those, or a datalist JSON (its ``image`` entries).

    Returns:
        The inputs as path strings, sorted.

    Raises:
        FileNotFoundError: ``input_path`` does not exist.
    """
    path = Path(input_path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: inference input does not exist")
    if path.is_file():
        if path.suffix.lower() == ".json":
            return [str(item["image"]) for item in load_decathlon_datalist(str(path), data_list_key="data")]
        return [str(path)]
    inputs = []
    for folder, subfolders, files in os.walk(path):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        visible = [Path(folder) / name for name in files if not name.startswith(".")]
        slices = [file for file in visible if file.is_file() and is_dicom(file)]
        if slices:
            inputs.append(folder)
        inputs += [str(file) for file in visible if file.is_file() and file not in slices]
    return sorted(str(Path(item)) for item in inputs)
