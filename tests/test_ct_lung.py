"""Unsupervised CT lung segmentation against the synthetic phantoms' ground-truth lungs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from bundle.data.synthetic_ct import CT_DEMO_SIZES, plan_scan, render_scan
from bundle.transforms.ct_lung import CTLungMask, CTLungMaskd, dice

SIZE = CT_DEMO_SIZES["tiny"]


def phantom(seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    return render_scan(plan_scan(0, np.random.default_rng(seed)), SIZE)


# (phantom seed, snake pixel size mm, least lesion burden, least Dice). Thresholding leaves consolidation
# (-100..+50 HU) out of the lungs where it reaches the pleura, so a phantom with a quarter of its lungs consolidated or
# ground-glass scores lower: the limitation is measured (docs/covid_mtl_ct.md), not hidden. Seed 12: 3% lesion burden
# (the paper's 1 mm snake), 9: 25% (a 2 mm snake, for time); seed 13 (no lesions) is checked with the dict transform.
CASES = [(12, 1.0, 0.02, 0.90), (9, 2.0, 0.20, 0.80)]


@pytest.mark.parametrize(("seed", "snake_spacing", "burden", "least"), CASES)
def test_dice_against_phantom_lungs(seed: int, snake_spacing: float, burden: float, least: float) -> None:
    hu, truth, latents = phantom(seed)
    assert latents["burden"] >= burden, "the phantom no longer has the lesion burden this case is meant to check"
    mask = CTLungMask(snake_spacing=snake_spacing)(hu[None], spacing=SIZE.spacing)
    assert mask.shape == (1, *hu.shape)
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert dice(mask, truth) >= least, f"phantom {seed} (lesion burden {latents['burden']:.3f})"


def test_dict_transform_reads_spacing_from_the_meta_tensor_and_keeps_the_affine() -> None:
    hu, truth, _ = phantom(13)
    affine = torch.diag(torch.tensor([*SIZE.spacing, 1.0], dtype=torch.float64))
    image = MetaTensor(torch.from_numpy(hu[None]), affine=affine)
    out = CTLungMaskd("image", mask_key="lungs", snake_spacing=2.0)({"image": image})
    assert isinstance(out["lungs"], MetaTensor) and torch.equal(out["lungs"].affine, affine)
    assert out["image"] is image
    assert dice(out["lungs"], truth) >= 0.90


def test_outside_air_and_a_body_without_lungs_give_no_lungs() -> None:
    hu = np.full((1, 30, 30, 10), -1000.0, dtype=np.float32)
    hu[:, 5:25, 5:25, :] = 40.0  # a body of soft tissue in air
    assert CTLungMask(snake_spacing=3.0)(hu, spacing=(5.0, 5.0, 5.0)).sum() == 0
    with pytest.raises(ValueError):
        CTLungMask()(hu[0])
