"""The critical-evaluation checks on toy models whose behaviour is known by construction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bundle.networks.segmentation import PredOnly, SegmentationMultiHeadNet
from bundle.ssl.critical import (
    calibration_summary,
    cam_statistics,
    gradcam_maps,
    hide_region,
    per_class_report,
    readout,
    shortcut_test,
)

CLASSES = ["negative", "typical", "indeterminate", "atypical"]


def _toy_data(n: int = 40) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """Images whose class shows twice: as the brightness of the lungs *and* of the region outside them."""
    generator = torch.Generator().manual_seed(0)
    labels = np.arange(n) % 4
    lungs = torch.zeros(n, 1, 16, 16)
    lungs[:, :, 4:12, 2:7] = 1
    lungs[:, :, 4:12, 9:14] = 1
    level = torch.as_tensor(labels, dtype=torch.float32).view(n, 1, 1, 1) + 1.0
    images = level + 0.05 * torch.randn(n, 3, 16, 16, generator=generator)
    return images, labels, lungs


def _reader(region: str, lungs: torch.Tensor) -> torch.nn.Module:
    """A 'model' that reads the class from the mean brightness of one region only (hidden pixels are 0)."""

    class Reader(torch.nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            inside = lungs[: len(images)].expand_as(images) > 0
            where = inside if region == "lungs" else ~inside
            level = (images * where).sum(dim=(1, 2, 3)) / where.sum(dim=(1, 2, 3))
            return -((level[:, None] - 1.0 - torch.arange(4.0)) ** 2)  # closest class level wins

    return Reader()


def test_a_model_reading_outside_the_lungs_loses_nothing_when_the_lungs_are_hidden() -> None:
    images, labels, lungs = _toy_data()
    result = shortcut_test(_reader("outside", lungs), images, labels, lungs, batch_size=7)
    assert result["accuracy"] == {"none": 1.0, "lungs": 1.0, "outside": 0.25}
    assert result["majority_rate"] == 0.25 and result["n"] == 40
    text = readout(_report(result, labels), CLASSES)
    assert "Shortcut warning" in text


def test_a_model_reading_the_lungs_collapses_when_they_are_hidden() -> None:
    images, labels, lungs = _toy_data()
    result = shortcut_test(_reader("lungs", lungs), images, labels, lungs)
    assert result["accuracy"] == {"none": 1.0, "lungs": 0.25, "outside": 1.0}
    text = readout(_report(result, labels), CLASSES)
    assert "Shortcut warning" not in text and "lung fields carry its evidence" in text


def _report(shortcut: dict, labels: np.ndarray) -> dict:
    predicted = np.asarray(shortcut["predictions"]["none"])
    probs = np.eye(4)[predicted] * 0.7 + 0.075
    return {
        "shortcut": shortcut,
        "classification": per_class_report(labels, predicted, CLASSES),
        "calibration": calibration_summary(labels, probs, CLASSES),
        "cam": {},
    }


def test_hiding_sets_exactly_one_region_to_the_fill_value() -> None:
    images, _, lungs = _toy_data(4)
    no_lungs = hide_region(images, lungs, "lungs", fill=-9.0)
    assert torch.all(no_lungs[lungs.expand_as(images) > 0] == -9.0)
    torch.testing.assert_close(no_lungs[lungs.expand_as(images) == 0], images[lungs.expand_as(images) == 0])
    only_lungs = hide_region(images, lungs, "outside", fill=-9.0)
    assert torch.all(only_lungs[lungs.expand_as(images) == 0] == -9.0)
    assert torch.equal(hide_region(images, lungs, "none"), images)
    with pytest.raises(ValueError, match="hide"):
        hide_region(images, lungs, "heart")


def test_cam_statistics_against_known_maps() -> None:
    lungs = torch.zeros(2, 1, 10, 10)
    lungs[:, :, 2:8, 1:9] = 1
    boxes = torch.zeros(2, 1, 10, 10)
    boxes[0, :, 3:5, 2:4] = 1
    boxes[1] = float("nan")  # no segmentation label
    cams = lungs.clone()
    cams[0, 0, 3, 2] = 5.0  # the peak sits in the box
    stats = cam_statistics(cams, lungs, boxes)
    assert stats["lung_share"] == pytest.approx([1.0, 1.0])
    assert stats["lung_area"] == pytest.approx([0.48, 0.48])
    assert stats["peak_in_lungs"] == [True, True]
    assert stats["box_share"][0] == pytest.approx((5.0 + 3.0) / (48 + 4)) and np.isnan(stats["box_share"][1])
    assert stats["peak_in_box"][0] == 1.0 and stats["box_area"][0] == pytest.approx(0.04)


def test_confusion_and_calibration_numbers() -> None:
    labels = np.array([0, 0, 1, 1, 2, 3])
    predicted = np.array([0, 1, 1, 1, 2, 2])
    report = per_class_report(labels, predicted, CLASSES)
    assert report["confusion"][0] == [1, 1, 0, 0] and report["confusion"][3] == [0, 0, 1, 0]
    assert report["per_class"]["typical"]["recall"] == 1.0 and report["per_class"]["typical"]["precision"] == 2 / 3
    assert report["accuracy"] == pytest.approx(4 / 6)
    sure = calibration_summary(labels, np.eye(4)[labels], CLASSES)
    assert sure["top_label_ece"] == 0.0 and sure["brier"] == 0.0
    overconfident = calibration_summary(labels, np.eye(4)[predicted], CLASSES)
    assert overconfident["top_label_ece"] == pytest.approx(2 / 6) and overconfident["mean_confidence"] == 1.0


def test_gradcam_of_the_segmentation_network_is_a_normalised_map_per_image() -> None:
    torch.manual_seed(0)
    net = SegmentationMultiHeadNet("resnet10", [{"name": "a", "classes": CLASSES, "target": "covid_appearance"}])
    model = PredOnly(net)
    cams = gradcam_maps(model, f"network.{net.cam_layer}", torch.randn(2, 3, 64, 64), class_idx=[0, 3])
    assert cams.shape == (2, 1, 64, 64)
    assert float(cams.min()) >= 0.0 and float(cams.max()) <= 1.0
    assert model.training  # the mode is restored
