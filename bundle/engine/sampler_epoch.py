"""Tells the multi-dataset sampler which epoch starts, so every epoch has its own seeded order."""

from __future__ import annotations

from typing import Protocol

from ignite.engine import Engine, Events


class _EpochAware(Protocol):
    def set_epoch(self, epoch: int) -> None: ...


class SamplerEpochSetter:
    """Calls ``sampler.set_epoch(epoch)`` at every epoch start.

    MONAI's workflows do this only for ``DistributedSampler``; the bundle's ``MultiDatasetSampler`` needs it too,
    also in a single process, for per-epoch shuffles that are reproducible and identical after a resume.
    """

    def __init__(self, sampler: _EpochAware) -> None:
        self.sampler = sampler

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        self.sampler.set_epoch(engine.state.epoch)
