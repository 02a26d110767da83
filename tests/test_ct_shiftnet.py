"""Shift3D, Fire and ShiftNet3D (COVID-MTL's network).

The Dirichlet random weighting (sum 1, mean 1/K, variance of the mean of n draws) is tested in tests/test_losses.py.
"""

from __future__ import annotations

import pytest
import torch

from bundle.networks.shiftnet import Fire, RadiomicsMLP, Shift3D, ShiftNet3D

TASKS = [
    {"name": "detection_radiology", "classes": ["negative", "positive"], "target": "radiology_detection"},
    {"name": "detection_nat", "classes": ["negative", "positive"], "target": "nat_detection"},
    {"name": "severity", "classes": ["a", "b", "c"], "target": "ct_severity"},
]
TINY = {"channels": (8, 8, 16, 16, 24, 24, 32, 32), "stem_channels": 8}


def test_shift3d_is_the_identity_in_eval_mode() -> None:
    layer = Shift3D(p=1.0).eval()
    x = torch.randn(4, 3, 6, 7, 8)
    assert layer(x) is x
    assert int(layer.step) == 0


@pytest.mark.parametrize("per_batch", [False, True])
def test_shift3d_rolls_exactly_the_picked_samples(per_batch: bool) -> None:
    layer = Shift3D(p=0.5, max_fraction=0.2, per_batch=per_batch).train()
    x = torch.randn(16, 3, 10, 12, 15)
    changed_counts = set()
    for seed in range(6):
        torch.manual_seed(seed)
        plan = layer.sample_shifts(x.shape[0], x.shape[2:])
        torch.manual_seed(seed)
        y = layer(x)
        assert y.shape == x.shape
        for sample, (before, after, shift) in enumerate(zip(x, y, plan, strict=True)):
            if shift is None:
                assert torch.equal(before, after), f"sample {sample} was not picked but changed"
                continue
            axis, amount = shift
            size = x.shape[2 + axis]
            assert 1 <= abs(amount) <= max(1, int(0.2 * size))
            assert not torch.equal(before, after), f"sample {sample} was picked but unchanged"
            # every channel is the same circular roll of the input along the drawn spatial axis
            assert torch.equal(after, torch.roll(before, amount, dims=axis + 1))
        changed_counts.add(sum(shift is not None for shift in plan))
        if per_batch:
            assert len({shift for shift in plan}) == 1
    if per_batch:  # one decision for the whole batch: all or none, and both happen over 6 batches at p=0.5
        assert changed_counts == {0, 16}
    else:
        assert changed_counts - {0, 16}, "p=0.5 should pick some but not all samples in some batch"
    assert int(layer.step) == 6


def test_shift3d_probability_decays_with_a_cosine() -> None:
    layer = Shift3D(p=0.4, decay_steps=10).train()
    assert layer.probability() == pytest.approx(0.4)
    layer.step.fill_(5)
    assert layer.probability() == pytest.approx(0.2)
    layer.step.fill_(50)
    assert layer.probability() == pytest.approx(0.0)
    x = torch.randn(8, 2, 5, 5, 5)
    assert torch.equal(layer(x), x)  # p decayed to 0: nothing is rolled


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_fire_shapes_and_bypass(spatial_dims: int) -> None:
    x = torch.randn(2, 16, *([9] * spatial_dims))
    assert Fire(spatial_dims, 16, 32)(x).shape == (2, 32, *([9] * spatial_dims))
    bypass = Fire(spatial_dims, 16, 16, bypass=True)
    plain = Fire(spatial_dims, 16, 16)
    plain.load_state_dict(bypass.state_dict())
    bypass.eval(), plain.eval()
    torch.testing.assert_close(bypass(x), plain(x) + x)
    with pytest.raises(ValueError):
        Fire(spatial_dims, 16, 32, bypass=True)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("radiomics", [0, 12])
def test_shiftnet_output_is_one_tensor_of_all_task_logits(spatial_dims: int, radiomics: int) -> None:
    net = ShiftNet3D(TASKS, spatial_dims=spatial_dims, radiomics_features=radiomics, **TINY)
    x = torch.randn(3, 1, *([32] * spatial_dims))
    args = (x, torch.randn(3, radiomics)) if radiomics else (x,)
    assert net(*args).shape == (3, 7)
    net.eval()
    assert net(*args).shape == (3, 7)
    assert isinstance(net.shift, Shift3D)
    assert all(c.in_features == (64 if radiomics else 32) for c in net.classifiers.values())


def test_shiftnet_paper_widths_and_radiomics_mlp() -> None:
    net = ShiftNet3D(TASKS, radiomics_features=20)
    fires = [m for m in net.features if isinstance(m, Fire)]
    assert [f.expand1[0].out_channels * 2 for f in fires] == [128, 128, 256, 256, 384, 384, 512, 512]
    assert [f.bypass for f in fires] == [False, True] * 4
    linears = [m for m in net.radiomics if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(20, 256), (256, 128), (128, 64), (64, 32)]
    assert isinstance(RadiomicsMLP(5)[0], torch.nn.BatchNorm1d)
    assert net(torch.randn(2, 1, 32, 32, 32), torch.randn(2, 20)).shape == (2, 7)


def test_shiftnet_without_shift_and_input_checks() -> None:
    net = ShiftNet3D(TASKS, shift_prob=0.0, **TINY)
    assert isinstance(net.shift, torch.nn.Identity)
    with pytest.raises(ValueError, match="no radiomics input"):
        net(torch.randn(2, 1, 32, 32, 32), torch.randn(2, 4))
    with pytest.raises(ValueError, match="needs a radiomics vector"):
        ShiftNet3D(TASKS, radiomics_features=4, **TINY)(torch.randn(2, 1, 32, 32, 32))
