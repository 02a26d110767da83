"""What a DistributedDataParallel run of the bundle needs beyond torch's DDP itself.

``configs/multi_gpu_train.yaml`` wraps the plain network in ``DistributedDataParallel`` for the trainer and evaluator
only; everything that saves, exports or averages weights keeps using the plain module, so checkpoints have the same
keys (no ``module.`` prefix) whether they come from one process or many. The helpers here are the few pieces that
configuration alone cannot express:

- :func:`unwrap_network`: the plain module behind a DDP and/or ``torch.compile`` wrapper;
- :func:`per_rank_batch_size`: ``batch_size`` stays the *global* batch (the paper's 128) under DDP;
- :class:`GradientAverager`: parameters that train but live outside the DDP module (the learnable task weights of
  the ``uncertainty`` weighting live in the loss) get their gradients averaged over ranks like DDP does for the
  network, so every rank applies the same update.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from ignite.engine import Engine
from monai.engines.utils import IterationEvents
from torch import nn

__all__ = ["GradientAverager", "per_rank_batch_size", "unwrap_network"]


def unwrap_network(network: nn.Module) -> nn.Module:
    """The module whose ``state_dict`` keys are the network's own, without the ``module.``/``_orig_mod.`` prefixes.

    Unwraps any nesting of ``DistributedDataParallel``/``DataParallel`` (``.module``) and ``torch.compile``
    (``._orig_mod``), so checkpoints load into a plain network for evaluation, inference and export.
    """
    while True:
        if isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            network = network.module
        elif isinstance(getattr(network, "_orig_mod", None), nn.Module):
            network = network._orig_mod
        else:
            return network


def per_rank_batch_size(global_batch_size: int, world_size: int) -> int:
    """Per-process batch for a global batch split over ``world_size`` processes.

    Keeping ``batch_size`` global means the learning rate and the per-step sample mix stay those of a one-process run
    whatever the number of GPUs.

    Raises:
        ValueError: when the global batch does not split evenly (ranks would see different batch sizes, so the
            gradient average would no longer be the gradient of the global batch).
    """
    if world_size < 1 or global_batch_size < world_size or global_batch_size % world_size:
        raise ValueError(
            f"batch_size {global_batch_size} (global) must be a positive multiple of the {world_size} processes"
        )
    return global_batch_size // world_size


class GradientAverager:
    """Averages over ranks the gradients of parameters that are trained but not inside the DDP module.

    Attached to a MONAI ``SupervisedTrainer``, it runs after every backward pass and before the optimiser step
    (``IterationEvents.BACKWARD_COMPLETED``). With one process, or a module without parameters (the default fixed
    weighting), it does nothing. Gradients that are ``None`` on this rank count as zeros, so every rank joins the same
    collective calls.

    Args:
        module: the module whose parameters to average (e.g. the multi-dataset loss).
    """

    def __init__(self, module: nn.Module) -> None:
        self.parameters = [p for p in module.parameters() if p.requires_grad]

    def attach(self, engine: Engine) -> None:
        if self.parameters:
            engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine | None = None) -> None:
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        for parameter in self.parameters:
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
            dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)
            parameter.grad /= dist.get_world_size()
