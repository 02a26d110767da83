"""Every backbone of the default study list builds inside MultiHeadNet and takes one optimiser step on the bundle loss.

The study runs hundreds of trainings per backbone; a backbone that fails to build, to run at a small size or to pass
gradients to its heads should fail here in seconds rather than hours into the study.
"""

from __future__ import annotations

import pytest
import torch
import yaml
from monai.bundle import ConfigParser

from bundle.losses.multidataset import MultiDatasetLoss
from bundle.networks.multihead import MultiHeadNet
from conftest import ROOT

STUDY_BACKBONES: list[str] = yaml.safe_load((ROOT / "configs" / "study.yaml").read_text())["backbones"]
TASKS = ConfigParser.load_config_file(ROOT / "configs" / "common.yaml")["tasks"]
SIZE = 64  # divisible by ViT's patch (16) and Swin's total downsampling (32)


def test_default_study_covers_the_paper_families() -> None:
    families = ("densenet", "resnet", "seres", "efficientnet")
    assert len(STUDY_BACKBONES) >= 18
    assert all(any(b.startswith(f) for b in STUDY_BACKBONES) for f in families)
    assert {"vit", "swin"} & set(STUDY_BACKBONES)


@pytest.mark.parametrize("backbone", STUDY_BACKBONES)
def test_backbone_takes_one_training_step(backbone: str) -> None:
    torch.manual_seed(0)
    kwargs = {"img_size": SIZE} if backbone == "vit" else {}
    net = MultiHeadNet(backbone, TASKS, in_channels=3, backbone_kwargs=kwargs)
    loss_fn = MultiDatasetLoss(TASKS)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    # One AIforCOVID sample (prognosis SEVERE) and one BRIXIA sample (severity class 2): both heads get a gradient.
    label = torch.tensor([[1.0, float("nan")], [float("nan"), 2.0]])
    net.train()
    before = {name: p.detach().clone() for name, p in net.heads.named_parameters()}
    loss = loss_fn(net(torch.randn(2, 3, SIZE, SIZE)), label)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert all(not torch.equal(before[name], p) for name, p in net.heads.named_parameters() if name.endswith("weight"))
    assert any(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in net.backbone.parameters())
