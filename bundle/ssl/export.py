"""Save a pre-trained backbone the way every network of the bundle loads it: its own state dict plus a sidecar.

The weights file holds the registry backbone's state dict with the backbone's own keys (no ``backbone.`` or MoCo
prefixes), which is what ``bundle.networks.load_pretrained`` reads, so ``MultiHeadNet(pretrained=...)``,
``SegmentationMultiHeadNet(pretrained=...)`` and the core configs (``--network_def#pretrained PATH``) all take it.
The JSON sidecar beside it says what the weights are (method, backbone name, in_channels, spatial_dims, kwargs and
the architecture fingerprint), so that loading them into a different backbone fails with an error that says so.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events
from torch import nn

from bundle.atomic import write_text_atomic
from bundle.engine.checkpoint import atomic_save
from bundle.networks.backbones import architecture_fingerprint, weights_sidecar

__all__ = ["BackboneExport", "save_backbone"]

logger = logging.getLogger(__name__)


def save_backbone(
    backbone: nn.Module,
    path: str | os.PathLike[str],
    *,
    name: str,
    in_channels: int,
    spatial_dims: int,
    backbone_kwargs: Mapping[str, Any] | None = None,
    method: str,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``backbone``'s state dict to ``path`` and its description to ``weights_sidecar(path)``, atomically.

    Args:
        backbone: the registry backbone (a module from ``build_backbone``).
        path: the weights file (``.pt``).
        name: the backbone's registry name.
        in_channels: image channels it was built with.
        spatial_dims: spatial dimensions it was built with.
        backbone_kwargs: the extra arguments it was built with.
        method: how it was trained (``moco``, ``inpainting``).
        extra: more facts for the sidecar (epochs, image size, ...).

    Returns:
        The weights path.
    """
    path = Path(path)
    atomic_save({k: v.detach().cpu() for k, v in backbone.state_dict().items()}, path)
    description = {
        "method": method,
        "backbone": name,
        "in_channels": int(in_channels),
        "spatial_dims": int(spatial_dims),
        "backbone_kwargs": dict(backbone_kwargs or {}),
        "architecture": architecture_fingerprint(backbone),
        **dict(extra or {}),
    }
    sidecar = weights_sidecar(path)
    write_text_atomic(sidecar, json.dumps(description, indent=1) + "\n")
    return path


class BackboneExport:
    """Ignite handler: after every epoch (and at the end), save the pre-trained backbone with :func:`save_backbone`.

    Saving every epoch means a stopped pre-training still leaves usable weights of its last complete epoch.

    Args:
        backbone: the module to save (``MoCo.backbone``, ``InpaintingNet.backbone``).
        path: the weights file.
        name: the backbone's registry name.
        in_channels: image channels it was built with.
        spatial_dims: spatial dimensions it was built with.
        backbone_kwargs: the extra arguments it was built with.
        method: how it is trained.
        image_size: the pre-training image size (recorded, not enforced: CNN weights fit any size).
    """

    def __init__(
        self,
        backbone: nn.Module,
        path: str | os.PathLike[str],
        name: str,
        in_channels: int,
        spatial_dims: int,
        backbone_kwargs: Mapping[str, Any] | None,
        method: str,
        image_size: int | None = None,
    ) -> None:
        self.backbone = backbone
        self.path = Path(path)
        self.spec = {
            "name": name,
            "in_channels": in_channels,
            "spatial_dims": spatial_dims,
            "backbone_kwargs": backbone_kwargs,
            "method": method,
        }
        self.image_size = image_size

    def attach(self, engine: Engine) -> None:
        """Save at the end of every epoch."""
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Save the backbone and its sidecar, recording the epoch."""
        extra = {"epochs": engine.state.epoch, "image_size": self.image_size}
        save_backbone(self.backbone, self.path, **self.spec, extra=extra)
        logger.info(f"epoch {engine.state.epoch}: saved {self.spec['method']} backbone weights to {self.path}")
