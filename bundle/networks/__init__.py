"""Networks: backbone registry, task heads and the one-tensor-out ``MultiHeadNet``."""

from __future__ import annotations

from bundle.networks.backbones import BACKBONES, SwinFeatures, ViTFeatures, build_backbone, feature_dim, load_pretrained
from bundle.networks.heads import HEADS, LinearHead, MLPHead, PrognosisHead, build_head
from bundle.networks.multihead import MultiHeadNet, average_backbones, load_backbone_state, load_head_state
from bundle.networks.multimix import MultiMixNet, MultiMixOutput
from bundle.networks.shiftnet import Fire, Shift3D, ShiftNet3D

__all__ = [
    "BACKBONES",
    "HEADS",
    "Fire",
    "LinearHead",
    "MLPHead",
    "MultiHeadNet",
    "MultiMixNet",
    "MultiMixOutput",
    "PrognosisHead",
    "Shift3D",
    "ShiftNet3D",
    "SwinFeatures",
    "ViTFeatures",
    "average_backbones",
    "build_backbone",
    "build_head",
    "feature_dim",
    "load_backbone_state",
    "load_head_state",
    "load_pretrained",
]
