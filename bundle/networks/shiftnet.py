"""ShiftNet3D (COVID-MTL): a 3D SqueezeNet with Shift3D feature-map rolls, per-task heads and a radiomics side network.

``forward(image, radiomics=None) -> pred`` (B, tasks.out_channels): the bundle's one-tensor contract, so ``TaskSet``,
``MultiDatasetLoss`` and ``TaskMetrics`` work unchanged. With ``radiomics_features > 0`` the network also needs the
radiomics vector (B, F): in the bundle's workflows MONAI's ``PrepareBatchExtraInput({"radiomics": "radiomics"})``
passes the batch's ``radiomics`` key as that keyword argument, and the inference runner does the same.

Every module is dimension-agnostic through ``spatial_dims`` (MONAI's layer factories), so the same code runs on 2D
slices and on 3D volumes. Export with tracing (``ckpt_export ... --use_trace true``): Shift3D's training path draws
Python random numbers, which TorchScript cannot compile, and in eval mode it is the identity that tracing records.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from monai.networks.layers.factories import Conv, Norm, Pool
from torch import nn

from bundle.tasks import Task, TaskSet

__all__ = ["FEATURE_WIDTH", "Fire", "RadiomicsMLP", "Shift3D", "ShiftNet3D", "TaskHead"]

FIRE_CHANNELS = (128, 128, 256, 256, 384, 384, 512, 512)
FEATURE_WIDTH = 32  # the pooled feature of each task head, and the radiomics network's output


class Shift3D(nn.Module):
    """Training-time circular rolls of feature maps along a random spatial axis (an augmentation inside the network).

    For every sample picked (probability ``p``, per sample, or once per batch in ``per_batch`` mode), all its channels
    are rolled circularly along one random spatial axis, in a random direction, by 1 to ``max_fraction`` of that axis.
    The network then cannot rely on where in the feature map a pattern lies. With ``decay_steps``, ``p`` follows a
    cosine from its value to 0 over that many training steps (the step counter is a buffer: it is saved with the
    weights and a resumed run continues the schedule). In eval mode the layer is the identity.

    Args:
        p: probability that a sample (or the batch) is shifted.
        max_fraction: largest shift as a fraction of the axis length (at least one voxel is shifted).
        decay_steps: cosine decay of ``p`` to 0 over this many training forward passes; None: constant ``p``.
        per_batch: one decision, axis and shift for the whole batch instead of one per sample.
    """

    def __init__(
        self, p: float = 0.25, max_fraction: float = 0.2, decay_steps: int | None = None, per_batch: bool = False
    ) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0 or not 0.0 < max_fraction <= 1.0:
            raise ValueError(f"p must be in [0, 1] and max_fraction in (0, 1], got p={p}, max_fraction={max_fraction}")
        self.p = p
        self.max_fraction = max_fraction
        self.decay_steps = decay_steps
        self.per_batch = per_batch
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def probability(self) -> float:
        """The shift probability at the current step (after cosine decay, when configured)."""
        if not self.decay_steps:
            return self.p
        progress = min(int(self.step), self.decay_steps) / self.decay_steps
        return self.p * 0.5 * (1.0 + math.cos(math.pi * progress))

    def sample_shifts(self, batch: int, spatial: Sequence[int]) -> list[tuple[int, int] | None]:
        """Draw the rolls of one batch: per sample, ``(spatial axis, signed shift)`` or None when not picked.

        Uses torch's global random generator (seeded by ``set_determinism``), so runs are reproducible.
        """
        draws = 1 if self.per_batch else batch
        picked = (torch.rand(draws) < self.probability()).tolist()
        axes = torch.randint(len(spatial), (draws,)).tolist()
        signs = (torch.randint(2, (draws,)) * 2 - 1).tolist()
        fractions = torch.rand(draws).tolist()
        plan: list[tuple[int, int] | None] = []
        for i in range(draws):
            largest = max(1, int(self.max_fraction * spatial[axes[i]]))
            plan.append((axes[i], signs[i] * (1 + int(fractions[i] * largest))) if picked[i] else None)
        return plan * batch if self.per_batch else plan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Roll the picked samples of ``x`` (B, C, *spatial) in training; return ``x`` unchanged in eval."""
        if not self.training:
            return x
        plan = self.sample_shifts(x.shape[0], x.shape[2:])
        self.step += 1
        if all(shift is None for shift in plan):
            return x
        return torch.stack(
            [
                sample if shift is None else torch.roll(sample, shift[1], dims=shift[0] + 1)
                for sample, shift in zip(x, plan, strict=True)
            ]
        )


class Fire(nn.Module):
    """SqueezeNet Fire module: squeeze 1^d conv, then expand 1^d and 3^d convs concatenated (each with BN + ReLU).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (even: half from each expand branch).
        squeeze_channels: width of the squeeze conv (default ``out_channels // 8``, SqueezeNet's ratio).
        bypass: add the input to the output (a residual bypass; needs ``in_channels == out_channels``).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        squeeze_channels: int | None = None,
        bypass: bool = False,
    ) -> None:
        super().__init__()
        if out_channels % 2 or (bypass and in_channels != out_channels):
            raise ValueError(
                f"Fire needs an even out_channels, and in == out for a bypass: {in_channels}->{out_channels}"
            )
        conv, norm = Conv[Conv.CONV, spatial_dims], Norm[Norm.BATCH, spatial_dims]
        squeeze = squeeze_channels or max(out_channels // 8, 1)
        self.bypass = bypass
        self.squeeze = nn.Sequential(conv(in_channels, squeeze, kernel_size=1), norm(squeeze), nn.ReLU(inplace=True))
        half = out_channels // 2
        self.expand1 = nn.Sequential(conv(squeeze, half, kernel_size=1), norm(half), nn.ReLU(inplace=True))
        self.expand3 = nn.Sequential(conv(squeeze, half, kernel_size=3, padding=1), norm(half), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in, *spatial) -> (B, out, *spatial)."""
        s = self.squeeze(x)
        out = torch.cat([self.expand1(s), self.expand3(s)], dim=1)
        return out + x if self.bypass else out


class TaskHead(nn.Module):
    """One task's head: 1^d conv to a 32-channel map, ReLU, global average pool -> the task's 32-d feature."""

    def __init__(self, spatial_dims: int, in_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.conv = Conv[Conv.CONV, spatial_dims](in_channels, FEATURE_WIDTH, kernel_size=1)
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *spatial) -> (B, 32)."""
        return torch.flatten(self.pool(torch.relu(self.conv(self.dropout(x)))), 1)


class RadiomicsMLP(nn.Sequential):
    """The auxiliary network on radiomics features: BatchNorm, then F-256-128-64-32 with ReLUs.

    The leading BatchNorm standardises the features (their scales differ by orders of magnitude) with statistics
    learned on the training set and saved with the weights, so inference needs no separate scaler file.
    """

    def __init__(self, in_features: int, hidden: Sequence[int] = (256, 128, 64), dropout: float = 0.0) -> None:
        layers: list[nn.Module] = [nn.BatchNorm1d(in_features)]
        width = in_features
        for h in (*hidden, FEATURE_WIDTH):
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = h
        super().__init__(*layers[:-1])


class ShiftNet3D(nn.Module):
    """COVID-MTL's network: SqueezeNet-style trunk with Shift3D, one head per task, optional radiomics side network.

    Trunk: conv k3 s2 (``stem_channels``) + BN + ReLU, Shift3D, max-pool, then 8 Fire modules with ``channels``
    (bypass on every second one) and a max-pool between pairs. Each task's head pools a 32-d feature; with radiomics,
    the side network's 32-d output is concatenated to it before the task's final Linear(64, n_classes) (else
    Linear(32, n_classes)).

    Args:
        tasks: a ``TaskSet`` or the config's task dicts (one head each, in order; ``pred`` concatenates them).
        in_channels: image channels (1 for CT).
        spatial_dims: 3 for volumes (2 works for slices).
        channels: output channels of the 8 Fire modules.
        stem_channels: channels of the stem conv.
        radiomics_features: length F of the radiomics vector; 0 builds no side network.
        shift_prob, shift_max_fraction, shift_decay_steps, shift_per_batch: the ``Shift3D`` settings; ``shift_prob``
            0 removes the layer (the ablation without Shift3D).
        dropout: dropout in front of each head's conv and in the radiomics network.
    """

    def __init__(
        self,
        tasks: TaskSet | Iterable[Task | Mapping[str, Any]],
        in_channels: int = 1,
        spatial_dims: int = 3,
        channels: Sequence[int] = FIRE_CHANNELS,
        stem_channels: int = 64,
        radiomics_features: int = 0,
        shift_prob: float = 0.25,
        shift_max_fraction: float = 0.2,
        shift_decay_steps: int | None = None,
        shift_per_batch: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(channels) != 8:
            raise ValueError(f"ShiftNet3D has 8 Fire modules, got {len(channels)} channel widths")
        self.tasks = tasks if isinstance(tasks, TaskSet) else TaskSet(tasks)
        conv, norm = Conv[Conv.CONV, spatial_dims], Norm[Norm.BATCH, spatial_dims]
        pool = Pool[Pool.MAX, spatial_dims]
        self.stem = nn.Sequential(
            conv(in_channels, stem_channels, kernel_size=3, stride=2, padding=1), norm(stem_channels), nn.ReLU(True)
        )
        self.shift = (
            Shift3D(shift_prob, shift_max_fraction, shift_decay_steps, shift_per_batch)
            if shift_prob > 0
            else nn.Identity()
        )
        layers: list[nn.Module] = [pool(kernel_size=3, stride=2, ceil_mode=True)]
        width = stem_channels
        for i, out in enumerate(channels):
            if i and i % 2 == 0:
                layers.append(pool(kernel_size=3, stride=2, ceil_mode=True))
            layers.append(Fire(spatial_dims, width, out, bypass=i % 2 == 1 and width == out))
            width = out
        self.features = nn.Sequential(*layers)
        self.radiomics = RadiomicsMLP(radiomics_features, dropout=dropout) if radiomics_features > 0 else None
        final_in = FEATURE_WIDTH * (2 if self.radiomics is not None else 1)
        self.heads = nn.ModuleDict({t.name: TaskHead(spatial_dims, width, dropout) for t in self.tasks})
        self.classifiers = nn.ModuleDict({t.name: nn.Linear(final_in, t.out_channels) for t in self.tasks})

    def forward(self, image: torch.Tensor, radiomics: torch.Tensor | None = None) -> torch.Tensor:
        """Map (B, C, *spatial) images (and (B, F) radiomics) to (B, tasks.out_channels) logits in task order.

        Raises:
            ValueError: when the network has a radiomics side network and no radiomics vector is given, or the other
                way round (silently dropping an input would change the model).
        """
        if (radiomics is None) != (self.radiomics is None):
            raise ValueError(
                "this ShiftNet3D "
                + ("needs a radiomics vector (B, F)" if self.radiomics is not None else "has no radiomics input")
            )
        trunk = self.features(self.shift(self.stem(image)))
        side = (
            self.radiomics(radiomics.to(trunk.dtype)) if self.radiomics is not None and radiomics is not None else None
        )
        logits = []
        for name, head in self.heads.items():
            feature = head(trunk)
            if side is not None:
                feature = torch.cat([feature, side], dim=1)
            logits.append(self.classifiers[name](feature))
        return torch.cat(logits, dim=1)
