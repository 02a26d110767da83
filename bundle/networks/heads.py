"""Task heads: small MLPs from pooled backbone features (B, F) to one task's logits (B, task.out_channels).

All heads are ``nn.Sequential`` (TorchScript-friendly) with the MDMT paper's initialisation: Xavier-uniform weights and
bias 0.01 in every Linear layer.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from bundle.tasks import Task

__all__ = ["HEADS", "LinearHead", "MLPHead", "PrognosisHead", "build_head"]

BIAS_INIT = 0.01


def _mlp_layers(in_features: int, out_channels: int, hidden: Sequence[int], dropout: float) -> list[nn.Module]:
    """Linear - ReLU - Dropout for each hidden width, then the output Linear."""
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
        width = h
    layers.append(nn.Linear(width, out_channels))
    return layers


class _InitialisedHead(nn.Sequential):
    """A sequential head whose Linear layers get the paper's Xavier-uniform / bias 0.01 initialisation."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__(*layers)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.constant_(m.bias, BIAS_INIT)


class PrognosisHead(_InitialisedHead):
    """The MDMT prognosis head: Linear(F,128) - ReLU - Dropout - Linear(128,32) - ReLU - Dropout - Linear(32,C).

    Args:
        in_features: backbone feature width F.
        out_channels: logits C.
        dropout: dropout probability (0.5 in the paper).
    """

    def __init__(self, in_features: int, out_channels: int, dropout: float = 0.5) -> None:
        super().__init__(*_mlp_layers(in_features, out_channels, (128, 32), dropout))


class LinearHead(_InitialisedHead):
    """The MDMT global severity head: ReLU - Dropout - Linear(F,C).

    The leading ReLU is the paper's; it is a no-op on backbones whose pooled features are already non-negative.

    Args:
        in_features: backbone feature width F.
        out_channels: logits C.
        dropout: dropout probability (0.5 in the paper).
    """

    def __init__(self, in_features: int, out_channels: int, dropout: float = 0.5) -> None:
        super().__init__(nn.ReLU(), nn.Dropout(dropout), nn.Linear(in_features, out_channels))


class MLPHead(_InitialisedHead):
    """A general MLP head, F - hidden... - C; the MDMT zone-regression head is F-128-32-6.

    Dropout defaults to 0: the paper states no dropout for the regression MLP, and dropping units in front of a
    regression output mainly adds noise to the predicted values.

    Args:
        in_features: backbone feature width F.
        out_channels: outputs C.
        hidden: hidden widths.
        dropout: dropout probability after each hidden layer.
    """

    def __init__(
        self, in_features: int, out_channels: int, hidden: Sequence[int] = (128, 32), dropout: float = 0.0
    ) -> None:
        super().__init__(*_mlp_layers(in_features, out_channels, hidden, dropout))


HEADS: dict[str, type[nn.Module]] = {"prognosis_mlp": PrognosisHead, "linear": LinearHead, "mlp": MLPHead}


def build_head(task: Task, in_features: int) -> nn.Module:
    """The head named by ``task.head``, sized ``in_features -> task.out_channels``, with ``task.head_kwargs``.

    Raises:
        ValueError: for an unknown head name.
    """
    if task.head not in HEADS:
        raise ValueError(f"task {task.name!r}: unknown head {task.head!r}; known: {sorted(HEADS)}")
    return HEADS[task.head](in_features, task.out_channels, **task.head_kwargs)
