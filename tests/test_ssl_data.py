"""SIIM-FISABIO-RSNA data: the adapter on the published layout (good and bad rows), box masks, appearance patterns."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from bundle.data.datalist import load_datalist, read_rejected, rejected_report_path
from bundle.data.phantom import make_phantom, sample_anatomy
from bundle.data.siim_covid import APPEARANCE_COLUMNS, parse_boxes, prepare_siim_covid, siim_split
from bundle.data.synthetic import MANUFACTURER_PROTOCOLS, write_cxr_dicom
from bundle.data.synthetic_siim import draw_appearance
from bundle.tasks import TaskSet
from bundle.transforms.boxes import BoxesToMask, BoxesToMaskd


def _write_layout(root: Path, studies: list[tuple[str, list[int]]], images: list[dict[str, str]]) -> None:
    """A SIIM layout by hand: study CSV, image CSV and one small DICOM per image row (unless ``file`` is "")."""
    acquisition = MANUFACTURER_PROTOCOLS["Borealis Medical"][1]
    with open(root / "train_study_level.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", *APPEARANCE_COLUMNS])
        for study, flags in studies:
            writer.writerow([f"{study}_study", *flags])
    with open(root / "train_image_level.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["id", "boxes", "label", "StudyInstanceUID"])
        writer.writeheader()
        for row in images:
            writer.writerow({k: row[k] for k in writer.fieldnames})
            if row.get("file", "yes"):
                folder = root / "train" / row.get("folder", row["StudyInstanceUID"]) / "series1"
                folder.mkdir(parents=True, exist_ok=True)
                image = np.random.default_rng(0).random((40, 32))
                write_cxr_dicom(
                    folder / f"{row['id'].removesuffix('_image')}.dcm", image, acquisition, patient_name="SYNTH^X",
                    patient_id="SYNTH-X", pixel_spacing_mm=(0.2, 0.2), uid_key=row["id"],
                )  # fmt: skip


BOX = "[{'x': 2.5, 'y': 4, 'width': 10, 'height': 12}]"
LABEL = "opacity 1 2.5 4 12.5 16"
NONE = "none 1 0 0 1 1"


def test_adapter_reads_the_layout_and_reports_each_bad_row(tmp_path: Path) -> None:
    studies = [
        ("s1", [0, 1, 0, 0]), ("s2", [1, 0, 0, 0]), ("s3", [0, 0, 0, 1]), ("s4", [0, 1, 1, 0]), ("s5", [0, 0, 1, 0]),
        ("s1", [0, 1, 0, 0]),
    ]  # fmt: skip
    images = [
        {"id": "i1_image", "boxes": BOX, "label": LABEL, "StudyInstanceUID": "s1"},  # typical, annotated
        {"id": "i2_image", "boxes": "", "label": NONE, "StudyInstanceUID": "s1"},  # typical, not annotated
        {"id": "i3_image", "boxes": "", "label": NONE, "StudyInstanceUID": "s2"},  # negative: known empty
        {"id": "i4_image", "boxes": "[{'x': 1}]", "label": LABEL, "StudyInstanceUID": "s3"},  # bad box
        {"id": "i5_image", "boxes": BOX, "label": LABEL, "StudyInstanceUID": "s4"},  # study label not one-hot
        {"id": "i6_image", "boxes": BOX, "label": LABEL, "StudyInstanceUID": "s5", "file": ""},  # no DICOM
        {"id": "i7_image", "boxes": BOX, "label": LABEL, "StudyInstanceUID": "s2"},  # boxes on a negative study
        {"id": "i8_image", "boxes": BOX, "label": NONE, "StudyInstanceUID": "s3"},  # label disagrees with boxes
        {"id": "i9_image", "boxes": "", "label": NONE, "StudyInstanceUID": "s5", "folder": "s3"},  # wrong folder
    ]
    _write_layout(tmp_path, studies, images)
    out = tmp_path / "siim.json"
    result = prepare_siim_covid(tmp_path, out, n_folds=2)
    records = {Path(r["image"]).stem: r for r in result.records}
    assert set(records) == {"i1", "i2", "i3"}
    assert records["i1"]["appearance"] == 1 and records["i1"]["opacity_boxes"] == [[2.5, 4.0, 10.0, 12.0]]
    assert records["i2"]["opacity_boxes"] is None  # positive study, image without boxes: unknown, not empty
    assert records["i3"]["appearance"] == 0 and records["i3"]["opacity_boxes"] == []
    assert records["i1"]["patient"] == records["i2"]["patient"] == "s1"  # the study groups the folds
    reasons = {r.image: r.reason.split(":")[0] for r in read_rejected(rejected_report_path(out))}
    assert reasons == {
        "s1_study": "duplicate_study", "s4_study": "bad_study_label", "i4_image": "bad_boxes",
        "i5_image": "unknown_study", "i6_image": "missing_file", "i7_image": "label_mismatch",
        "i8_image": "label_mismatch", "i9_image": "wrong_folder",
    }  # fmt: skip
    header, listed = load_datalist(out)
    assert header["dataset"] == "siim_covid" and len(listed) == 3
    assert TaskSet([{"name": "a", "classes": list("ntia"), "target": "covid_appearance"}]).pack(listed[0]).shape == (1,)


def test_box_cells_are_parsed_safely() -> None:
    assert parse_boxes("") == [] and parse_boxes("nan") == []
    assert parse_boxes("[{'x': 1, 'y': 2, 'width': 3, 'height': 4}]") == [[1.0, 2.0, 3.0, 4.0]]
    for bad in ("__import__('os')", "[{'x': 1, 'y': 2, 'width': 0, 'height': 4}]", "{'x': 1}", "[1, 2]"):
        with pytest.raises(Exception, match="bad_boxes"):
            parse_boxes(bad)


def test_split_budget_draws_per_class_and_pretraining_never_sees_the_test_fold(tmp_path: Path) -> None:
    studies = [(f"s{i}", [int(i % 4 == k) for k in range(4)]) for i in range(24)]
    images = [{"id": f"i{i}_image", "boxes": "", "label": NONE, "StudyInstanceUID": f"s{i}"} for i in range(24)]
    for row, (_, flags) in zip(images, studies, strict=True):
        if flags[0] == 0:
            row.update(boxes=BOX, label=LABEL)
    _write_layout(tmp_path, studies, images)
    prepare_siim_covid(tmp_path, tmp_path / "siim.json", n_folds=3)
    split = siim_split(tmp_path / "siim.json", fold=0, label_budget=1, seed=0)
    assert sorted(r["appearance"] for r in split["train"]) == [0, 1, 2, 3]
    test_images = {r["image"] for r in split["test"]}
    assert test_images and not test_images & {r["image"] for r in split["unlabeled"]}
    assert len(split["unlabeled"]) == 24 - len(test_images)


def test_boxes_become_a_filled_mask_and_unknown_boxes_a_nan_mask() -> None:
    mask = BoxesToMask()([[1.5, 2.0, 2.0, 1.0], [-3, 5, 5, 10]], (8, 6))
    expected = torch.zeros(1, 8, 6)
    expected[0, 2:3, 1:4] = 1  # x 1.5..3.5 covers columns 1-3, y 2..3 covers row 2
    expected[0, 5:8, 0:2] = 1  # clipped to the image
    assert torch.equal(mask, expected)
    assert BoxesToMask()([], (4, 4)).sum() == 0
    assert torch.isnan(BoxesToMask()(None, (4, 4))).all()
    image = MetaTensor(torch.zeros(1, 8, 6), affine=torch.diag(torch.tensor([2.0, 2.0, 1.0, 1.0])))
    out = BoxesToMaskd("opacity_boxes", ref_key="image", mask_key="seg")({"image": image, "opacity_boxes": []})
    assert out["seg"].shape == (1, 8, 6) and torch.equal(out["seg"].affine, image.affine)
    assert "seg" not in BoxesToMaskd("opacity_boxes", allow_missing_keys=True)({"image": image})


def _centre_columns(boxes: list[list[float]]) -> np.ndarray:
    return np.array([x + w / 2 for x, _, w, _ in boxes])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_appearance_patterns_follow_their_definitions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    anatomy = sample_anatomy(rng)
    _, lungs = make_phantom(rng, (160, 140), anatomy=anatomy)
    midline = anatomy.center[1] * 140
    rows = np.nonzero(lungs.any(axis=1))[0]
    lung_top, lung_height = rows.min(), rows.max() - rows.min()

    opacity, boxes, pattern = draw_appearance(rng, 0, lungs, anatomy)
    assert pattern == "negative" and boxes == [] and not opacity.any()

    opacity, boxes, pattern = draw_appearance(rng, 1, lungs, anatomy)
    centres = _centre_columns(boxes)
    assert (centres < midline).any() and (centres > midline).any()  # bilateral
    assert all(y + h / 2 > lung_top + 0.45 * lung_height for _, y, _, h in boxes)  # lower zones
    assert opacity[~lungs].max() < 0.05 * opacity.max()  # inside the lungs

    _, boxes, pattern = draw_appearance(rng, 3, lungs, anatomy)
    assert pattern in ("atypical_lobar", "atypical_nodular") and boxes
    if pattern == "atypical_lobar":
        assert len(boxes) == 1
    for appearance in (2, 3):
        _, boxes, pattern = draw_appearance(rng, appearance, lungs, anatomy)
        if pattern in ("indeterminate_unilateral", "indeterminate_upper", "atypical_lobar"):
            sides = _centre_columns(boxes) < midline
            assert sides.all() or not sides.any()  # one lung
    assert all(math.isfinite(v) and v >= 0 for box in boxes for v in box)
