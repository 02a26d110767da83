"""Loss weighting strategies: how the per-task losses of one batch are combined into the loss that is minimised.

Each strategy is a small ``nn.Module`` with one method, ``forward(losses) -> Tensor`` (as in LibMTL), independent of
the network. ``losses`` maps task name to a scalar loss and holds only the tasks that have at least one labelled
sample in the batch: a task absent from the batch is not weighted at all (``MultiDatasetLoss`` keeps it in the graph
with an exact zero). Configs choose a strategy by name (``weighting: dirichlet`` or
``weighting: {name: dirichlet, draws: 2, alpha: 1.0, seed: 0}``) through ``build_weighting``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from bundle.tasks import TaskSet

__all__ = ["WEIGHTINGS", "DirichletWeighting", "FixedWeighting", "UncertaintyWeighting", "build_weighting"]


def _check(losses: Mapping[str, torch.Tensor], names: Sequence[str]) -> None:
    """Reject an empty dict and names the strategy was not built for (a silently unweighted task is a bug)."""
    if not losses:
        raise ValueError("no task loss to weight")
    unknown = [k for k in losses if k not in names]
    if unknown:
        raise KeyError(f"losses for unknown tasks {unknown}; this weighting knows {list(names)}")


class FixedWeighting(nn.Module):
    """``L = sum_k w_k L_k`` with constant weights (by default each ``Task.weight``; all 1 is the MDMT paper's sum).

    Weights are not renormalised when a task is absent from a batch: the absent task simply adds nothing, exactly like
    the indicator function of the paper.

    Args:
        weights: task name -> weight.
    """

    def __init__(self, weights: Mapping[str, float]) -> None:
        super().__init__()
        self.weights = {k: float(v) for k, v in weights.items()}

    @classmethod
    def from_tasks(cls, tasks: TaskSet, weights: Mapping[str, float] | None = None) -> FixedWeighting:
        """Weights from the config, or each task's declared ``weight``."""
        return cls(weights if weights is not None else {t.name: t.weight for t in tasks})

    def forward(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Weighted sum of the given task losses."""
        _check(losses, list(self.weights))
        return torch.stack([self.weights[k] * v for k, v in losses.items()]).sum()


class DirichletWeighting(nn.Module):
    """COVID-MTL's random-weighted loss: at every call ``w ~ mean of `draws` draws of Dirichlet(alpha, ..., alpha)``.

    With task names, weights are drawn over *all* tasks and renormalised over the tasks present in the batch. Drawing
    over all tasks keeps the random stream independent of which tasks a batch holds (ranks seeded alike draw alike);
    renormalising keeps the loss scale of a batch with one task the same as that of a batch with all of them. (For a
    single draw this is exactly Dirichlet(alpha) over the present tasks, by the aggregation property.)

    In eval mode the weights are their expectation, 1/K renormalised (equal weights), so validation losses are
    deterministic and comparable between epochs.

    Args:
        tasks: task names, or a number of tasks (then every call must pass exactly that many losses, weighted in the
            order given).
        draws: Dirichlet draws averaged per call (2 in COVID-MTL).
        alpha: Dirichlet concentration, the same for every task (1: uniform on the simplex).
        seed: seed of the weights' random generator (None: from the operating system).
    """

    def __init__(self, tasks: Sequence[str] | int, draws: int = 2, alpha: float = 1.0, seed: int | None = None) -> None:
        super().__init__()
        if draws < 1 or alpha <= 0:
            raise ValueError(f"draws must be >= 1 and alpha > 0, got draws={draws}, alpha={alpha}")
        self.names = None if isinstance(tasks, int) else list(tasks)
        self.num_tasks = tasks if isinstance(tasks, int) else len(self.names)
        self.draws = draws
        self.alpha = float(alpha)
        self.rng = np.random.default_rng(seed)

    @classmethod
    def from_tasks(cls, tasks: TaskSet, **kwargs: Any) -> DirichletWeighting:
        """Random weights over the task set's tasks."""
        return cls(tasks.names, **kwargs)

    def get_extra_state(self) -> dict[str, Any]:
        """The generator's state goes into ``state_dict``, so a resumed run draws the weights it would have drawn."""
        return {"bit_generator": self.rng.bit_generator.state}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the generator saved by :meth:`get_extra_state`."""
        self.rng.bit_generator.state = state["bit_generator"]

    def sample(self) -> np.ndarray:
        """One weight vector over all tasks: the mean of ``draws`` Dirichlet draws (sums to 1)."""
        return self.rng.dirichlet([self.alpha] * self.num_tasks, size=self.draws).mean(axis=0)

    def forward(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Randomly weighted sum of the given task losses (weights renormalised over them).

        Raises:
            ValueError: when built with a number of tasks and given a different number of losses.
        """
        if self.names is None:
            if len(losses) != self.num_tasks:
                raise ValueError(
                    f"built for {self.num_tasks} tasks, got {len(losses)}: give task names to weight subsets"
                )
            index = list(range(self.num_tasks))
        else:
            _check(losses, self.names)
            index = [self.names.index(k) for k in losses]
        weights = self.sample()[index] if self.training else np.ones(len(index))
        weights = weights / weights.sum()
        values = torch.stack(list(losses.values()))
        return (torch.as_tensor(weights, dtype=values.dtype, device=values.device) * values).sum()


class UncertaintyWeighting(nn.Module):
    """Homoscedastic uncertainty weighting (Kendall, Gal and Cipolla, CVPR 2018) with learnable ``s_k = log sigma_k^2``.

    ``L = sum_k c_k exp(-s_k) L_k + s_k / 2`` with ``c_k = 1`` for classification (cross-entropy, ``1/sigma^2``) and
    ``c_k = 1/2`` for regression (Gaussian likelihood, ``1/(2 sigma^2)``); ``s_k / 2 = log sigma_k``. The ``s_k`` are
    parameters of this module (``loss.parameters()``), so the optimiser must be given them next to the network's.
    They live in one vector, so a batch without task k still puts ``s_k`` in the graph (zero gradient).

    Args:
        tasks: task names.
        scales: task name -> ``c_k`` (default 1 for every task).
        init: initial ``s_k`` (0: every sigma 1).
    """

    def __init__(self, tasks: Sequence[str], scales: Mapping[str, float] | None = None, init: float = 0.0) -> None:
        super().__init__()
        self.names = list(tasks)
        scales = scales or {}
        self.log_vars = nn.Parameter(torch.full((len(self.names),), float(init)))
        self.register_buffer("scales", torch.tensor([float(scales.get(n, 1.0)) for n in self.names]))

    @classmethod
    def from_tasks(cls, tasks: TaskSet, **kwargs: Any) -> UncertaintyWeighting:
        """Kendall's scale per task kind: 1 for classification, 1/2 for regression."""
        scales = {t.name: 1.0 if t.kind == "classification" else 0.5 for t in tasks}
        return cls(tasks.names, scales=scales, **kwargs)

    def forward(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Uncertainty-weighted sum of the given task losses plus the log-sigma regulariser."""
        _check(losses, self.names)
        index = torch.tensor([self.names.index(k) for k in losses], device=self.log_vars.device)
        s = self.log_vars[index]
        values = torch.stack(list(losses.values()))
        return (self.scales[index] * torch.exp(-s) * values + 0.5 * s).sum()


WEIGHTINGS: dict[str, type[nn.Module]] = {
    "fixed": FixedWeighting,
    "dirichlet": DirichletWeighting,
    "uncertainty": UncertaintyWeighting,
}


def build_weighting(spec: str | Mapping[str, Any] | nn.Module | None, tasks: TaskSet) -> nn.Module:
    """A weighting strategy from its config form.

    Args:
        spec: None (fixed ``Task.weight``), a name in ``WEIGHTINGS``, a mapping ``{name: ..., **arguments}``, or an
            already built module (returned as is).
        tasks: the tasks to weight.

    Raises:
        ValueError: for an unknown name.
    """
    if isinstance(spec, nn.Module):
        return spec
    kwargs = dict(spec) if isinstance(spec, Mapping) else {"name": spec or "fixed"}
    name = kwargs.pop("name", "fixed")
    if name not in WEIGHTINGS:
        raise ValueError(f"unknown loss weighting {name!r}; known: {sorted(WEIGHTINGS)}")
    return WEIGHTINGS[name].from_tasks(tasks, **kwargs)
