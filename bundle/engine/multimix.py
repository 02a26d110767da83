"""MultiMix training and evaluation iterations over batches made of several streams.

Every MultiMix training step sees one batch from each of four streams: labeled and unlabeled classification images,
labeled and unlabeled segmentation images (MultiMix: 10 of each). The streams are one ``ConcatDataset`` sampled by the
core ``MultiDatasetSampler`` in ``fixed_ratio`` mode with equal shares, so each DataLoader batch holds
``batch_size`` items of every stream, small streams are reshuffled and repeated, the epoch ends when the largest
stream has been seen once, and the order is seeded and resumable. ``collate_streams`` then collates each stream on
its own (their items carry different keys), giving ``{stream: batch}``.

``MultiMixTrainIteration`` and ``MultiMixEvalIteration`` are the ``iteration_update`` of MONAI's
``SupervisedTrainer`` and ``SupervisedEvaluator``, so the engines, their handlers (validation, checkpoints, LR
schedule, logging) and the config layout stay the stock ones. One forward pass covers the weak views of every stream
and a second one the strong views of the unlabeled streams; ``MultiMixLoss`` takes the per-stream outputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.data import DataLoader, list_data_collate
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.networks.utils import eval_mode
from torch.utils.data import ConcatDataset, Dataset

from bundle.data.multimix_data import STREAMS
from bundle.data.sampler import MultiDatasetSampler
from bundle.networks.multimix import CLASS_LOGITS, MASK_LOGITS

__all__ = ["MultiMixEvalIteration", "MultiMixTrainIteration", "collate_streams", "stream_loader"]

STREAM_KEY = "stream"
STRONG = "image_strong"


def collate_streams(items: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Collate a list of stream-tagged items into ``{stream: batch}``, each stream collated on its own.

    Raises:
        KeyError: when an item has no ``stream`` tag.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        groups.setdefault(item[STREAM_KEY], []).append({k: v for k, v in item.items() if k != STREAM_KEY})
    return {stream: list_data_collate(group) for stream, group in groups.items()}


def stream_loader(
    datasets: Mapping[str, Dataset],
    batch_size: int,
    seed: int = 0,
    num_batches: int | None = None,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader whose every batch holds ``batch_size`` items of each non-empty stream, as ``{stream: batch}``.

    Args:
        datasets: stream name -> dataset whose items carry that ``stream`` tag; empty datasets are left out (e.g. no
            unlabeled stream when every label is used).
        batch_size: items per stream and batch (MultiMix: 10).
        seed: seed of the sampler (epoch ``e`` uses ``seed + e``).
        num_batches: batches per epoch (default: until the largest stream has been seen once).
        num_workers: DataLoader workers.

    Returns:
        MONAI's DataLoader (it reseeds the random transforms of every worker); its ``sampler`` (a
        ``MultiDatasetSampler``) has ``state_dict`` for resuming.

    Raises:
        ValueError: when every dataset is empty.
    """
    used = {name: dataset for name, dataset in datasets.items() if len(dataset) > 0}
    if not used:
        raise ValueError(f"every stream is empty: {list(datasets)}")
    ids = [name for name, dataset in used.items() for _ in range(len(dataset))]
    total = batch_size * len(used)
    sampler = MultiDatasetSampler(
        ids,
        batch_size=total,
        mode="fixed_ratio",
        ratios=dict.fromkeys(used, 1.0),
        num_samples=None if num_batches is None else num_batches * total,
        seed=seed,
    )
    return DataLoader(
        ConcatDataset(list(used.values())),
        batch_size=total,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_streams,
    )


def _to_device(batch: Mapping[str, Any], device: torch.device | str, non_blocking: bool) -> dict[str, Any]:
    """Tensors of a stream's batch on ``device``, as plain tensors: MetaTensor bookkeeping on every network operation
    costs more than the operations themselves at MultiMix's image sizes."""
    return {
        k: v.as_subclass(torch.Tensor).to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


def _forward_streams(
    network: torch.nn.Module, images: Mapping[str, torch.Tensor]
) -> dict[str, dict[str, torch.Tensor]]:
    """One forward pass over the images of several streams, its outputs split back per stream."""
    if not images:
        return {}
    output = network(torch.cat(list(images.values())))
    sizes = [len(image) for image in images.values()]
    parts = {key: value.split(sizes) for key, value in output.items()}
    return {stream: {key: parts[key][i] for key in parts} for i, stream in enumerate(images)}


class MultiMixTrainIteration:
    """``iteration_update`` of a ``SupervisedTrainer`` whose ``loss_function`` is a ``MultiMixLoss``.

    Per step: weak views of every stream in one forward pass, strong views of the unlabeled streams in another, the
    loss terms of the streams present, one optimiser step. Returns the loss and every term's value (for
    ``StatsHandler`` and TensorBoard).
    """

    def __call__(self, engine: SupervisedTrainer, batchdata: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        unknown = set(batchdata) - set(STREAMS)
        if unknown:
            raise ValueError(f"unknown streams {sorted(unknown)}; MultiMix streams are {STREAMS}")
        streams = {name: _to_device(b, engine.state.device, engine.non_blocking) for name, b in batchdata.items()}
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        weak = _forward_streams(engine.network, {name: b["image"] for name, b in streams.items()})
        strong = _forward_streams(engine.network, {name: b[STRONG] for name, b in streams.items() if STRONG in b})
        inputs: dict[str, torch.Tensor] = {}
        if "cls_labeled" in weak:
            inputs |= {"class_logits": weak["cls_labeled"][CLASS_LOGITS], "labels": streams["cls_labeled"]["label"]}
        if "seg_labeled" in weak:
            inputs |= {"mask_logits": weak["seg_labeled"][MASK_LOGITS], "masks": streams["seg_labeled"]["mask"]}
        if "cls_unlabeled" in strong:
            inputs |= {
                "weak_class_logits": weak["cls_unlabeled"][CLASS_LOGITS],
                "strong_class_logits": strong["cls_unlabeled"][CLASS_LOGITS],
            }
        if "seg_unlabeled" in strong:
            inputs |= {
                "weak_mask_logits": weak["seg_unlabeled"][MASK_LOGITS],
                "strong_mask_logits": strong["seg_unlabeled"][MASK_LOGITS],
            }
        loss = engine.loss_function(**inputs)
        loss.backward()
        engine.optimizer.step()
        return {"loss": loss.detach(), **engine.loss_function.last_terms}


class MultiMixEvalIteration:
    """``iteration_update`` of a ``SupervisedEvaluator`` on labeled classification and segmentation records.

    Runs the network in eval mode under ``torch.no_grad()`` (the saliency bridge enables gradients for itself) and
    returns ``class_logits`` / ``label`` for the classification records and ``mask_logits`` / ``mask`` for the
    segmentation records of the batch, each only when the batch holds such records (read by ``MultiMixMetrics``).
    """

    def __call__(self, engine: SupervisedEvaluator, batchdata: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        streams = {name: _to_device(b, engine.state.device, engine.non_blocking) for name, b in batchdata.items()}
        labeled = {name: b["image"] for name, b in streams.items() if name in ("cls_labeled", "seg_labeled")}
        with eval_mode(engine.network):
            outputs = _forward_streams(engine.network, labeled)
        result: dict[str, Any] = {}
        if "cls_labeled" in outputs:
            result |= {CLASS_LOGITS: outputs["cls_labeled"][CLASS_LOGITS], "label": streams["cls_labeled"]["label"]}
        if "seg_labeled" in outputs:
            result |= {MASK_LOGITS: outputs["seg_labeled"][MASK_LOGITS], "mask": streams["seg_labeled"]["mask"]}
        return result
