"""``MultiDatasetSampler``: the order in which the images of several datasets are drawn into training batches.

MDMT trains one network on datasets that label different tasks. The paper concatenates the training sets and
shuffles them (``proportional``: each batch a random mixture, in proportion to the set sizes on average); the
``fixed_ratio`` policy gives every batch the same number of items of each dataset, so that each task's loss has the
same number of samples in every step (and on every rank under DDP, where a mean over each task's own samples then
averages exactly like one process).

The order of an epoch is a function of ``seed + epoch`` only, so it is reproducible, the same on every DDP rank before
each takes its part, and the same after resuming from a checkpoint (``state_dict``). Each pass through the sampler
moves it to the next epoch, so a plain ``DataLoader`` reshuffles every epoch; ``set_epoch`` (called by
``bundle.engine.sampler_epoch.SamplerEpochSetter``) pins the epoch explicitly.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

MODES: tuple[str, ...] = ("proportional", "fixed_ratio")


class MultiDatasetSampler(Sampler[int]):
    """Indices of a concatenation of datasets, by proportional shuffle or a fixed mix per batch; rank-aware.

    Args:
        dataset_ids: the dataset of each item of the concatenated dataset (strings, or a 1-D tensor of ids).
        batch_size: items per batch (per rank under DDP).
        mode: ``"proportional"``: one shuffle of the whole concatenation per epoch, split over the ranks as
            ``torch.utils.data.DistributedSampler`` does (padded with the epoch's first items, or cut with
            ``drop_last``). ``"fixed_ratio"``: every batch holds ``counts[d]`` items of dataset ``d``; each dataset is
            drawn from its own reshuffled passes (a small one repeats), and an epoch lasts until the dataset needing
            most batches has been seen once.
        ratios: ``fixed_ratio`` only: dataset -> relative share of each batch (default: the dataset sizes); datasets
            left out are not drawn.
        seed: the base seed; epoch ``e`` uses ``seed + e``.
        num_replicas: the number of DDP ranks.
        rank: this process's rank.
        shuffle: ``False`` keeps the items in order (evaluation, tests).
        drop_last: ``proportional`` only: cut the epoch to a multiple of ``num_replicas`` instead of padding it.
        num_samples: items per epoch and rank (``fixed_ratio``: rounded up to whole batches), drawn from as many
            reshuffled passes as needed; default one pass.

    Raises:
        ValueError: an unknown mode, ratios without ``fixed_ratio``, a ratio for an unknown dataset or not > 0, a batch
            too small to hold one item of every dataset, or a rank outside ``0..num_replicas-1``.
    """

    def __init__(
        self,
        dataset_ids: Sequence[Hashable] | torch.Tensor,
        batch_size: int,
        mode: str = "proportional",
        ratios: Mapping[Hashable, float] | None = None,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        num_samples: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if ratios is not None and mode != "fixed_ratio":
            raise ValueError(f"ratios {dict(ratios)} apply only to mode='fixed_ratio', not {mode!r}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in 0..{num_replicas - 1} (num_replicas={num_replicas})")
        if batch_size < 1 or (num_samples is not None and num_samples < 1):
            raise ValueError(f"batch_size ({batch_size}) and num_samples ({num_samples}) must be positive")
        ids = dataset_ids.tolist() if isinstance(dataset_ids, torch.Tensor) else list(dataset_ids)
        if not ids:
            raise ValueError("dataset_ids is empty: there is nothing to sample")
        self.batch_size = batch_size
        self.mode = mode
        self.seed = seed
        self.epoch = 0
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.num_samples = num_samples
        self._by_dataset: dict[Hashable, np.ndarray] = {
            dataset: np.flatnonzero([item == dataset for item in ids]) for dataset in dict.fromkeys(ids)
        }
        self._size = len(ids)
        self.counts: dict[Hashable, int] | None = self._counts(ratios) if mode == "fixed_ratio" else None

    def _counts(self, ratios: Mapping[Hashable, float] | None) -> dict[Hashable, int]:
        """Items of each dataset per batch: the ratios scaled to ``batch_size``, rounded by largest remainder."""
        if ratios is None:
            ratios = {dataset: len(indices) for dataset, indices in self._by_dataset.items()}
        unknown = [dataset for dataset in ratios if dataset not in self._by_dataset]
        if unknown:
            raise ValueError(f"ratios name {unknown}, not among the known datasets {list(self._by_dataset)}")
        if any(not ratio > 0 for ratio in ratios.values()):
            raise ValueError(f"every ratio must be > 0, got {dict(ratios)}")
        total = sum(ratios.values())
        exact = {dataset: self.batch_size * ratio / total for dataset, ratio in ratios.items()}
        counts = {dataset: math.floor(share) for dataset, share in exact.items()}
        by_remainder = sorted(exact, key=lambda dataset: counts[dataset] - exact[dataset])
        for dataset in by_remainder[: self.batch_size - sum(counts.values())]:
            counts[dataset] += 1
        if min(counts.values()) == 0:
            raise ValueError(
                f"batch_size {self.batch_size} is too small for the ratios {dict(ratios)}: "
                f"some dataset would get no item per batch ({counts})"
            )
        return counts

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass draw the order of ``epoch``."""
        self.epoch = epoch

    def state_dict(self) -> dict[str, Any]:
        """The epoch the next pass draws and the seed: all that is needed to resume the same orders."""
        return {"epoch": self.epoch, "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict`."""
        self.epoch = int(state["epoch"])
        self.seed = int(state["seed"])

    def __len__(self) -> int:
        """Items per epoch on this rank."""
        if self.counts is not None:
            return self._num_batches() * self.batch_size
        if self.num_samples is not None:
            return self.num_samples
        if self.drop_last:
            return self._size // self.num_replicas
        return -(-self._size // self.num_replicas)

    def __iter__(self) -> Iterator[int]:
        """This rank's indices for the current epoch; the sampler then moves to the next epoch."""
        rng = np.random.default_rng(self.seed + self.epoch)
        order = self._fixed_ratio(rng) if self.counts is not None else self._proportional(rng)
        self.epoch += 1
        return iter(order)

    def _pass(self, rng: np.random.Generator, items: np.ndarray) -> np.ndarray:
        """One pass over ``items``: shuffled, or in order without ``shuffle``."""
        return rng.permutation(items) if self.shuffle else items

    def _proportional(self, rng: np.random.Generator) -> list[int]:
        """One global order of the concatenation, then every ``num_replicas``-th item from ``rank``."""
        everything = np.arange(self._size)
        if self.num_samples is not None:
            total = self.num_samples * self.num_replicas
            passes = [self._pass(rng, everything) for _ in range(-(-total // self._size))]
            order = np.concatenate(passes)[:total]
        else:
            order = self._pass(rng, everything)
            total = len(self) * self.num_replicas
            order = np.resize(order, total)  # padded with the epoch's first items, or cut (drop_last)
        return order[self.rank : total : self.num_replicas].tolist()

    def _num_batches(self) -> int:
        """Batches per epoch (the same on every rank)."""
        assert self.counts is not None
        if self.num_samples is not None:
            return -(-self.num_samples // self.batch_size)
        return max(
            -(-len(self._by_dataset[dataset]) // (count * self.num_replicas)) for dataset, count in self.counts.items()
        )

    def _fixed_ratio(self, rng: np.random.Generator) -> list[int]:
        """Global batches of ``counts[d] * num_replicas`` items of each dataset; this rank takes its block of each."""
        assert self.counts is not None
        num_batches = self._num_batches()
        blocks = {
            dataset: self._stream(rng, self._by_dataset[dataset], count * self.num_replicas, num_batches)
            for dataset, count in self.counts.items()
        }
        order: list[int] = []
        for batch in range(num_batches):
            for dataset, count in self.counts.items():
                order += blocks[dataset][batch][self.rank * count : (self.rank + 1) * count]
        return order

    def _stream(self, rng: np.random.Generator, items: np.ndarray, per_batch: int, num_batches: int) -> list[list[int]]:
        """``num_batches`` global blocks of ``per_batch`` items from consecutive passes over ``items``.

        When a pass ends inside a block, the next pass starts with the items the block does not hold yet, so a block
        (and with it the ranks' shares of a global batch) repeats an item only when the dataset is smaller than it.
        """
        blocks: list[list[int]] = []
        remaining: list[int] = []
        for _ in range(num_batches):
            block: list[int] = []
            while len(block) < per_batch:
                if not remaining:
                    drawn, held = self._pass(rng, items).tolist(), set(block)
                    remaining = [item for item in drawn if item not in held] + [item for item in drawn if item in held]
                taken = remaining[: per_batch - len(block)]
                remaining = remaining[len(taken) :]
                block += taken
            blocks.append(block)
        return blocks
