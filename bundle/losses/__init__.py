"""Losses: the multi-dataset indicator-function loss and interchangeable task-weighting strategies."""

from __future__ import annotations

from bundle.losses.multidataset import REDUCTIONS, MultiDatasetLoss
from bundle.losses.weighting import (
    WEIGHTINGS,
    DirichletWeighting,
    FixedWeighting,
    UncertaintyWeighting,
    build_weighting,
)

__all__ = [
    "REDUCTIONS",
    "WEIGHTINGS",
    "DirichletWeighting",
    "FixedWeighting",
    "MultiDatasetLoss",
    "UncertaintyWeighting",
    "build_weighting",
]
