"""The indicator-function loss: missing labels ignored, absent tasks exactly zero, reductions, weightings, no NaN."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bundle.losses import (
    WEIGHTINGS,
    DirichletWeighting,
    FixedWeighting,
    MultiDatasetLoss,
    UncertaintyWeighting,
    build_weighting,
)
from bundle.networks import MultiHeadNet
from bundle.tasks import TaskSet

NAN = math.nan
TASKS = TaskSet(
    [
        {"name": "prognosis", "classes": ["MILD", "SEVERE"], "target": "prognosis", "head": "prognosis_mlp"},
        {"name": "severity", "classes": ["0-4", "5-9", "10-14", "15-18"], "target": "brixia_global_class"},
    ]
)
ALL_TASKS = TaskSet(
    list(TASKS)
    + [
        {"name": "lungs", "classes": [0, 1, 2, 3], "groups": 2, "target": "brixia_lung_class"},
        {"name": "zones", "kind": "regression", "channels": list("ABCDEF"), "target": "brixia_zones"},
    ]
)
# Two AIforCOVID rows (prognosis only), two BRIXIA rows (severity only).
LABEL = torch.tensor([[1.0, NAN], [0.0, NAN], [NAN, 2.0], [NAN, 0.0]])


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_task_mean_and_batch_mean_by_hand() -> None:
    pred = torch.randn(4, 6)
    ce_p = F.cross_entropy(pred[:2, :2], torch.tensor([1, 0]), reduction="none")
    ce_s = F.cross_entropy(pred[2:, 2:], torch.tensor([2, 0]), reduction="none")
    task_mean = MultiDatasetLoss(TASKS)
    assert torch.allclose(task_mean(pred, LABEL), ce_p.mean() + ce_s.mean())
    assert task_mean.last_task_counts == {"prognosis": 2, "severity": 2}
    assert task_mean.last_task_losses == pytest.approx(
        {"prognosis": ce_p.mean().item(), "severity": ce_s.mean().item()}
    )
    batch_mean = MultiDatasetLoss(TASKS, reduction="batch_mean")
    assert torch.allclose(batch_mean(pred, LABEL), (ce_p.sum() + ce_s.sum()) / 4)
    with pytest.raises(ValueError):
        MultiDatasetLoss(TASKS, reduction="mean")


def test_missing_rows_do_not_change_the_loss() -> None:
    loss = MultiDatasetLoss(TASKS)
    pred = torch.randn(4, 6)
    changed = pred.clone()
    changed[2:, :2] = torch.tensor([[50.0, -50.0], [float("inf"), NAN]])  # prognosis logits of BRIXIA rows
    changed[:2, 2:] = 1e4  # severity logits of AIforCOVID rows
    assert torch.equal(loss(pred, LABEL), loss(changed, LABEL))


def test_absent_task_is_exactly_zero_with_zero_gradient() -> None:
    net = MultiHeadNet("resnet10", TASKS)
    loss = MultiDatasetLoss(TASKS)
    value = loss(net(torch.rand(2, 3, 32, 32)), torch.tensor([[1.0, NAN], [0.0, NAN]]))
    value.backward()
    assert torch.isfinite(value)
    assert loss.last_task_counts == {"prognosis": 2, "severity": 0} and "severity" not in loss.last_task_losses
    # The severity head takes part in the graph (DDP needs it) but receives exactly zero gradient.
    for p in net.heads["severity"].parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) == 0
    assert any(torch.count_nonzero(p.grad) > 0 for p in net.heads["prognosis"].parameters())


@pytest.mark.parametrize("only,other", [("prognosis", "severity"), ("severity", "prognosis")])
def test_gradient_isolation(only: str, other: str) -> None:
    net = MultiHeadNet("resnet10", TASKS)
    label = LABEL[:2] if only == "prognosis" else LABEL[2:]
    MultiDatasetLoss(TASKS)(net(torch.rand(2, 3, 32, 32)), label).backward()
    assert all(torch.count_nonzero(p.grad) == 0 for p in net.heads[other].parameters())
    assert any(torch.count_nonzero(p.grad) > 0 for p in net.heads[only].parameters())


def test_no_labelled_sample_at_all_gives_zero_not_nan() -> None:
    pred = torch.randn(3, 6, requires_grad=True)
    value = MultiDatasetLoss(TASKS)(pred, torch.full((3, 2), NAN))
    value.backward()
    assert value.item() == 0.0 and torch.count_nonzero(pred.grad) == 0


def test_grouped_and_regression_masking() -> None:
    loss = MultiDatasetLoss(ALL_TASKS.tasks[2:])
    pred = torch.randn(3, 14, requires_grad=True)
    label = torch.tensor(
        [
            [1.0, 3.0, 0.0, 1.0, 2.0, 3.0, NAN, 0.0],
            [2.0, NAN, NAN, NAN, NAN, NAN, NAN, NAN],  # one lung missing: the lungs task is absent for this row
            [NAN, NAN] + [NAN] * 6,
        ]
    )
    lungs = F.cross_entropy(pred[0, :8].reshape(2, 4), torch.tensor([1, 3]))
    present = torch.tensor([0, 1, 2, 3, 5])
    zones = ((pred[0, 8:][present] - label[0, 2:][present]) ** 2).mean()
    assert torch.allclose(loss(pred, label), lungs + zones)
    loss(pred, label).backward()
    assert torch.count_nonzero(pred.grad[1:]) == 0 and pred.grad[0, 8 + 4] == 0


def test_invalid_class_label_is_reported() -> None:
    with pytest.raises(ValueError, match="class indices"):
        MultiDatasetLoss(TASKS)(torch.randn(1, 6), torch.tensor([[NAN, 4.0]]))


def test_fixed_weighting_by_hand() -> None:
    losses = {"prognosis": torch.tensor(2.0), "severity": torch.tensor(3.0)}
    assert FixedWeighting({"prognosis": 1.0, "severity": 0.5})(losses).item() == pytest.approx(3.5)
    assert FixedWeighting({"prognosis": 1.0, "severity": 0.5})({"severity": torch.tensor(3.0)}).item() == 1.5
    weighted = TaskSet([{**vars(t), "weight": w} for t, w in zip(TASKS, (2.0, 1.0), strict=True)])
    pred = torch.randn(4, 6)
    plain = MultiDatasetLoss(TASKS)
    plain(pred, LABEL)
    expected = 2 * plain.last_task_losses["prognosis"] + plain.last_task_losses["severity"]
    assert MultiDatasetLoss(weighted)(pred, LABEL).item() == pytest.approx(expected)
    with pytest.raises(KeyError):
        FixedWeighting({"prognosis": 1.0})(losses)


def test_dirichlet_weights_distribution() -> None:
    k, draws, alpha, n = 3, 2, 1.0, 20000
    weighting = DirichletWeighting(k, draws=draws, alpha=alpha, seed=0)
    samples = np.stack([weighting.sample() for _ in range(n)])
    assert np.allclose(samples.sum(axis=1), 1.0)
    assert np.allclose(samples.mean(axis=0), 1 / k, atol=0.01)
    expected_var = (k - 1) / (k**2 * (k * alpha + 1)) / draws  # Dirichlet marginal variance, averaged over draws
    assert np.allclose(samples.var(axis=0), expected_var, rtol=0.1)


def test_dirichlet_weighting_applies_renormalised_weights() -> None:
    weighting = DirichletWeighting(["a", "b", "c"], seed=1)
    reference = DirichletWeighting(["a", "b", "c"], seed=1)
    w = reference.sample()
    value = weighting({"a": torch.tensor(1.0), "c": torch.tensor(4.0)})
    assert value.item() == pytest.approx((w[0] * 1 + w[2] * 4) / (w[0] + w[2]))
    assert torch.isfinite(value)
    weighting.eval()  # expectation: equal weights
    assert weighting({"a": torch.tensor(1.0), "c": torch.tensor(4.0)}).item() == pytest.approx(2.5)
    with pytest.raises(ValueError):
        DirichletWeighting(3)({"a": torch.tensor(1.0)})


def test_dirichlet_weighting_resumes_its_random_stream(tmp_path) -> None:
    weighting = DirichletWeighting(["a", "b"], seed=3)
    weighting.sample()
    torch.save(weighting.state_dict(), tmp_path / "w.pt")
    expected = [weighting.sample() for _ in range(3)]
    resumed = DirichletWeighting(["a", "b"], seed=99)
    resumed.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    assert np.allclose([resumed.sample() for _ in range(3)], expected)


def test_uncertainty_weighting_learns_log_variances() -> None:
    loss = MultiDatasetLoss(ALL_TASKS, weighting="uncertainty")
    params = list(loss.parameters())
    assert len(params) == 1 and params[0].shape == (4,)
    assert loss.weighting.scales.tolist() == [1.0, 1.0, 1.0, 0.5]
    pred = torch.randn(4, ALL_TASKS.out_channels, requires_grad=True)
    label = torch.full((4, ALL_TASKS.label_size), NAN)
    label[:, :2] = LABEL
    value = loss(pred, label)
    assert torch.allclose(value, torch.tensor(sum(loss.last_task_losses.values())))  # s = 0: plain sum
    value.backward()
    grad = params[0].grad
    assert grad[:2].abs().min() > 0 and torch.count_nonzero(grad[2:]) == 0  # absent tasks: in the graph, zero grad
    direct = UncertaintyWeighting(["a"], init=1.0)({"a": torch.tensor(2.0)})
    assert direct.item() == pytest.approx(math.exp(-1.0) * 2.0 + 0.5)


def test_registry_and_builder() -> None:
    assert set(WEIGHTINGS) == {"fixed", "dirichlet", "uncertainty"}
    assert isinstance(build_weighting(None, TASKS), FixedWeighting)
    built = build_weighting({"name": "dirichlet", "draws": 4, "seed": 0}, TASKS)
    assert isinstance(built, DirichletWeighting) and built.draws == 4 and built.names == TASKS.names
    assert isinstance(build_weighting("uncertainty", TASKS), UncertaintyWeighting)
    with pytest.raises(ValueError):
        build_weighting("gradnorm", TASKS)


@pytest.mark.parametrize("weighting", ["fixed", "dirichlet", "uncertainty"])
@pytest.mark.parametrize("reduction", ["task_mean", "batch_mean"])
def test_never_nan(weighting: str, reduction: str) -> None:
    loss = MultiDatasetLoss(ALL_TASKS, reduction=reduction, weighting=weighting)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        pred = torch.randn(5, ALL_TASKS.out_channels, generator=generator, requires_grad=True)
        label = torch.full((5, ALL_TASKS.label_size), NAN)
        for row in range(5):
            record = {"prognosis": None, "brixia_zones": None}
            kind = torch.randint(3, (1,), generator=generator).item()
            if kind == 1:
                record["prognosis"] = torch.randint(2, (1,), generator=generator).item()
            elif kind == 2:
                record["brixia_zones"] = torch.randint(4, (6,), generator=generator).tolist()
            label[row] = ALL_TASKS.pack(record)
        value = loss(pred, label)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(pred.grad).all()
