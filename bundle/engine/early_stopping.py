"""Early stopping on a validation metric that waits for the warm-up epochs (MDMT: 40 warm-up epochs, patience 65)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ignite.engine import Engine, Events
from ignite.handlers import EarlyStopping


class WarmupEarlyStopping:
    """Stops the trainer when the evaluator's ``metric`` has not improved for ``patience`` epochs after warm-up.

    Early epochs of a multi-task run are noisy while the heads settle; counting them towards the patience stops runs
    too early. The handler is attached to the *trainer* (after the validation handler) and reads the evaluator's
    metrics, so the config needs no circular trainer <-> evaluator reference. The counting itself is ignite's
    ``EarlyStopping``; its ``state_dict`` (counter, best score) is saved with the training checkpoint, so a resumed
    run keeps its patience.

    Args:
        patience: epochs without improvement before stopping.
        evaluator: the validation engine.
        metric: name in ``evaluator.state.metrics``.
        warmup_epochs: trainer epochs that do not count.
        mode: ``"min"`` for losses, ``"max"`` for scores.
    """

    def __init__(
        self, patience: int, evaluator: Engine, metric: str, warmup_epochs: int = 0, mode: str = "min"
    ) -> None:
        self.patience = patience
        self.evaluator = evaluator
        self.metric = metric
        self.warmup_epochs = warmup_epochs
        self.mode = mode
        self._stopping: EarlyStopping | None = None
        self._pending_state: Mapping[str, Any] | None = None

    def attach(self, trainer: Engine) -> None:
        self._stopping = EarlyStopping(
            patience=self.patience,
            score_function=lambda _: float(self.evaluator.state.metrics[self.metric]),
            trainer=trainer,
            mode=self.mode,
        )
        if self._pending_state is not None:
            self._stopping.load_state_dict(self._pending_state)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, trainer: Engine) -> None:
        if trainer.state.epoch > self.warmup_epochs and self._stopping is not None:
            self._stopping(trainer)

    def state_dict(self) -> dict[str, Any]:
        return dict(self._stopping.state_dict()) if self._stopping is not None else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self._stopping is None:
            self._pending_state = state
        elif state:
            self._stopping.load_state_dict(state)
