"""Backbone registry: MONAI networks with their classifier removed, mapping an image to a pooled feature vector.

Every builder returns ``(module, F)`` where ``module(image)`` is ``(B, F)``. No torchvision build and no weight download
exist here, so the backbones are MONAI's own, built from scratch; a user-supplied state dict can be loaded with
``pretrained=path`` (loaded with ``weights_only=True``: configs and checkpoints must not execute pickled code).

Classifier removal replaces the final ``Linear`` (and the dropout in front of it, which belongs to the classifier) by
``nn.Identity`` so that state-dict keys stay those of the MONAI network: weights saved from the MONAI classifier network
load as they are, and the removed classifier's entries are skipped.

Registry names: ``densenet121/169/201/264``, ``resnet10/18/34/50/101/152/200``, ``seresnet50/101/152``,
``seresnext50/101``, ``senet154``, ``efficientnet-b0`` .. ``efficientnet-b8``, ``vit``, ``swin``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
from monai.networks.layers.factories import Pool
from monai.networks.nets import (
    DenseNet121,
    DenseNet169,
    DenseNet201,
    DenseNet264,
    EfficientNetBN,
    SENet154,
    SEResNet50,
    SEResNet101,
    SEResNet152,
    SEResNext50,
    SEResNext101,
    ViT,
    resnet10,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
    resnet200,
)
from monai.networks.nets.swin_unetr import SwinTransformer
from torch import nn

__all__ = [
    "BACKBONES",
    "SwinFeatures",
    "ViTFeatures",
    "architecture_fingerprint",
    "build_backbone",
    "feature_dim",
    "load_pretrained",
    "weights_sidecar",
]

logger = logging.getLogger(__name__)

BackboneBuilder = Callable[..., tuple[nn.Module, int]]


def _densenet(cls: type[nn.Module], in_channels: int, spatial_dims: int, **kwargs: Any) -> tuple[nn.Module, int]:
    """DenseNet: ``class_layers`` is ReLU - pool - flatten - Linear; only the Linear goes."""
    net = cls(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=1, **kwargs)
    features = net.class_layers.out.in_features
    net.class_layers.out = nn.Identity()
    return net, features


def _resnet(
    factory: Callable[..., nn.Module], in_channels: int, spatial_dims: int, conv1_t_stride: int = 2, **kwargs: Any
) -> tuple[nn.Module, int]:
    """ResNet with ``feed_forward=False`` (pooled, flattened, no fc).

    ``conv1_t_stride`` defaults to 2 as in torchvision: MONAI's default of 1 makes every later stage 4x larger in 2D,
    8-10x slower at 224-256 px.
    """
    net = factory(
        spatial_dims=spatial_dims,
        n_input_channels=in_channels,
        conv1_t_stride=conv1_t_stride,
        feed_forward=False,
        **kwargs,
    )
    return net, net.in_planes


def _senet(cls: type[nn.Module], in_channels: int, spatial_dims: int, **kwargs: Any) -> tuple[nn.Module, int]:
    """SENet family: ``logits`` is pool - dropout - flatten - Linear; dropout and Linear go."""
    net = cls(spatial_dims=spatial_dims, in_channels=in_channels, num_classes=1, **kwargs)
    features = net.last_linear.in_features
    net.dropout = None
    net.last_linear = nn.Identity()
    return net, features


def _efficientnet(model_name: str, in_channels: int, spatial_dims: int, **kwargs: Any) -> tuple[nn.Module, int]:
    """EfficientNetBN, no ImageNet weights (no download here): pool - flatten - dropout - Linear; the last two go."""
    net = EfficientNetBN(
        model_name, pretrained=False, spatial_dims=spatial_dims, in_channels=in_channels, num_classes=1, **kwargs
    )
    features = net._fc.in_features
    net._dropout = nn.Identity()
    net._fc = nn.Identity()
    return net, features


class ViTFeatures(ViT):
    """MONAI ViT returning the normalised CLS token (B, hidden_size) instead of ``(logits, hidden_states)``.

    Subclassing rather than wrapping keeps the state-dict keys of MONAI's ViT. ``post_activation`` is off and the
    classification head is an identity, so the heads see the raw CLS embedding.
    """

    def __init__(self, in_channels: int, img_size: int | tuple[int, ...], patch_size: int = 16, **kwargs: Any) -> None:
        super().__init__(
            in_channels=in_channels,
            img_size=img_size,
            patch_size=patch_size,
            classification=True,
            post_activation=None,
            **kwargs,
        )
        self.classification_head = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embedding, CLS token, transformer blocks, final norm; the CLS token's features."""
        x = self.patch_embedding(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 0]


def _vit(
    in_channels: int, spatial_dims: int, img_size: int | tuple[int, ...] | None = None, **kwargs: Any
) -> tuple[nn.Module, int]:
    """ViT (B/16 by default); ``img_size`` is required: the position embedding is sized by it, so inputs must match."""
    if img_size is None:
        raise ValueError(
            "backbone 'vit' needs img_size (the training image size), e.g. backbone_kwargs {img_size: 256}"
        )
    net = ViTFeatures(in_channels=in_channels, img_size=img_size, spatial_dims=spatial_dims, **kwargs)
    return net, net.norm.normalized_shape[0]


class SwinFeatures(SwinTransformer):
    """MONAI Swin transformer encoder (as in SwinUNETR), deepest normalised stage globally average-pooled.

    Input sizes must be divisible by ``patch_size * 2**len(depths)`` (32 with the defaults).
    """

    def __init__(self, spatial_dims: int, **kwargs: Any) -> None:
        super().__init__(spatial_dims=spatial_dims, **kwargs)
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Pooled features of the last stage, (B, embed_dim * 2**len(depths))."""
        return torch.flatten(self.pool(super().forward(x, normalize=True)[-1]), 1)


def _swin(
    in_channels: int,
    spatial_dims: int,
    embed_dim: int = 48,
    window_size: int = 7,
    patch_size: int = 2,
    depths: tuple[int, ...] = (2, 2, 2, 2),
    num_heads: tuple[int, ...] = (3, 6, 12, 24),
    **kwargs: Any,
) -> tuple[nn.Module, int]:
    """Swin encoder with SwinUNETR's defaults (feature size 48); every stage ends with a patch merging (x2 channels)."""
    net = SwinFeatures(
        spatial_dims=spatial_dims,
        in_chans=in_channels,
        embed_dim=embed_dim,
        window_size=(window_size,) * spatial_dims,
        patch_size=(patch_size,) * spatial_dims,
        depths=depths,
        num_heads=num_heads,
        **kwargs,
    )
    return net, embed_dim * 2 ** len(depths)


_DENSENETS = {121: DenseNet121, 169: DenseNet169, 201: DenseNet201, 264: DenseNet264}
_RESNETS = {10: resnet10, 18: resnet18, 34: resnet34, 50: resnet50, 101: resnet101, 152: resnet152, 200: resnet200}
BACKBONES: dict[str, BackboneBuilder] = {
    **{f"densenet{d}": partial(_densenet, c) for d, c in _DENSENETS.items()},
    **{f"resnet{d}": partial(_resnet, f) for d, f in _RESNETS.items()},
    "seresnet50": partial(_senet, SEResNet50),
    "seresnet101": partial(_senet, SEResNet101),
    "seresnet152": partial(_senet, SEResNet152),
    "seresnext50": partial(_senet, SEResNext50),
    "seresnext101": partial(_senet, SEResNext101),
    "senet154": partial(_senet, SENet154),
    **{f"efficientnet-b{i}": partial(_efficientnet, f"efficientnet-b{i}") for i in range(9)},
    "vit": _vit,
    "swin": _swin,
}


def feature_dim(module: nn.Module, in_channels: int = 3, spatial_dims: int = 2, spatial_size: int = 64) -> int:
    """Feature width F of a backbone by one dry forward pass on a zero image (for backbones given as modules).

    Runs in eval mode without gradients (batch-norm statistics untouched) and restores the training flag.

    Raises:
        ValueError: when the output is not (B, F).
    """
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, in_channels, *([spatial_size] * spatial_dims)))
    finally:
        module.train(was_training)
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"a backbone must map an image to (B, F) pooled features, got {shape}")
    return int(out.shape[1])


def _belongs_to_removed_head(module: nn.Module, key: str) -> bool:
    """True when ``key`` is a parameter of a layer this registry replaced by ``nn.Identity`` (the old classifier)."""
    try:
        return isinstance(module.get_submodule(key.rpartition(".")[0]), nn.Identity)
    except AttributeError:
        return False


def architecture_fingerprint(module: nn.Module) -> str:
    """A short hash of a backbone's architecture: layer types, kernel/stride/padding/dilation/groups, weight shapes.

    Two backbones with the same fingerprint accept the same weights *and* use them the same way; weights of a ResNet
    built with ``conv1_t_stride=1`` have the shapes of one built with 2, but not its fingerprint.
    """
    digest = hashlib.sha256()
    for name, layer in module.named_modules():
        settings = [getattr(layer, a, None) for a in ("kernel_size", "stride", "padding", "dilation", "groups")]
        digest.update(f"{name}|{type(layer).__name__}|{settings}\n".encode())
    for name, value in module.state_dict().items():
        digest.update(f"{name}|{tuple(value.shape)}\n".encode())
    return digest.hexdigest()[:16]


def weights_sidecar(path: str | Path) -> Path:
    """The JSON file describing a backbone weights file (``w.pt`` -> ``w.json``), written by pre-training."""
    return Path(path).with_suffix(".json")


def load_pretrained(module: nn.Module, path: str | Path, max_listed: int = 10) -> None:
    """Load a user-supplied state dict into a backbone, strictly, except for the removed classifier's entries.

    When the weights come with a sidecar (``weights_sidecar(path)``, written by the self-supervised pre-training:
    backbone name, in_channels, spatial_dims, kwargs, method and ``architecture_fingerprint``), a backbone whose
    fingerprint differs is refused and the error says what the weights were trained for.

    Args:
        module: the feature extractor returned by ``build_backbone``.
        path: a file written by ``torch.save(state_dict)``; read with ``weights_only=True``.
        max_listed: how many mismatched keys each part of the error message lists.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when the file holds no state dict, or its keys or shapes do not match the backbone (the message
            names the file and lists missing, unexpected and mis-shaped keys), or its sidecar's architecture differs.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained backbone weights not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping of parameter names to tensors)")
    skipped = [k for k in state if _belongs_to_removed_head(module, k)]
    if skipped:
        logger.info("%s: skipping the removed classifier's entries %s", path, skipped)
    state = {k: v for k, v in state.items() if k not in skipped}
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{what} ({len(keys)}): {keys[:max_listed]}{' ...' if len(keys) > max_listed else ''}"
        for what, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes))
        if keys
    ]
    described = ""
    if weights_sidecar(path).is_file():
        info = json.loads(weights_sidecar(path).read_text())
        described = (
            f" ({info.get('method')} pre-training of backbone {info.get('backbone')!r} with in_channels="
            f"{info.get('in_channels')}, spatial_dims={info.get('spatial_dims')}, kwargs {info.get('backbone_kwargs')};"
            " build the network with the same backbone, in_channels, spatial_dims and backbone_kwargs)"
        )
        if info.get("architecture") not in (None, architecture_fingerprint(module)):
            problems.insert(0, "architecture differs from the one the weights were trained with")
    if problems:
        raise ValueError(
            f"pretrained weights {path}{described} do not match the backbone {type(module).__name__}: "
            + "; ".join(problems)
        )
    module.load_state_dict(state)


def build_backbone(
    name: str, in_channels: int = 3, spatial_dims: int = 2, pretrained: str | Path | None = None, **kwargs: Any
) -> tuple[nn.Module, int]:
    """Build a registered backbone as a feature extractor.

    Args:
        name: a key of ``BACKBONES``.
        in_channels: image channels (3 for ImageNet-style stems fed a replicated grey CXR).
        spatial_dims: 2 for radiographs, 3 for volumes.
        pretrained: optional path of a state dict for the feature extractor (see ``load_pretrained``).
        kwargs: passed to the MONAI network (e.g. ``img_size`` for ``vit``, ``conv1_t_stride`` for ResNets).

    Returns:
        The module mapping (B, in_channels, *spatial) to (B, F), and F.

    Raises:
        ValueError: for an unknown name.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {sorted(BACKBONES)}")
    module, features = BACKBONES[name](in_channels=in_channels, spatial_dims=spatial_dims, **kwargs)
    if pretrained is not None:
        load_pretrained(module, pretrained)
    return module, features
