"""Inpainting pieces: the region masks, the loss on hidden pixels only, the network."""

from __future__ import annotations

import pytest
import torch

from bundle.ssl.inpainting import InpaintingNet, MaskedReconstructionLoss, RandRegionMask, RandRegionMaskd


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_masks_cover_at_least_the_fraction_and_less_than_one_more_box(fraction: float) -> None:
    masker = RandRegionMask(mask_fraction=fraction, box_size=(0.1, 0.2))
    masker.set_random_state(0)
    image = torch.zeros(3, 64, 48)
    largest_box = 0.2 * 64 * 0.2 * 48 / (64 * 48)
    for _ in range(20):
        mask = masker(image)
        assert mask.shape == (1, 64, 48) and set(mask.unique().tolist()) <= {0.0, 1.0}
        covered = float(mask.mean())
        assert fraction <= covered < fraction + largest_box + 1e-6


def test_masks_are_reproducible_and_can_be_switched_off() -> None:
    image = torch.zeros(1, 32, 32)
    first = RandRegionMask(0.3).set_random_state(1)(image)
    second = RandRegionMask(0.3).set_random_state(1)(image)
    assert torch.equal(first, second)
    assert RandRegionMask(0.3, prob=0.0)(image).sum() == 0
    with pytest.raises(ValueError, match="mask_fraction"):
        RandRegionMask(1.0)


def test_dictionary_masking_hides_exactly_the_masked_pixels() -> None:
    image = torch.rand(3, 40, 40) + 1.0
    out = RandRegionMaskd("image", mask_key="mask", fill_value=0.0, mask_fraction=0.3).set_random_state(0)(
        {"image": image.clone()}
    )
    hidden = out["mask"][0].bool()
    assert hidden.any() and (~hidden).any()
    assert torch.all(out["image"][:, hidden] == 0.0)
    torch.testing.assert_close(out["image"][:, ~hidden], image[:, ~hidden])


def test_reconstruction_loss_counts_only_masked_pixels() -> None:
    target = torch.zeros(1, 2, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :2] = 1.0  # 4 hidden pixels x 2 channels
    label = torch.cat([target, mask], dim=1)
    pred = torch.zeros(1, 2, 4, 4)
    pred[:, 0, 0, 0] = 2.0  # hidden: counts
    pred[:, 1, 1, 1] = -1.0  # hidden: counts
    pred[:, :, 3, 3] = 100.0  # visible: must not count
    pred.requires_grad_(True)
    loss = MaskedReconstructionLoss("l1")(pred, label)
    assert loss.item() == pytest.approx((2.0 + 1.0) / 8)
    loss.backward()
    assert torch.all(pred.grad[:, :, 3, 3] == 0) and pred.grad[0, 0, 0, 0] > 0
    assert MaskedReconstructionLoss("mse")(pred, label).item() == pytest.approx((4.0 + 1.0) / 8)
    empty = torch.cat([target, torch.zeros(1, 1, 4, 4)], dim=1)
    assert MaskedReconstructionLoss()(pred, empty).item() == 0.0
    with pytest.raises(ValueError, match="mask channel"):
        MaskedReconstructionLoss()(pred, target)


def test_inpainting_network_reconstructs_the_image_size_and_keeps_backbone_keys() -> None:
    net = InpaintingNet("resnet10", in_channels=3, decoder_channels=8)
    out = net(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 3, 64, 64)
    assert "conv1.weight" in net.backbone.state_dict()
