"""Pre-trained backbone weights: saved with a sidecar, loaded by every network, refused clearly when they do not fit;
and the encoder-decoder network built on the same registry backbones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from bundle.networks.backbones import build_backbone, load_pretrained, weights_sidecar
from bundle.networks.multihead import MultiHeadNet
from bundle.networks.segmentation import FeaturePyramid, PredOnly, SegmentationMultiHeadNet, UNetDecoder
from bundle.ssl.export import save_backbone
from bundle.ssl.moco import MoCo
from conftest import ROOT

CORE_TASKS = [
    {"name": "prognosis", "classes": ["MILD", "SEVERE"], "target": "prognosis", "head": "prognosis_mlp"},
    {"name": "severity", "classes": ["0-4", "5-9", "10-14", "15-18"], "target": "brixia_global_class"},
]
APPEARANCE = [{"name": "appearance", "classes": ["negative", "typical", "indeterminate", "atypical"],
               "target": "covid_appearance"}]  # fmt: skip


@pytest.fixture(scope="module")
def moco_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    moco = MoCo("resnet10", projection_dim=8, queue_size=4)
    with torch.no_grad():
        moco.backbone.conv1.weight.fill_(0.5)  # recognisable after loading
    path = tmp_path_factory.mktemp("weights") / "moco_backbone.pt"
    save_backbone(moco.backbone, path, name="resnet10", in_channels=3, spatial_dims=2, method="moco")
    return path


def test_pretrained_weights_are_the_backbone_state_dict_with_a_sidecar(moco_weights: Path) -> None:
    state = torch.load(moco_weights, weights_only=True)
    assert "conv1.weight" in state and not any(k.startswith(("backbone.", "key_", "queue")) for k in state)
    sidecar = json.loads(weights_sidecar(moco_weights).read_text())
    assert sidecar["method"] == "moco" and sidecar["backbone"] == "resnet10"
    assert {"in_channels", "spatial_dims", "backbone_kwargs", "architecture"} <= set(sidecar)


def test_mdmt_and_segmentation_networks_load_the_pretrained_weights(moco_weights: Path) -> None:
    mdmt = MultiHeadNet("resnet10", CORE_TASKS, pretrained=moco_weights)
    assert torch.all(mdmt.backbone.conv1.weight == 0.5)
    seg = SegmentationMultiHeadNet("resnet10", APPEARANCE, pretrained=moco_weights)
    assert torch.all(seg.backbone.conv1.weight == 0.5)
    # and the fine-tuned encoder goes back to MDMT through the shared "backbone." keys
    encoder = {k: v for k, v in seg.state_dict().items() if k.startswith("backbone.")}
    assert encoder.keys() == {k for k in mdmt.state_dict() if k.startswith("backbone.")}


def test_a_different_backbone_is_refused_with_an_error_naming_the_pretraining(moco_weights: Path) -> None:
    with pytest.raises(ValueError, match=r"moco pre-training of backbone 'resnet10'.*missing keys"):
        MultiHeadNet("resnet18", CORE_TASKS, pretrained=moco_weights)
    with pytest.raises(ValueError, match="moco pre-training of backbone 'resnet10'"):
        MultiHeadNet("densenet121", CORE_TASKS, pretrained=moco_weights)


def test_the_mdmt_training_config_starts_from_the_pretrained_encoder(
    moco_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # the configs' %file#id macros are relative to the bundle root
    workflow = ConfigWorkflow(
        config_file=[str(ROOT / "configs" / "train.yaml"), str(ROOT / "configs" / "ssl" / "mdmt_pretrained.yaml")],
        workflow_type="train",
        backbone="resnet10",
        pretrained=str(moco_weights),
    )
    network = workflow.parser.get_parsed_content("network_def")
    assert isinstance(network, MultiHeadNet) and torch.all(network.backbone.conv1.weight == 0.5)


def test_same_shapes_but_another_architecture_is_refused_by_the_sidecar(moco_weights: Path) -> None:
    # conv1 stride 1 instead of 2: every weight has the same shape, the features would not be the same
    backbone, _ = build_backbone("resnet10", conv1_t_stride=1)
    with pytest.raises(ValueError, match="architecture differs"):
        load_pretrained(backbone, moco_weights)
    plain = moco_weights.parent / "plain.pt"  # without a sidecar only keys and shapes can be checked
    plain.write_bytes(moco_weights.read_bytes())
    load_pretrained(backbone, plain)


def test_feature_pyramid_finds_the_stages_of_registry_backbones() -> None:
    resnet, _ = build_backbone("resnet10")
    pyramid = FeaturePyramid(resnet)
    assert [(t.name, t.stride) for t in pyramid.taps] == [
        ("act", 2), ("layer1", 4), ("layer2", 8), ("layer3", 16), ("layer4", 32)
    ]  # fmt: skip
    pooled, maps = pyramid(resnet, torch.randn(2, 3, 96, 96))
    assert pooled.shape == (2, 512) and [m.shape[-1] for m in maps] == [48, 24, 12, 6, 3]
    vit, _ = build_backbone("vit", img_size=32, patch_size=8, hidden_size=48, mlp_dim=96, num_layers=1, num_heads=4)
    _, (tokens,) = FeaturePyramid(vit, probe_size=32)(vit, torch.randn(1, 3, 32, 32))
    assert tokens.shape == (1, 48, 4, 4)


def test_segmentation_network_outputs_and_single_task_variant() -> None:
    net = SegmentationMultiHeadNet("resnet10", APPEARANCE, seg_channels=1, decoder_channels=(32, 16, 16, 8))
    out = net(torch.randn(2, 3, 64, 64))
    assert out["pred"].shape == (2, 4) and out["seg"].shape == (2, 1, 64, 64)
    assert net.cam_layer == "backbone.layer4"
    assert PredOnly(net)(torch.randn(1, 3, 64, 64)).shape == (1, 4)
    single = SegmentationMultiHeadNet("resnet10", APPEARANCE, seg_channels=0)
    assert set(single(torch.randn(2, 3, 64, 64))) == {"pred"} and single.decoder is None
    bottleneck = UNetDecoder(2, [8, 16, 32], out_channels=3, channels=4, skips=False)
    maps = [torch.randn(1, 8, 16, 16), torch.randn(1, 16, 8, 8), torch.randn(1, 32, 4, 4)]
    assert bottleneck(maps, (32, 32)).shape == (1, 3, 32, 32)
