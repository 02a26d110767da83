"""Initial weights of a training strategy: fine-tuning from a single-task model, or MDMT from two averaged ones."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

from bundle.engine.checkpoint import load_checkpoint
from bundle.networks.multihead import MultiHeadNet, average_backbones, load_backbone_state, load_head_state

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def initialise_network(
    network: MultiHeadNet,
    checkpoint: PathLike | None = None,
    average: Sequence[PathLike] | None = None,
    beta: float = 0.5,
    heads: Mapping[str, PathLike] | None = None,
) -> MultiHeadNet:
    """Load the strategy's starting weights into ``network`` (all loads are weights-only and strict).

    - FT: ``checkpoint`` is the STL-severity model; every weight (backbone and heads) starts from it.
    - MDMT with averaged initialisation (the paper's beta = 0.5): ``average`` names the two STL models; the backbone
      starts as ``beta * first + (1 - beta) * second``, and ``heads`` maps a task to the model whose head it takes
      (each task's head from the single-task model trained on it).

    Args:
        network: the freshly built network.
        checkpoint: a full state dict to start from.
        average: two state dicts whose backbones are averaged.
        beta: weight of the first of ``average``.
        heads: task name -> state dict providing that task's head.

    Returns:
        ``network``, initialised in place.

    Raises:
        ValueError: when both ``checkpoint`` and ``average`` are given, ``average`` does not name two files, or a
            state dict does not match the network (the message names the file).
    """
    if checkpoint and average:
        raise ValueError("give either init_checkpoint (FT) or init_average (MDMT), not both")
    if checkpoint:
        network.load_state_dict(load_checkpoint(checkpoint))
        logger.info(f"initialised every weight from {checkpoint}")
    if average:
        if len(average) != 2:
            raise ValueError(f"init_average needs two checkpoints, got {list(average)}")
        first, second = (load_checkpoint(path) for path in average)
        load_backbone_state(network, average_backbones(first, second, beta))
        logger.info(f"initialised the backbone as {beta} x {average[0]} + {1 - beta} x {average[1]}")
    for task, path in (heads or {}).items():
        load_head_state(network, task, load_checkpoint(path))
        logger.info(f"initialised head {task!r} from {path}")
    return network
