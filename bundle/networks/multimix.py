"""``MultiMixNet``: joint classification and segmentation with a saliency bridge (Haque et al., ISBI / MELBA 2021).

One U-Net-like encoder is shared by a classification branch (global max pooling and a linear layer on the deepest
features) and a decoder with skip connections that predicts the lung mask. The *saliency bridge* hands the decoder
what the classifier looks at: the gradient of the top class score with respect to the input image (vanilla saliency,
Simonyan et al. 2014), detached, concatenated with the image, resized and fed into the first decoder stage.

Output (the same in training, evaluation and inference) is a dict of tensors:

- ``class_logits``: (B, num_classes);
- ``mask_logits``: (B, out_channels, *spatial), logits of the mask (sigmoid for probabilities);
- ``saliency``: (B, in_channels, *spatial), the raw input gradient of the top class score (only with the bridge).

The saliency needs gradients even at inference, so ``forward`` computes it under ``torch.enable_grad()`` on a
detached copy of the image that requires grad, and only there: when the caller runs under ``torch.no_grad()`` the
rest of the forward pass (decoder) builds no graph and every returned tensor is detached. The saliency is detached, so
the segmentation loss never reaches the classification branch through the bridge (it still trains the shared
encoder through the skip connections, which is the point of the shared encoder).

Tools that want one tensor out (``verify_net_in_out``, MONAI Label, MONAI Deploy) get it from ``MultiMixOutput``,
which selects one of the outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Pool
from monai.networks.nets.basic_unet import Down, TwoConv, UpCat
from torch import nn

__all__ = ["CLASS_LOGITS", "MASK_LOGITS", "SALIENCY", "MultiMixNet", "MultiMixOutput"]

CLASS_LOGITS = "class_logits"
MASK_LOGITS = "mask_logits"
SALIENCY = "saliency"


class MultiMixNet(nn.Module):
    """Shared encoder, classification branch, mask decoder and saliency bridge.

    The encoder has one double-convolution block per entry of ``channels`` (each convolution 3x3, instance norm,
    LeakyReLU(0.2), dropout), with a 2x max pooling before every block but the first. The classification branch pools
    the deepest features with a global *max*: instance norm removes the mean of every feature map of every image, so
    a global average of instance-normalised features is nearly the same for all images and a classifier on it does
    not learn (measured on the synthetic data: a constant prediction where max pooling learns). The decoder mirrors
    the encoder with transposed-convolution upsampling and skip connections (MONAI's ``BasicUNet`` blocks). The bridge
    input (image and saliency, ``2 * in_channels`` channels) joins the skip connection of the first decoder stage,
    resized to its resolution. Before joining, the saliency is scaled per image to a maximum magnitude of 1: raw input
    gradients are orders of magnitude smaller than image values, and their scale drifts as the classifier trains.

    Args:
        spatial_dims: 2 for radiographs (the network is dimension-agnostic).
        in_channels: image channels.
        num_classes: classification outputs.
        out_channels: mask channels.
        channels: feature channels of the encoder blocks, shallow to deep (MultiMix: 16, 32, 64, 128, 256).
        dropout: dropout after every convolution.
        act: activation (MONAI layer-factory form).
        norm: normalisation (MONAI layer-factory form).
        bridge: feed the saliency into the decoder; without it the decoder is a plain U-Net decoder and no saliency
            is computed (the segmentation-only baseline).

    Raises:
        ValueError: for fewer than two encoder blocks.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        out_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        dropout: float = 0.25,
        act: str | tuple = ("leakyrelu", {"negative_slope": 0.2, "inplace": True}),
        norm: str | tuple = ("instance", {"affine": True}),
        bridge: bool = True,
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if len(channels) < 2:
            raise ValueError(f"need at least two encoder blocks, got channels={channels}")
        self.bridge = bridge
        blocks: list[nn.Module] = [TwoConv(spatial_dims, in_channels, channels[0], act, norm, True, dropout)]
        blocks += [
            Down(spatial_dims, c_in, c_out, act, norm, True, dropout)
            for c_in, c_out in zip(channels[:-1], channels[1:], strict=True)
        ]
        self.encoder = nn.ModuleList(blocks)
        self.pool = Pool[Pool.ADAPTIVEMAX, spatial_dims](1)
        self.classifier = nn.Linear(channels[-1], num_classes)
        bridge_channels = 2 * in_channels if bridge else 0
        stages = []
        for level in range(len(channels) - 1, 0, -1):
            skip = channels[level - 1] + (bridge_channels if level == len(channels) - 1 else 0)
            stages.append(UpCat(spatial_dims, channels[level], skip, channels[level - 1], act, norm, True, dropout))
        self.decoder = nn.ModuleList(stages)
        self.mask_head = Conv[Conv.CONV, spatial_dims](channels[0], out_channels, kernel_size=1)

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Features of every encoder block, shallow to deep."""
        features = []
        x = image
        for block in self.encoder:
            x = block(x)
            features.append(x)
        return features

    def classify(self, deepest: torch.Tensor) -> torch.Tensor:
        """Class logits from the deepest features: global max pooling, then the linear layer."""
        return self.classifier(torch.flatten(self.pool(deepest), 1))

    def decode(self, features: Sequence[torch.Tensor], bridge: torch.Tensor | None) -> torch.Tensor:
        """Mask logits from the encoder features; ``bridge`` joins the first decoder stage's skip connection."""
        x = features[-1]
        for stage, skip in zip(self.decoder, reversed(features[:-1]), strict=True):
            if bridge is not None:
                resized = F.interpolate(bridge, size=skip.shape[2:], mode="area")
                skip, bridge = torch.cat([skip, resized], dim=1), None
            x = stage(x, skip)
        return self.mask_head(x)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Class logits, mask logits and (with the bridge) the saliency of a batch of images; see the module doc."""
        wants_graph = torch.is_grad_enabled()
        if not self.bridge:
            features = self.encode(image)
            return {CLASS_LOGITS: self.classify(features[-1]), MASK_LOGITS: self.decode(features, None)}
        source = image.detach().requires_grad_(True)
        with torch.enable_grad():
            features = self.encode(source)
            logits = self.classify(features[-1])
            # Samples do not interact (instance norm), so the gradient of the summed scores is each sample's own.
            top_score = logits.max(dim=1).values.sum()
            (saliency,) = torch.autograd.grad(top_score, source, retain_graph=wants_graph)
        if not wants_graph:
            features, logits = [f.detach() for f in features], logits.detach()
        scale = saliency.abs().flatten(1).amax(dim=1).clamp_min(1e-12)
        normalised = saliency / scale.reshape(-1, *([1] * (saliency.ndim - 1)))
        mask_logits = self.decode(features, torch.cat([image.detach(), normalised], dim=1))
        return {CLASS_LOGITS: logits, MASK_LOGITS: mask_logits, SALIENCY: saliency}


class MultiMixOutput(nn.Module):
    """One image tensor in, one tensor out: the ``MultiMixNet`` output named ``key`` (export and deployment).

    Args:
        network: the trained ``MultiMixNet``.
        key: ``mask_logits`` (segmentation deployments, the default) or ``class_logits``.

    Raises:
        ValueError: for another key.
    """

    def __init__(self, network: MultiMixNet, key: str = MASK_LOGITS) -> None:
        super().__init__()
        if key not in (CLASS_LOGITS, MASK_LOGITS):
            raise ValueError(f"key must be {CLASS_LOGITS!r} or {MASK_LOGITS!r}, got {key!r}")
        self.network = network
        self.key = key

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """The selected output of the wrapped network."""
        return self.network(image)[self.key]
