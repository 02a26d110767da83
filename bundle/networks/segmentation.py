"""Encoder-decoder networks on any registry backbone: task logits from pooled features, a mask from a U-Net decoder.

Registry backbones (``bundle.networks.backbones``) map an image to pooled (B, F) features, which is all a
classification head needs. A segmentation (or inpainting) decoder needs the backbone's feature *maps* at several
strides. :class:`FeaturePyramid` finds them without modifying the backbone: a dry forward pass records which modules
output the last feature map at each stride 2, 4, 8, 16 and 32, and every real forward pass reads those outputs through
temporary forward hooks. The backbone therefore stays the registry's own module with its own state-dict keys, so
weights from self-supervised pre-training, from ``MultiHeadNet``'s ``backbone.`` entries or any file that
``load_pretrained`` accepts fit as they are, and weights trained here fit ``MultiHeadNet`` in return.

:class:`SegmentationMultiHeadNet` is the fine-grained multi-task model (methods.md, section 5): one shared encoder,
one head per classification task (exactly as in ``MultiHeadNet``) and, when ``seg_channels > 0``, a U-Net decoder with
skip connections giving opacity-mask logits. Its ``forward`` returns a dict, ``{"pred": (B, tasks.out_channels)}``
plus ``"seg": (B, seg_channels, *spatial)`` when it segments; :class:`PredOnly` wraps it for export (one image in,
one ``pred`` tensor out, the bundle's network contract).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from monai.networks.nets.basic_unet import TwoConv
from torch import nn

from bundle.networks.backbones import ViTFeatures, build_backbone, load_pretrained
from bundle.networks.heads import build_head
from bundle.tasks import Task, TaskSet

__all__ = ["FeaturePyramid", "PredOnly", "SegmentationMultiHeadNet", "UNetDecoder"]

PYRAMID_STRIDES = (2, 4, 8, 16, 32)
_INTERPOLATION = {1: "linear", 2: "bilinear", 3: "trilinear"}
# Only modules this close to the backbone's root are taps: stages and stems, never a layer inside a block (an
# attention map or a padding step can have the shape of a feature map by coincidence).
_MAX_TAP_DEPTH = 2
_PROBE_BATCH = 2
_MIN_PROBE_SIZE = 64


@dataclass(frozen=True)
class Tap:
    """Where one pyramid level is read: the ``call``-th output of module ``name`` (modules may run more than once).

    Attributes:
        name: module path inside the backbone.
        call: which call of that module within one forward pass (0 = the first).
        stride: the level's downsampling factor.
        channels: the level's feature channels.
        tokens: the output is a ViT token sequence (B, 1 + N, D) to be laid out on the patch grid.
    """

    name: str
    call: int
    stride: int
    channels: int
    tokens: bool = False


class FeaturePyramid:
    """The feature maps of a registry backbone at strides 2..32, read through forward hooks.

    A plain object, not a module: it holds no weights and no reference to the backbone (which is passed to
    :meth:`__call__`), so a network's state dict and ``copy.deepcopy`` (MoCo's key encoder) are unaffected.

    Args:
        backbone: a feature extractor from ``build_backbone`` (or any module with the same contract).
        in_channels: image channels.
        spatial_dims: 2 or 3.
        probe_size: side of the zero image of the dry forward pass; at least 64 (smaller sizes make the global pool
            look like a feature map). A ViT backbone is probed at its own ``img_size``.

    Raises:
        ValueError: when no feature map is found (the message names the backbone).
    """

    def __init__(self, backbone: nn.Module, in_channels: int = 3, spatial_dims: int = 2, probe_size: int = 64) -> None:
        self.spatial_dims = spatial_dims
        if isinstance(backbone, ViTFeatures):
            self.taps = (self._vit_tap(backbone),)
            return
        self.taps = self._probe(backbone, in_channels, spatial_dims, max(probe_size, _MIN_PROBE_SIZE))
        if not self.taps:
            raise ValueError(f"no feature maps at strides {PYRAMID_STRIDES} found in {type(backbone).__name__}")

    @staticmethod
    def _vit_tap(backbone: ViTFeatures) -> Tap:
        """ViT has one level: the normalised patch tokens, at the patch size's stride."""
        patch = backbone.patch_embedding.patch_embeddings  # a strided conv, or (Rearrange, Linear) for "perceptron"
        is_conv = isinstance(patch, (nn.Conv1d, nn.Conv2d, nn.Conv3d))
        stride = int(patch.stride[0]) if is_conv else int(patch[0].axes_lengths["p1"])
        return Tap("norm", 0, stride, int(backbone.norm.normalized_shape[0]), tokens=True)

    @staticmethod
    def _probe(backbone: nn.Module, in_channels: int, spatial_dims: int, size: int) -> tuple[Tap, ...]:
        """One dry forward pass recording, per stride, the last shallow module whose output is a map at that stride."""
        calls: dict[str, int] = {}
        found: dict[int, Tap] = {}

        def record(name: str, module: nn.Module, args: Any, output: Any) -> None:
            call = calls.get(name, 0)
            calls[name] = call + 1
            if not isinstance(output, torch.Tensor) or output.ndim != spatial_dims + 2:
                return
            if output.shape[0] != _PROBE_BATCH or len(set(output.shape[2:])) != 1 or size % output.shape[2]:
                return
            stride = size // output.shape[2]
            if stride in PYRAMID_STRIDES:
                found[stride] = Tap(name, call, stride, int(output.shape[1]))

        handles = [
            module.register_forward_hook(partial(record, name))
            for name, module in backbone.named_modules()
            if name and name.count(".") < _MAX_TAP_DEPTH
        ]
        was_training = backbone.training
        backbone.eval()
        try:
            with torch.no_grad():
                backbone(torch.zeros(_PROBE_BATCH, in_channels, *([size] * spatial_dims)))
        finally:
            backbone.train(was_training)
            for handle in handles:
                handle.remove()
        return tuple(found[s] for s in sorted(found))

    @property
    def channels(self) -> list[int]:
        """Channels of each level, shallow to deep."""
        return [tap.channels for tap in self.taps]

    @property
    def deepest(self) -> Tap:
        """The deepest level (e.g. ``layer4`` of a ResNet): the usual Grad-CAM target layer."""
        return self.taps[-1]

    def __call__(self, backbone: nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run ``backbone`` on ``image``; return its pooled features and the pyramid's maps, shallow to deep.

        Raises:
            RuntimeError: when a tap did not fire (the backbone is not the one the pyramid was probed on).
        """
        maps: dict[int, torch.Tensor] = {}
        calls: dict[str, int] = {}

        def capture(index: int, tap: Tap, module: nn.Module, args: Any, output: torch.Tensor) -> None:
            call = calls.get(tap.name, 0)
            calls[tap.name] = call + 1
            if call == tap.call:
                maps[index] = self._tokens_to_map(output, image) if tap.tokens else output

        modules = dict(backbone.named_modules())
        handles = []
        try:
            for index, tap in enumerate(self.taps):
                if tap.name not in modules:
                    raise RuntimeError(f"feature tap {tap.name!r} is not a module of {type(backbone).__name__}")
                handles.append(modules[tap.name].register_forward_hook(partial(capture, index, tap)))
            pooled = backbone(image)
        finally:
            for handle in handles:
                handle.remove()
        if len(maps) != len(self.taps):
            missing = [tap.name for i, tap in enumerate(self.taps) if i not in maps]
            raise RuntimeError(f"feature taps {missing} did not run in {type(backbone).__name__}")
        return pooled, [maps[i] for i in range(len(self.taps))]

    def _tokens_to_map(self, tokens: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """ViT tokens (B, 1 + N, D) -> (B, D, *grid), dropping the class token."""
        grid = [s // self.taps[0].stride for s in image.shape[2:]]
        patches = tokens[:, 1:].transpose(1, 2)
        return patches.reshape(tokens.shape[0], tokens.shape[2], *grid)


class UNetDecoder(nn.Module):
    """Decode pyramid maps (shallow to deep) to ``out_channels`` logits at the input size.

    From the deepest map upwards, each level upsamples (interpolation to the next map's size, so any stride ratio
    works), concatenates that level's map when ``skips`` is on, and applies MONAI's ``TwoConv`` (conv-norm-act twice,
    as in ``BasicUNet``). A 1x1 convolution gives the logits at the shallowest level's resolution and they are
    interpolated to the input size.

    With ``skips`` off it is a light bottleneck decoder that sees only the deepest features, as a context encoder's
    decoder does: inpainting then has to be solved from what the encoder represents, which is the point of using it
    for pre-training.

    Args:
        spatial_dims: 2 or 3.
        pyramid_channels: channels of the pyramid's maps, shallow to deep.
        out_channels: output channels.
        channels: decoder width of every level, or one width per level from deep to shallow.
        skips: concatenate each level's encoder map (U-Net) or not (bottleneck decoder).
        norm: MONAI norm of the decoder convolutions.
        act: MONAI activation of the decoder convolutions.
    """

    def __init__(
        self,
        spatial_dims: int,
        pyramid_channels: Sequence[int],
        out_channels: int,
        channels: int | Sequence[int] = 64,
        skips: bool = True,
        norm: str | tuple = "batch",
        act: str | tuple = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
    ) -> None:
        super().__init__()
        levels = len(pyramid_channels) - 1
        widths = [channels] * max(levels, 1) if isinstance(channels, int) else list(channels)
        if len(widths) < max(levels, 1):
            raise ValueError(f"decoder channels {list(widths)} do not cover the {levels} decoder levels")
        self.spatial_dims = spatial_dims
        self.skips = skips
        self.mode = _INTERPOLATION[spatial_dims]
        self.blocks = nn.ModuleList()
        width = pyramid_channels[-1]
        for level, skip_channels in enumerate(reversed(pyramid_channels[:-1])):
            in_channels = width + (skip_channels if skips else 0)
            self.blocks.append(TwoConv(spatial_dims, in_channels, widths[level], act, norm, bias=False))
            width = widths[level]
        if not self.blocks:  # a single-level pyramid (ViT): one block at that level
            self.blocks.append(TwoConv(spatial_dims, width, widths[0], act, norm, bias=False))
            width = widths[0]
        self.head = Conv[Conv.CONV, spatial_dims](width, out_channels, kernel_size=1)

    def forward(self, maps: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
        """Logits (B, out_channels, *size) from the pyramid ``maps`` (shallow to deep)."""
        x = maps[-1]
        skips = list(reversed(maps[:-1])) or [maps[-1]]
        for block, skip in zip(self.blocks, skips, strict=True):
            if x.shape[2:] != skip.shape[2:]:
                x = F.interpolate(x, size=skip.shape[2:], mode=self.mode, align_corners=False)
            x = block(torch.cat([x, skip], dim=1) if self.skips and len(maps) > 1 else x)
        return F.interpolate(self.head(x), size=tuple(size), mode=self.mode, align_corners=False)


class SegmentationMultiHeadNet(nn.Module):
    """Shared registry backbone, one head per task and an optional U-Net decoder: ``{"pred", "seg"}`` out.

    ``pred`` is computed exactly as in ``MultiHeadNet`` (every task head on the pooled features, concatenated in task
    order), so ``TaskSet.split``, ``MultiDatasetLoss`` and ``TaskMetrics`` work on it unchanged; ``seg`` holds the
    segmentation logits at the input size. With ``seg_channels=0`` there is no decoder and the same network is the
    single-task (classification only) baseline.

    Args:
        backbone: a name in ``bundle.networks.BACKBONES``.
        tasks: a ``TaskSet`` or the config's list of task dicts.
        seg_channels: segmentation output channels (1 for an opacity mask); 0 for no decoder.
        in_channels: image channels.
        spatial_dims: 2 or 3.
        backbone_kwargs: extra arguments of the registered backbone.
        pretrained: optional path of backbone weights (see ``bundle.networks.load_pretrained``).
        decoder_channels: decoder width(s), see :class:`UNetDecoder`.
        image_size: an input size the backbone accepts, for the feature-pyramid probe.
    """

    def __init__(
        self,
        backbone: str,
        tasks: TaskSet | Iterable[Task | Mapping[str, Any]],
        seg_channels: int = 1,
        in_channels: int = 3,
        spatial_dims: int = 2,
        backbone_kwargs: Mapping[str, Any] | None = None,
        pretrained: str | Path | None = None,
        decoder_channels: int | Sequence[int] = 64,
        image_size: int = 64,
    ) -> None:
        super().__init__()
        self.tasks = tasks if isinstance(tasks, TaskSet) else TaskSet(tasks)
        self.backbone, self.feature_dim = build_backbone(
            backbone, in_channels=in_channels, spatial_dims=spatial_dims, **(backbone_kwargs or {})
        )
        if pretrained is not None:
            load_pretrained(self.backbone, pretrained)
        self.heads = nn.ModuleDict({task.name: build_head(task, self.feature_dim) for task in self.tasks})
        self.pyramid = FeaturePyramid(self.backbone, in_channels, spatial_dims, image_size)
        self.decoder = (
            UNetDecoder(spatial_dims, self.pyramid.channels, seg_channels, decoder_channels, skips=True)
            if seg_channels > 0
            else None
        )

    @property
    def cam_layer(self) -> str:
        """Module path of the deepest feature map (``backbone.layer4`` for a ResNet), the Grad-CAM target layer."""
        return f"backbone.{self.pyramid.deepest.name}"

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"pred": (B, tasks.out_channels)}``, plus ``"seg": (B, seg_channels, *spatial)`` with a decoder."""
        if self.decoder is None:
            features = self.backbone(image)
            return {"pred": torch.cat([head(features) for head in self.heads.values()], dim=1)}
        features, maps = self.pyramid(self.backbone, image)
        pred = torch.cat([head(features) for head in self.heads.values()], dim=1)
        return {"pred": pred, "seg": self.decoder(maps, image.shape[2:])}


class PredOnly(nn.Module):
    """One image in, one tensor out: the ``pred`` entry of a dict-output network (for export and Grad-CAM).

    The wrapper is transparent to checkpoints: ``state_dict`` and ``load_state_dict`` are the wrapped network's, so
    ``ckpt_export`` loads a training checkpoint into it unchanged. Module paths (for Grad-CAM target layers) gain the
    ``network.`` prefix. The feature pyramid's hooks cannot be scripted: export with ``--use_trace True``.

    Args:
        network: a network whose forward returns a dict with a ``pred`` tensor.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """The wrapped network's ``pred``."""
        return self.network(image)["pred"]

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The wrapped network's state dict (no ``network.`` prefix)."""
        return self.network.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load a state dict of the wrapped network."""
        return self.network.load_state_dict(state_dict, strict=strict, assign=assign)
