"""Radiomics features of a phantom's lungs (pyradiomics extra), and their cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from bundle.data.synthetic_ct import CT_DEMO_SIZES, plan_scan, render_scan
from bundle.radiomics import RadiomicsExtractor, RadiomicsFeaturesd, feature_names, num_features

SIZE = CT_DEMO_SIZES["tiny"]


def test_feature_names_cover_the_paper_classes_and_wavelet_bands() -> None:
    names = feature_names()
    assert len(names) == num_features() == len(set(names))
    assert {n.split("_")[0] for n in names} == {"original"} | {f"wavelet-{b}" for b in
        ("LLL", "LLH", "LHL", "LHH", "HLL", "HLH", "HHL", "HHH")}  # fmt: skip
    assert {n.split("_")[1] for n in names} == {"firstorder", "glcm", "glrlm", "glszm"}
    assert num_features(image_types=["Original"]) * 9 == len(names)


def test_extraction_on_a_phantom_is_finite_cached_and_log_scaled(tmp_path: Path, monkeypatch) -> None:
    hu, truth, _ = render_scan(plan_scan(2, np.random.default_rng(7)), SIZE)
    source = tmp_path / "scan.npy"
    np.save(source, hu)
    affine = torch.diag(torch.tensor([*SIZE.spacing, 1.0], dtype=torch.float64))
    image = MetaTensor(torch.from_numpy(hu[None]), affine=affine, meta={"filename_or_obj": str(source)})
    transform = RadiomicsFeaturesd("image", mask_key="lungs", cache_dir=tmp_path / "cache")
    out = transform({"image": image, "lungs": torch.from_numpy(truth[None])})
    vector = out["radiomics"]
    assert vector.shape == (num_features(),) and vector.dtype == torch.float32
    assert torch.isfinite(vector).all()
    cached = list((tmp_path / "cache").glob("*.json"))
    assert len(cached) == 1
    raw = np.asarray(json.loads(cached[0].read_text())["values"])
    torch.testing.assert_close(vector, torch.as_tensor(np.sign(raw) * np.log1p(np.abs(raw)), dtype=torch.float32))
    mean_hu = raw[transform.extractor.names.index("original_firstorder_Mean")]
    assert -900 < mean_hu < -500  # lungs in HU, not a normalised image

    def refuse(*args, **kwargs):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(RadiomicsExtractor, "__call__", refuse)
    torch.testing.assert_close(transform({"image": image, "lungs": torch.from_numpy(truth[None])})["radiomics"], vector)


def test_empty_mask_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        RadiomicsExtractor(image_types=["Original"])(np.zeros((8, 8, 8)), np.zeros((8, 8, 8)), (1.0, 1.0, 1.0))
