"""MultiHeadNet: one tensor out for every backbone family, TorchScript export, heads, MDMT backbone averaging."""

from __future__ import annotations

import io

import pytest
import torch
from monai.networks.nets import DenseNet121
from monai.networks.utils import convert_to_torchscript
from torch import nn

from bundle.networks import (
    BACKBONES,
    LinearHead,
    MLPHead,
    MultiHeadNet,
    PrognosisHead,
    average_backbones,
    build_backbone,
    load_backbone_state,
    load_head_state,
)
from bundle.tasks import TaskSet

TASKS = TaskSet(
    [
        {"name": "prognosis", "classes": ["MILD", "SEVERE"], "target": "prognosis", "head": "prognosis_mlp"},
        {"name": "severity", "classes": ["0-4", "5-9", "10-14", "15-18"], "target": "brixia_global_class"},
    ]
)
TINY_VIT = {"img_size": 32, "hidden_size": 48, "mlp_dim": 96, "num_layers": 1, "num_heads": 4}
TINY_SWIN = {"embed_dim": 12, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1)}
# (backbone, kwargs, image size, jit mode that must work)
CASES = [
    ("densenet121", {}, 32, "script"),
    ("resnet18", {}, 32, "script"),
    ("seresnet50", {}, 32, "script"),
    ("efficientnet-b0", {}, 32, "script"),
    ("vit", TINY_VIT, 32, "script"),
    ("swin", TINY_SWIN, 64, "trace"),
]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_registry_names() -> None:
    expected = {f"densenet{d}" for d in (121, 169, 201, 264)} | {f"resnet{d}" for d in (10, 18, 34, 50, 101, 152, 200)}
    expected |= {"seresnet50", "seresnet101", "seresnet152", "seresnext50", "seresnext101", "senet154", "vit", "swin"}
    expected |= {f"efficientnet-b{i}" for i in range(8)}
    assert expected <= set(BACKBONES)


@pytest.mark.parametrize("name,kwargs,size,jit_mode", CASES, ids=[c[0] for c in CASES])
def test_one_tensor_out_and_torchscript(name: str, kwargs: dict, size: int, jit_mode: str) -> None:
    net = MultiHeadNet(name, TASKS, backbone_kwargs=kwargs).eval()
    image = torch.rand(2, 3, size, size)
    with torch.no_grad():
        pred = net(image)
    assert isinstance(pred, torch.Tensor) and pred.shape == (2, TASKS.out_channels)
    assert list(net.heads) == TASKS.names
    # The same path as `monai.bundle ckpt_export` (script by default, `--use_trace` traces), with a save/load trip.
    buffer = io.BytesIO()
    convert_to_torchscript(net, buffer, use_trace=jit_mode == "trace", inputs=[image])
    buffer.seek(0)
    exported = torch.jit.load(buffer)
    with torch.no_grad():
        assert torch.allclose(exported(image), pred, atol=1e-5, rtol=0)


def test_heads_concatenated_in_task_order() -> None:
    net = MultiHeadNet("resnet10", TASKS).eval()
    image = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        features = net.backbone(image)
        parts = TASKS.split(net(image))
        assert torch.equal(parts["prognosis"], net.heads["prognosis"](features))
        assert torch.equal(parts["severity"], net.heads["severity"](features))


def test_dimension_agnostic_3d() -> None:
    net = MultiHeadNet("resnet10", TASKS, in_channels=1, spatial_dims=3).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 1, 16, 16, 16)).shape == (1, 6)


def test_module_backbone_feature_dim_by_dry_forward() -> None:
    backbone = nn.Sequential(nn.Conv2d(1, 5, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    net = MultiHeadNet(backbone, TASKS, in_channels=1)
    assert net.feature_dim == 5 and net.training and backbone.training
    assert net(torch.rand(3, 1, 16, 16)).shape == (3, 6)
    with pytest.raises(ValueError, match=r"\(B, F\)"):
        MultiHeadNet(nn.Conv2d(1, 5, 3), TASKS, in_channels=1)


def test_backbone_errors() -> None:
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet9")
    with pytest.raises(ValueError, match="img_size"):
        build_backbone("vit")


def test_resnet_stem_stride_two_by_default() -> None:
    backbone, features = build_backbone("resnet18")
    assert backbone.conv1.stride == (2, 2) and features == 512


def test_head_architectures_and_init() -> None:
    head = PrognosisHead(64, 2)
    linears = [m for m in head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 128), (128, 32), (32, 2)]
    assert [type(m) for m in head] == [nn.Linear, nn.ReLU, nn.Dropout] * 2 + [nn.Linear]
    assert all(m.p == 0.5 for m in head if isinstance(m, nn.Dropout))
    for m in linears:
        bound = (6 / (m.in_features + m.out_features)) ** 0.5
        assert torch.all(m.bias == 0.01) and m.weight.abs().max() <= bound
    assert [type(m) for m in LinearHead(64, 4)] == [nn.ReLU, nn.Dropout, nn.Linear]
    mlp = MLPHead(64, 6)
    assert [(m.in_features, m.out_features) for m in mlp if isinstance(m, nn.Linear)] == [(64, 128), (128, 32), (32, 6)]


def test_average_backbones_and_load() -> None:
    a, b = MultiHeadNet("resnet10", TASKS), MultiHeadNet("resnet10", TASKS)
    with torch.no_grad():
        for p in b.parameters():
            p.add_(1.0)
    a.backbone.bn1.num_batches_tracked.fill_(3)
    averaged = average_backbones(a.state_dict(), b.state_dict(), beta=0.25)
    assert all(k.startswith("backbone.") for k in averaged)
    key = "backbone.conv1.weight"
    assert torch.allclose(averaged[key], 0.25 * a.state_dict()[key] + 0.75 * b.state_dict()[key])
    assert averaged["backbone.bn1.num_batches_tracked"] == 3

    mdmt = MultiHeadNet("resnet10", TASKS)
    heads_before = {k: v.clone() for k, v in mdmt.heads.state_dict().items()}
    load_backbone_state(mdmt, averaged)
    assert torch.equal(mdmt.backbone.conv1.weight, averaged[key])
    assert all(torch.equal(v, heads_before[k]) for k, v in mdmt.heads.state_dict().items())
    load_head_state(mdmt, "severity", b.state_dict())
    assert torch.equal(mdmt.heads["severity"][2].weight, b.heads["severity"][2].weight)

    other = MultiHeadNet("resnet18", TASKS)
    with pytest.raises(ValueError, match="backbones differ"):
        average_backbones(a.state_dict(), other.state_dict())
    with pytest.raises(ValueError):
        load_backbone_state(other, averaged)
    with pytest.raises(ValueError, match="beta"):
        average_backbones(a.state_dict(), b.state_dict(), beta=1.5)
    with pytest.raises(ValueError, match="no head"):
        load_head_state(mdmt, "zones", b.state_dict())


def test_pretrained_state_dict(tmp_path) -> None:
    source = MultiHeadNet("resnet10", TASKS).eval()
    path = tmp_path / "resnet10_backbone.pt"
    torch.save(source.backbone.state_dict(), path)
    loaded = MultiHeadNet("resnet10", TASKS, pretrained=path).eval()
    assert torch.equal(loaded.backbone.conv1.weight, source.backbone.conv1.weight)

    # A MONAI classifier network's state dict loads: the removed classifier's entries are skipped.
    full = tmp_path / "densenet121_classifier.pt"
    torch.save(DenseNet121(spatial_dims=2, in_channels=3, out_channels=7).state_dict(), full)
    build_backbone("densenet121", pretrained=full)

    with pytest.raises(ValueError, match="resnet10_backbone.pt.*(missing|unexpected) keys"):
        build_backbone("resnet18", pretrained=path)
    with pytest.raises(FileNotFoundError):
        build_backbone("resnet10", pretrained=tmp_path / "absent.pt")
