"""Crash-safe checkpoints: the best model for export and the whole training state for resuming."""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.transforms import Randomizable, Transform

from bundle.atomic import write_atomic
from bundle.engine.distributed import unwrap_network

logger = logging.getLogger(__name__)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, flushed to disk, then renamed over ``path``.

    A kill at any moment leaves either the previous complete file or the new complete file, never a partial one
    (ignite's and MONAI's savers delete the previous file before writing a same-named new one).
    """
    write_atomic(path, lambda f: torch.save(obj, f), binary=True)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint with ``weights_only=True``: tensors and plain containers only, never arbitrary pickles.

    Raises:
        ValueError: naming the file, when it holds objects that weights-only loading refuses (a crafted pickle).
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # torch raises UnpicklingError / RuntimeError for refused globals and corrupt files
        raise ValueError(f"{path}: refused to load (not a weights-only checkpoint or corrupt): {e}") from e


def _pack_numpy_state(state: tuple) -> list:
    """A numpy ``RandomState`` state with its key array as a tensor, so that weights-only loading accepts it."""
    name, keys, *rest = state
    return [name, torch.from_numpy(keys.astype(np.int64)), *rest]


def _unpack_numpy_state(packed: Sequence) -> tuple:
    """The inverse of :func:`_pack_numpy_state`."""
    name, keys, *rest = packed
    return (name, keys.numpy().astype(np.uint32), *rest)


def _rng_state() -> dict:
    return {
        "torch": torch.get_rng_state(),
        # the current device's generator (dropout on GPU draws from it); under DDP, rank 0's
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "numpy": _pack_numpy_state(np.random.get_state()),
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
    }


def _set_rng_state(state: Mapping) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    np.random.set_state(_unpack_numpy_state(state["numpy"]))
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))


def _transform_generators(engine: Engine) -> list[np.random.RandomState]:
    """The generators of the random transforms of the trainer's dataset, in a fixed order.

    MONAI's random transforms draw from their own ``RandomState`` (``R``), not from numpy's global one. With
    ``num_workers=0`` they go on drawing from it epoch after epoch in the main process, so a resumed run that did
    not restore them would augment differently from an uninterrupted one. (With workers, every epoch reseeds the
    workers' copies from torch's generator, which is restored with the others.) Wrappers hold inner random transforms
    (``RandAffined`` -> ``RandAffine`` -> ``RandAffineGrid``), so the search follows the attributes of every
    transform, and lists and tuples, as MONAI's own ``set_rnd`` does.
    """
    found: list[np.random.RandomState] = []
    seen: set[int] = set()

    def visit(obj: Any) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, (list, tuple)):
            for item in obj:
                visit(item)
        elif isinstance(obj, (Transform, Randomizable)):
            if isinstance(obj, Randomizable):
                found.append(obj.R)
            for value in vars(obj).values():
                visit(value)

    visit(getattr(getattr(engine.state.dataloader, "dataset", None), "transform", None))
    return found


def _set_transform_states(engine: Engine, states: Sequence | None) -> None:
    """Restore the generators found by :func:`_transform_generators` (in the same order) from a checkpoint."""
    if states is None:  # a checkpoint written before the transforms' generators were saved
        return
    generators = _transform_generators(engine)
    if len(generators) != len(states):
        logger.warning(
            f"resume: the training transforms have {len(generators)} random generators, the checkpoint {len(states)}: "
            "not restored, so augmentation will differ from an uninterrupted run"
        )
        return
    for generator, packed in zip(generators, states, strict=True):
        generator.set_state(_unpack_numpy_state(packed))


class TrainingCheckpointer:
    """Keeps ``model.pt`` (best network weights) and ``checkpoint_last.pt`` (everything needed to resume).

    At the end of every epoch, after validation: if the evaluator's key metric improved (and the warm-up epochs are
    over), the network's state dict is written to ``best_path``; then the state dicts of ``save_dict``, the trainer's
    epoch/iteration, the best score and the RNG states (torch, CUDA, numpy, Python and the training transforms' own
    generators) are written to ``last_path``. Both writes are atomic.
    With ``resume=True`` the last checkpoint, when present, is restored when the trainer starts, so a run killed at
    any point continues from its last complete epoch to the planned ``max_epochs``.

    Under DDP only rank 0 writes (every rank holds the same weights and, metrics being gathered over ranks, the same
    scores), while every rank restores, so all resume at the same epoch with the same optimiser state. The network is
    unwrapped from DDP / ``torch.compile``, so the files hold the plain network's keys (no ``module.`` prefix).

    Args:
        network: the network whose weights ``best_path`` holds (a DDP or compiled wrapper is unwrapped).
        save_dict: objects with ``state_dict``/``load_state_dict`` to resume (optimizer, scheduler, sampler, ...).
        evaluator: the validation engine whose ``state.metrics[key_metric]`` selects the best model; ``None`` keeps
            the last epoch's weights as the best.
        key_metric: name of the metric in ``evaluator.state.metrics``.
        lower_is_better: ``True`` for losses.
        best_path: where the best network weights go (``models/model.pt``).
        last_path: where the resumable state goes (``models/checkpoint_last.pt``).
        warmup_epochs: epochs during which no model is selected (the paper's warm-up).
        resume: restore ``last_path`` at start when it exists.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        save_dict: Mapping[str, Any],
        evaluator: Engine | None = None,
        key_metric: str = "prognosis_loss",
        lower_is_better: bool = True,
        best_path: str = "models/model.pt",
        last_path: str = "models/checkpoint_last.pt",
        warmup_epochs: int = 0,
        resume: bool = False,
    ) -> None:
        self.network = unwrap_network(network)
        self.save_dict = dict(save_dict)
        self.evaluator = evaluator
        self.key_metric = key_metric
        self.sign = -1.0 if lower_is_better else 1.0
        self.best_path = Path(best_path)
        self.last_path = Path(last_path)
        self.warmup_epochs = warmup_epochs
        self.resume = resume
        self.best_score = -math.inf
        self.best_epoch = 0

    def attach(self, engine: Engine) -> None:
        if self.resume:
            engine.add_event_handler(Events.STARTED, self.restore)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)

    def _score(self) -> float:
        if self.evaluator is None:
            return 0.0
        value = self.evaluator.state.metrics.get(self.key_metric, math.nan)
        return self.sign * float(value)

    def save(self, engine: Engine) -> None:
        epoch = engine.state.epoch
        score = self._score()
        improved = epoch > self.warmup_epochs and not math.isnan(score)
        improved = improved and (score > self.best_score or self.evaluator is None)
        if improved:
            self.best_score, self.best_epoch = score, epoch
        if idist.get_rank() != 0:
            return
        if improved:
            atomic_save(self.network.state_dict(), self.best_path)
            if self.evaluator is None:
                logger.info(f"epoch {epoch}: no validation, saved the latest weights to {self.best_path}")
            else:
                best = f"{self.key_metric}={self.sign * score:.4f}"
                logger.info(f"epoch {epoch}: new best {best}, saved {self.best_path}")
        state = {name: obj.state_dict() for name, obj in self.save_dict.items()}
        state["network"] = self.network.state_dict()
        state["trainer"] = {"epoch": epoch, "iteration": engine.state.iteration}
        state["checkpointer"] = {"best_score": self.best_score, "best_epoch": self.best_epoch}
        state["rng"] = _rng_state()
        state["transforms"] = [_pack_numpy_state(generator.get_state()) for generator in _transform_generators(engine)]
        atomic_save(state, self.last_path)

    def restore(self, engine: Engine) -> None:
        if not self.last_path.exists():
            logger.info(f"resume: no {self.last_path} yet, starting from scratch")
            return
        state = load_checkpoint(self.last_path)
        self.network.load_state_dict(state["network"])
        for name, obj in self.save_dict.items():
            obj.load_state_dict(state[name])
        engine.state.epoch = state["trainer"]["epoch"]
        engine.state.iteration = state["trainer"]["iteration"]
        self.best_score = state["checkpointer"]["best_score"]
        self.best_epoch = state["checkpointer"]["best_epoch"]
        _set_rng_state(state["rng"])
        _set_transform_states(engine, state.get("transforms"))
        logger.info(f"resumed from {self.last_path} at epoch {engine.state.epoch} (best epoch {self.best_epoch})")


class WeightsLoader:
    """Loads network weights (``models/model.pt``) with weights-only loading when the engine starts.

    Used by evaluation in place of MONAI's ``CheckpointLoader`` so that every checkpoint the bundle reads goes
    through :func:`load_checkpoint` (no arbitrary unpickling), with an error naming the file when it is missing.
    """

    def __init__(self, path: str, network: torch.nn.Module, strict: bool = True) -> None:
        self.path = Path(path)
        self.network = network
        self.strict = strict

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine | None = None) -> None:
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no trained weights; run training first or set --checkpoint")
        self.network.load_state_dict(load_checkpoint(self.path), strict=self.strict)
        logger.info(f"loaded weights from {self.path}")
