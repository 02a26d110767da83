"""Make sure the datalists a workflow needs exist: from synthetic demo data on first use, or a clear error.

The configs call :func:`ensure_datalists` in their ``initialize`` step, so ``python -m monai.bundle run training``
works out of the box: with ``demo_data: true`` missing datalists are made by generating the synthetic DICOMs (once)
and running the same adapters as ``scripts/prepare_data.py``. With real data (``demo_data: false``) nothing is
generated: a missing datalist stops the run and says how to prepare it.
"""

from __future__ import annotations

import fcntl
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

from bundle.data.datalist import rejected_report_path
from bundle.data.prepare import prepare_dataset
from bundle.data.synthetic import GENERATED_MARKER, generate_demo_data

__all__ = ["DEMO_FOLDERS", "ensure_datalists"]

#: Folder of each dataset under the demo root, in its published layout.
DEMO_FOLDERS: dict[str, str] = {"aiforcovid": "AIforCOVID", "brixia": "BRIXIA"}

_LOCK = ".demo.lock"
_N_FOLDS = 5


def ensure_datalists(
    datalists: Mapping[str, str | os.PathLike[str]],
    demo: bool,
    root: str | os.PathLike[str],
    size: str = "default",
    seed: int = 0,
) -> dict[str, Path]:
    """Return the datalist paths, making the missing ones from synthetic demo data when ``demo`` is true.

    Generation and preparation hold an exclusive lock on ``root/.demo.lock``, so that several processes started
    together (DDP ranks, parallel tests) generate the data once and never read a half-written datalist.

    Args:
        datalists: dataset name (``aiforcovid``, ``brixia``) -> datalist JSON path.
        demo: whether missing datalists may be made from synthetic data.
        root: folder of the synthetic datasets (generated there when :data:`GENERATED_MARKER` or a needed dataset
            folder is absent).
        size: demo size, a key of :data:`bundle.data.synthetic.DEMO_SIZES`.
        seed: seed of the generation and of the fold assignment.

    Returns:
        Dataset name -> datalist path, all existing.

    Raises:
        FileNotFoundError: a datalist is missing and ``demo`` is false.
        ValueError: a datalist is missing for a dataset that has no demo data.
        RuntimeError: the adapter accepted no record of the demo data (its rejected-rows report says why).
    """
    paths = {name: Path(path) for name, path in datalists.items()}
    if demo:
        _warn_other_size(Path(root), size)
    missing = {name: path for name, path in paths.items() if not path.is_file()}
    if not missing:
        return paths
    if not demo:
        name, path = next(iter(missing.items()))
        raise FileNotFoundError(
            f"datalist {path} of dataset {name!r} does not exist. Prepare it from the dataset in its published "
            f"layout with `python scripts/prepare_data.py {name} --root DATASET_FOLDER --out {path}`, or set "
            "demo_data true to use synthetic demo data."
        )
    unknown = sorted(set(missing) - set(DEMO_FOLDERS))
    if unknown:
        raise ValueError(f"no synthetic demo data for {unknown}: demo data exists for {sorted(DEMO_FOLDERS)}.")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / _LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        folders = [root / DEMO_FOLDERS[name] for name in missing]
        if not (root / GENERATED_MARKER).exists() or not all(folder.is_dir() for folder in folders):
            generate_demo_data(root, size, seed)
        for name, path in missing.items():
            if not path.is_file():  # another process may have made it while this one waited for the lock
                prepare_dataset(name, root / DEMO_FOLDERS[name], path, _N_FOLDS, seed)
            if not path.is_file():
                report = rejected_report_path(path)
                raise RuntimeError(f"no usable record in the demo dataset {root / DEMO_FOLDERS[name]}: see {report}")
    return paths


def _warn_other_size(root: Path, size: str) -> None:
    """Warn when ``root`` holds demo data of another size: it is used as it is, never silently replaced."""
    marker = root / GENERATED_MARKER
    if not marker.is_file():
        return
    try:
        found = json.loads(marker.read_text()).get("size")
    except (OSError, ValueError, AttributeError):
        return
    if found is not None and found != size:
        warnings.warn(
            f"{root} holds demo data of size {found!r}, not the requested {size!r}: using it as it is. Delete that "
            f"folder or set dataset_dir to another one to generate the {size!r} data.",
            stacklevel=3,
        )
