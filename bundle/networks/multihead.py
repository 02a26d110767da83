"""``MultiHeadNet``: one shared backbone, one head per task, ONE output tensor.

``forward(image) -> pred`` (B, tasks.out_channels): every head's logits concatenated in task order. A single tensor is
what ``verify_net_in_out``, ``ckpt_export`` (TorchScript), MONAI Deploy and MONAI Label expect; ``TaskSet.split``
gives the per-task logits back. Every head runs on every sample, so under DDP every parameter takes part in each step
(the loss masks the samples a head has no label for).

MDMT initialisation (the paper): the multi-task backbone starts as ``beta * A + (1 - beta) * B`` of the two single-task
models' backbones (``average_backbones``, then ``load_backbone_state``). The paper specifies only the backbone, so the
heads are left newly initialised by default; ``load_head_state`` copies a head from a single-task model for those who
want the STL heads as a start.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bundle.networks.backbones import build_backbone, feature_dim, load_pretrained
from bundle.networks.heads import build_head
from bundle.tasks import Task, TaskSet

__all__ = ["MultiHeadNet", "average_backbones", "load_backbone_state", "load_head_state"]

BACKBONE_PREFIX = "backbone."


class MultiHeadNet(nn.Module):
    """Shared backbone with one head per task; ``forward`` returns the heads' logits concatenated.

    Args:
        backbone: a name in ``bundle.networks.BACKBONES`` or a module mapping images to (B, F) features (F is then
            found by a dry forward pass on a 64-pixel image).
        tasks: a ``TaskSet`` or the config's list of task dicts; heads are built from it, in its order.
        in_channels: image channels.
        spatial_dims: 2 for radiographs, 3 for volumes.
        backbone_kwargs: extra arguments of the registered backbone (e.g. ``{img_size: 256}`` for ``vit``).
        pretrained: optional path of a state dict for the backbone (see ``bundle.networks.load_pretrained``).

    TorchScript: ``torch.jit.script`` works with the densenet, resnet, seresnet/seresnext/senet, efficientnet and vit
    backbones; ``swin`` can only be traced (``ckpt_export --use_trace``).
    """

    def __init__(
        self,
        backbone: str | nn.Module,
        tasks: TaskSet | Iterable[Task | Mapping[str, Any]],
        in_channels: int = 3,
        spatial_dims: int = 2,
        backbone_kwargs: Mapping[str, Any] | None = None,
        pretrained: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.tasks = tasks if isinstance(tasks, TaskSet) else TaskSet(tasks)
        if isinstance(backbone, str):
            self.backbone, self.feature_dim = build_backbone(
                backbone, in_channels=in_channels, spatial_dims=spatial_dims, **(backbone_kwargs or {})
            )
        else:
            if backbone_kwargs:
                raise ValueError("backbone_kwargs apply to a registered backbone name, not to a module")
            self.backbone, self.feature_dim = backbone, feature_dim(backbone, in_channels, spatial_dims)
        if pretrained is not None:
            load_pretrained(self.backbone, pretrained)
        self.heads = nn.ModuleDict({task.name: build_head(task, self.feature_dim) for task in self.tasks})

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Map (B, C, *spatial) images to (B, tasks.out_channels) logits, heads concatenated in task order."""
        features = self.backbone(image)
        logits: list[torch.Tensor] = []
        for head in self.heads.values():
            logits.append(head(features))
        return torch.cat(logits, dim=1)


def _prefixed(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Entries of ``state_dict`` under ``prefix``, with the prefix stripped."""
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def average_backbones(
    state_dict_a: Mapping[str, torch.Tensor], state_dict_b: Mapping[str, torch.Tensor], beta: float = 0.5
) -> dict[str, torch.Tensor]:
    """MDMT initialisation: ``beta * a + (1 - beta) * b`` over the ``backbone.`` entries of two ``MultiHeadNet``s.

    Batch-norm running statistics are floating point and are averaged like the weights; integer buffers (the
    ``num_batches_tracked`` counters) are taken from ``a``. Head entries are not returned (see the module docstring).

    Args:
        state_dict_a: state dict of the first single-task model (e.g. STL on prognosis).
        state_dict_b: state dict of the second (e.g. STL on severity), same backbone architecture.
        beta: weight of ``a``, in [0, 1]; 0.5 in the paper.

    Returns:
        The averaged backbone entries, keys still prefixed ``backbone.`` (ready for ``load_backbone_state``).

    Raises:
        ValueError: when ``beta`` is outside [0, 1], there are no backbone entries, or the two backbones differ in keys
            or shapes.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    a = {k: v for k, v in state_dict_a.items() if k.startswith(BACKBONE_PREFIX)}
    b = {k: v for k, v in state_dict_b.items() if k.startswith(BACKBONE_PREFIX)}
    if not a:
        raise ValueError(f"no '{BACKBONE_PREFIX}' entries: expected state dicts of MultiHeadNet models")
    if a.keys() != b.keys():
        only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
        raise ValueError(f"backbones differ: only in a {only_a[:10]}, only in b {only_b[:10]}")
    averaged = {}
    for key, va in a.items():
        vb = b[key]
        if va.shape != vb.shape:
            raise ValueError(f"backbones differ in shape at {key}: {tuple(va.shape)} vs {tuple(vb.shape)}")
        averaged[key] = beta * va + (1.0 - beta) * vb.to(va.device) if va.is_floating_point() else va.clone()
    return averaged


def load_backbone_state(net: MultiHeadNet, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load the ``backbone.`` entries of ``state_dict`` into ``net.backbone``, strictly; heads are left untouched.

    Raises:
        ValueError: when ``state_dict`` has no backbone entries or they do not match ``net.backbone``.
    """
    entries = _prefixed(state_dict, BACKBONE_PREFIX)
    if not entries:
        raise ValueError(f"no '{BACKBONE_PREFIX}' entries in the given state dict")
    try:
        net.backbone.load_state_dict(entries)
    except RuntimeError as err:
        raise ValueError(f"backbone state does not match {type(net.backbone).__name__}: {err}") from err


def load_head_state(net: MultiHeadNet, task: str, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Copy the head of ``task`` from another ``MultiHeadNet``'s state dict (e.g. its single-task model), strictly.

    Raises:
        ValueError: when ``net`` has no such head, or ``state_dict`` has no matching head entries.
    """
    if task not in net.heads:
        raise ValueError(f"the network has no head {task!r}; heads: {list(net.heads)}")
    entries = _prefixed(state_dict, f"heads.{task}.")
    if not entries:
        raise ValueError(f"no 'heads.{task}.' entries in the given state dict")
    try:
        net.heads[task].load_state_dict(entries)
    except RuntimeError as err:
        raise ValueError(f"head {task!r} state does not match: {err}") from err
