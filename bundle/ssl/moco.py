"""MoCo v2: momentum contrast pre-training of a registry backbone on unlabelled chest radiographs.

Two independently augmented views of each image go through a query encoder (backbone + MLP projection, trained) and
a key encoder (a copy updated as an exponential moving average of the query encoder, never by gradients). Each query
must pick its own key out of that key and a queue of keys from earlier batches (the negatives): the InfoNCE loss is
the cross-entropy of the temperature-scaled cosine similarities with the positive in column 0. The queue decouples
the number of negatives from the batch size, which is what makes contrastive learning work at CPU-sized batches.

Single-process shuffle BN: MoCo shuffles the key batch across GPUs so that batch-norm statistics cannot leak which
key belongs to which query. Here the query and key batches are each split into ``shuffle_bn_splits`` chunks that are
normalised separately, with the keys shuffled before splitting, which gives the same property on one device.

After pre-training only the query backbone is kept (``bundle.ssl.export.BackboneExport``): its state dict has the
registry backbone's own keys, so ``MultiHeadNet(pretrained=...)`` and every other network of the bundle load it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.engines import PrepareBatch
from monai.transforms import MapTransform, Randomizable
from torch import nn

from bundle.networks.backbones import build_backbone

__all__ = [
    "InfoNCELoss",
    "MoCo",
    "MoCoQueue",
    "RandViewsd",
    "TwoViewPrepareBatch",
    "contrastive_logits",
    "momentum_update",
]


class RandViewsd(Randomizable, MapTransform):
    """Write several independently augmented views of one image, e.g. MoCo's query and key views.

    MONAI's dictionary transforms draw their random parameters once per call and apply them to every key, so one
    transform over two keys gives two *identical* views. This wrapper runs ``transform`` once per view instead, on a
    copy of the source image, so each view gets its own draw.

    Args:
        keys: the source image key (one key).
        transform: a dictionary transform (typically a ``Compose`` of random MONAI transforms) acting on ``keys``.
        names: the keys the views are written to; the source key may be one of them (it is read first).
        allow_missing_keys: don't raise an exception if the source key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        transform: Callable[[dict], dict],
        names: Sequence[str] = ("image", "image_2"),
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"RandViewsd reads one source key, got {self.keys}")
        self.transform = transform
        self.names = tuple(names)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandViewsd:
        """Seed the wrapped transform too, so that ``set_determinism`` and DataLoader workers reach it."""
        super().set_random_state(seed, state)
        if hasattr(self.transform, "set_random_state"):
            self.transform.set_random_state(seed=int(self.R.randint(np.iinfo(np.int32).max)))
        return self

    def randomize(self, data: Any = None) -> None:
        """The draws happen inside ``transform``, once per view."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with one augmented view of the source image under each name."""
        d = dict(data)
        for key in self.key_iterator(d):
            source = d[key]
            for name in self.names:
                d[name] = self.transform({key: copy.deepcopy(source)})[key]
        return d


class MoCoQueue(nn.Module):
    """A fixed-size ring buffer of L2-normalised keys: MoCo's negatives.

    Keys are written at ``pointer`` and the pointer advances modulo ``size``, so the oldest keys are replaced first
    and a batch that reaches the end wraps around to the start. Both are buffers, so a resumed run continues with the
    same negatives.

    Args:
        dim: key dimension.
        size: number of keys held.
    """

    keys: torch.Tensor
    pointer: torch.Tensor

    def __init__(self, dim: int, size: int) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"queue size and key dimension must be positive, got size={size}, dim={dim}")
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        """Number of keys held (constant)."""
        return self.keys.shape[0]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Replace the oldest keys by ``keys`` (B, dim); when B > size only the last ``size`` keys are kept."""
        keys = keys.detach()[-self.size :]
        index = (self.pointer + torch.arange(keys.shape[0], device=keys.device)) % self.size
        self.keys[index] = keys.to(self.keys.dtype)
        self.pointer.fill_(int((self.pointer + keys.shape[0]) % self.size))


@torch.no_grad()
def momentum_update(key_module: nn.Module, query_module: nn.Module, momentum: float) -> None:
    """``key = momentum * key + (1 - momentum) * query`` for every parameter (in place, without gradients).

    Buffers (batch-norm running statistics) are not averaged: the key encoder's own forward passes keep them, as in
    MoCo.

    Raises:
        ValueError: when ``momentum`` is outside [0, 1] or the modules' parameters differ in number.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    key_params, query_params = list(key_module.parameters()), list(query_module.parameters())
    if len(key_params) != len(query_params):
        raise ValueError("the key and query encoders must have the same parameters")
    for key, query in zip(key_params, query_params, strict=True):
        key.mul_(momentum).add_(query.detach(), alpha=1.0 - momentum)


def contrastive_logits(query: torch.Tensor, key: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """Cosine similarities (B, 1 + K): each query with its own key (column 0), then with the K negatives.

    Args:
        query: (B, D) L2-normalised query embeddings.
        key: (B, D) L2-normalised key embeddings, row i the positive of query i.
        negatives: (K, D) L2-normalised negative keys (the queue).
    """
    positive = (query * key).sum(dim=1, keepdim=True)
    return torch.cat([positive, query @ negatives.t()], dim=1)


class InfoNCELoss(nn.Module):
    """InfoNCE: cross-entropy of similarities / temperature, the positive being column 0.

    ``L = -mean_i log( exp(s_i0 / t) / sum_j exp(s_ij / t) )``.

    Args:
        temperature: the softmax temperature (0.2 in MoCo v2).
    """

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(self, logits: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of ``logits`` (B, 1 + K) from :func:`contrastive_logits`; ``target`` is ignored (always column 0)."""
        positives = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits / self.temperature, positives)


def _projection_head(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    """MoCo v2's MLP projection: Linear - ReLU - Linear."""
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_features))


class MoCo(nn.Module):
    """MoCo v2 around a registry backbone: ``forward(query_view, key_view) -> similarities (B, 1 + queue_size)``.

    In training mode a forward pass also updates the key encoder (momentum) before encoding the keys and, after
    computing the similarities, enqueues the new keys. In eval mode it only computes the similarities.

    Args:
        backbone: a name in ``bundle.networks.BACKBONES``.
        in_channels: image channels (3 so that the weights fit the bundle's other networks).
        spatial_dims: 2 or 3.
        backbone_kwargs: extra arguments of the registered backbone.
        projection_dim: embedding dimension (128 in MoCo v2).
        hidden_dim: projection MLP width; defaults to the backbone's feature width, as in MoCo v2.
        queue_size: number of negatives; keep it well below the number of training images, or an image's own older
            key comes back as one of its negatives.
        momentum: key encoder momentum (0.999 in MoCo for long runs; lower for short ones).
        shuffle_bn_splits: chunks normalised separately, keys shuffled across them (1 turns it off).

    Attributes:
        backbone: the query backbone, the one whose weights are exported.
    """

    def __init__(
        self,
        backbone: str,
        in_channels: int = 3,
        spatial_dims: int = 2,
        backbone_kwargs: Mapping[str, Any] | None = None,
        projection_dim: int = 128,
        hidden_dim: int | None = None,
        queue_size: int = 256,
        momentum: float = 0.99,
        shuffle_bn_splits: int = 2,
    ) -> None:
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        if shuffle_bn_splits < 1:
            raise ValueError(f"shuffle_bn_splits must be >= 1, got {shuffle_bn_splits}")
        self.backbone, features = build_backbone(
            backbone, in_channels=in_channels, spatial_dims=spatial_dims, **(backbone_kwargs or {})
        )
        self.projection = _projection_head(features, hidden_dim or features, projection_dim)
        self.key_backbone = copy.deepcopy(self.backbone)
        self.key_projection = copy.deepcopy(self.projection)
        for parameter in [*self.key_backbone.parameters(), *self.key_projection.parameters()]:
            parameter.requires_grad_(False)
        self.queue = MoCoQueue(projection_dim, queue_size)
        self.momentum = momentum
        self.shuffle_bn_splits = shuffle_bn_splits

    def _embed(self, backbone: nn.Module, projection: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings, each chunk of the batch normalised (batch norm) on its own."""
        chunks = images.chunk(min(self.shuffle_bn_splits, images.shape[0]))
        return F.normalize(torch.cat([projection(backbone(chunk)) for chunk in chunks]), dim=1)

    def forward(self, query_view: torch.Tensor, key_view: torch.Tensor) -> torch.Tensor:
        """Cosine similarities of each query with its key (column 0) and with the queue (columns 1..K)."""
        query = self._embed(self.backbone, self.projection, query_view)
        with torch.no_grad():
            if self.training:
                momentum_update(self.key_backbone, self.backbone, self.momentum)
                momentum_update(self.key_projection, self.projection, self.momentum)
            order = torch.randperm(key_view.shape[0], device=key_view.device)
            shuffled = self._embed(self.key_backbone, self.key_projection, key_view[order])
            key = torch.empty_like(shuffled)
            key[order] = shuffled
        logits = contrastive_logits(query, key, self.queue.keys.clone())
        if self.training:
            self.queue.enqueue(key)
        return logits


class TwoViewPrepareBatch(PrepareBatch):
    """Batch preparation for MoCo: the query view is the network input, the key view its extra argument.

    ``SupervisedTrainer`` then calls ``network(query_view, key_view)`` and ``loss(similarities, target)``; the
    target is the positive's column (0) for every sample, which ``InfoNCELoss`` implies anyway.

    Args:
        keys: the batch keys of the query and the key view.
    """

    def __init__(self, keys: Sequence[str] = ("image", "image_2")) -> None:
        if len(keys) != 2:
            raise ValueError(f"two view keys are needed, got {list(keys)}")
        self.keys = tuple(keys)

    def __call__(
        self,
        batchdata: dict[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor], dict]:
        """``(query_view, zeros(B), (key_view,), {})`` on ``device``."""
        query, key = (batchdata[k].to(device=device, non_blocking=non_blocking, **kwargs) for k in self.keys)
        target = torch.zeros(query.shape[0], dtype=torch.long, device=query.device)
        return query, target, (key,), {}
