"""Export the TorchScript model a MONAI Deploy application runs, with a self-contained inference config inside.

``python -m monai.bundle ckpt_export`` embeds ``configs/inference.yaml`` as written: its ``%configs/common.yaml#...``
macros are resolved when the config is parsed, relative to the *current directory*, and the command-line overrides
given to the export (``--backbone``, ``--image_size``) are not embedded at all. MONAI Deploy's
``MonaiBundleInferenceOperator`` parses that embedded config to build the preprocessing, so a plain export only works
from the bundle root and silently preprocesses with the default image size. This module resolves the macros and
applies the overrides before embedding, then calls MONAI's own ``ckpt_export``:

    python -m deploy.export --ckpt_file models/model.pt --filepath models/model.ts [--backbone resnet18 ...]
"""

from __future__ import annotations

import argparse
import ast
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser, ckpt_export

ROOT = Path(__file__).resolve().parents[1]
"""The bundle root: configs are read from here whatever the current directory."""


def resolved_inference_config(
    overrides: dict[str, object], config_file: Path = ROOT / "configs" / "inference.yaml"
) -> dict[str, Any]:
    """The inference config with every macro replaced by its content and the overrides applied, as a plain dict.

    Args:
        overrides: id -> value, as on the ``monai.bundle`` command line (e.g. ``{"backbone": "resnet10"}``).
        config_file: the workflow config to resolve (macros are read relative to the bundle root).

    Returns:
        A config with no ``%`` macro left, so it parses the same from any directory.
    """
    parser = ConfigParser()
    parser.read_config(config_file)
    # Macros name files relative to the bundle root; resolve them against an absolute path.
    parser.set(_absolute_macros(parser.get(), ROOT))
    parser.resolve_macro_and_relative_ids()
    for key, value in overrides.items():
        parser[key] = value
    config = dict(parser.get())
    # An embedded "_meta_" (even empty) would replace the metadata the SDK reads from extra/metadata.json.
    config.pop("_meta_", None)
    return config


def _absolute_macros(config: object, root: Path) -> object:
    """Rewrite ``%relative/file.yaml#id`` macros to ``%/abs/root/relative/file.yaml#id``."""
    if isinstance(config, dict):
        return {key: _absolute_macros(value, root) for key, value in config.items()}
    if isinstance(config, list):
        return [_absolute_macros(value, root) for value in config]
    if isinstance(config, str) and config.startswith("%") and not config.startswith("%#"):
        path, _, ids = config[1:].partition("#")
        if path and not Path(path).is_absolute():
            return f"%{root / path}#{ids}"
    return config


def export_deployable(ckpt_file: str, filepath: str, overrides: dict[str, object]) -> None:
    """Export ``network_def`` with weights ``ckpt_file`` to TorchScript ``filepath``, embedding the resolved config.

    The embedded config is named ``inference`` (the name ``MonaiBundleInferenceOperator`` reads) and the metadata is
    ``configs/metadata.json``. The same overrides build the exported network and go into the embedded config, so the
    network and its preprocessing cannot disagree.
    """
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "inference.json"
        ConfigParser.export_config_file(resolved_inference_config(overrides), str(config))
        ckpt_export(
            net_id="network_def",
            filepath=filepath,
            ckpt_file=ckpt_file,
            meta_file=str(ROOT / "configs" / "metadata.json"),
            config_file=str(config),
            bundle_root=str(ROOT),
            **overrides,
        )


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``--ckpt_file``, ``--filepath`` and any ``--<id> <value>`` config override."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_file", default=str(ROOT / "models" / "model.pt"))
    parser.add_argument("--filepath", default=str(ROOT / "models" / "model.ts"))
    args, rest = parser.parse_known_args(argv)
    if len(rest) % 2 or not all(key.startswith("--") for key in rest[::2]):
        parser.error(f"overrides must be --<id> <value> pairs, got {rest}")
    overrides = {key[2:]: _literal(value) for key, value in zip(rest[::2], rest[1::2], strict=True)}
    export_deployable(args.ckpt_file, args.filepath, overrides)


def _literal(value: str) -> object:
    """``"64"`` -> 64, ``"[1, 2]"`` -> [1, 2], anything else stays a string (as ``monai.bundle`` reads values)."""
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


if __name__ == "__main__":
    main()
