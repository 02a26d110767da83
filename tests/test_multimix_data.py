"""MultiMix data: adapters on hand-made real layouts, datalists, label budgets and streams, the preprocessing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from PIL import Image

from bundle.data.datalist import DatasetLayoutError, read_rejected
from bundle.data.multimix_data import (
    load_multimix_datalist,
    multimix_streams,
    prepare_multimix,
    read_kermany,
    read_segmentation,
)
from conftest import ROOT


def write_png(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


def image(value: int = 100, shape: tuple[int, int] = (12, 10)) -> np.ndarray:
    return np.full(shape, value, dtype=np.uint8)


def lung(left: bool, shape: tuple[int, int] = (12, 10)) -> np.ndarray:
    """One lung: the patient's left lung lies on the image right."""
    mask = np.zeros(shape, dtype=np.uint8)
    mask[2:9, (6 if left else 1) : (9 if left else 4)] = 255
    return mask


def kermany(root: Path, per_class: dict[str, int]) -> None:
    """A Kermany layout: NORMAL as IM-<patient>-0001, PNEUMONIA as person<N>_bacteria_<k> (2 images a patient)."""
    for split, count in per_class.items():
        first = 0 if split == "train" else 1000
        for i in range(count):
            write_png(root / split / "NORMAL" / f"IM-{first + i:04d}-0001.png", image(50 + i))
            write_png(root / split / "PNEUMONIA" / f"person{first + i // 2}_bacteria_{i}.png", image(150 + i))


def test_kermany_adapter_reads_classes_splits_and_patients_and_reports_bad_files(tmp_path: Path) -> None:
    kermany(tmp_path, {"train": 4, "test": 2})
    Image.fromarray(np.stack([image()] * 3, axis=-1)).save(tmp_path / "train" / "NORMAL" / "IM-rgb-0001.jpeg")
    (tmp_path / "train" / "NORMAL" / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "train" / "PNEUMONIA" / "notes.txt").write_text("not an image")
    (tmp_path / "test" / "PNEUMONIA" / "broken.png").write_bytes(b"\x89PNG broken")
    result = read_kermany(tmp_path)
    assert len(result.records) == 4 + 1 + 4 + 2 + 2
    by_name = {Path(r["image"]).name: r for r in result.records}
    assert by_name["IM-rgb-0001.jpeg"]["pneumonia"] == 0 and by_name["IM-rgb-0001.jpeg"]["split"] == "train"
    assert by_name["person1_bacteria_3.png"] == {
        "image": str((tmp_path / "train" / "PNEUMONIA" / "person1_bacteria_3.png").resolve()),
        "dataset": "kermany",
        "patient": "person1",
        "split": "train",
        "pneumonia": 1,
    }
    assert by_name["IM-1001-0001.png"]["patient"] == "IM-1001" and by_name["IM-1001-0001.png"]["split"] == "test"
    reasons = sorted(r.reason.split(":")[0] for r in result.rejected)
    assert reasons == ["unreadable_file", "unsupported_file"]
    with pytest.raises(DatasetLayoutError):
        read_kermany(tmp_path / "train")


def test_segmentation_adapters_read_the_jsrt_montgomery_and_shenzhen_layouts(tmp_path: Path) -> None:
    jsrt = tmp_path / "JSRT"
    for name in ("JPCLN001", "JPCNN002", "JPCNN003"):
        write_png(jsrt / "images" / f"{name}.png", image())
    write_png(jsrt / "masks" / "JPCLN001.png", lung(True))
    write_png(jsrt / "masks" / "JPCNN002.png", lung(False))
    result = read_segmentation(jsrt, "images_masks")
    assert [Path(r["mask"]).name for r in result.records] == ["JPCLN001.png", "JPCNN002.png"]
    assert result.records[0]["dataset"] == "jsrt" and result.records[0]["split"] is None
    assert [r.reason.split(":")[0] for r in result.rejected] == ["missing_mask"]

    montgomery = tmp_path / "Montgomery"
    for name in ("MCUCXR_0001_0", "MCUCXR_0002_1"):
        write_png(montgomery / "CXR_png" / f"{name}.png", image())
        write_png(montgomery / "ManualMask" / "leftMask" / f"{name}.png", lung(True))
    write_png(montgomery / "ManualMask" / "rightMask" / "MCUCXR_0001_0.png", lung(False))
    result = read_segmentation(montgomery, "montgomery")
    assert [Path(m).parent.name for m in result.records[0]["mask"]] == ["leftMask", "rightMask"]
    assert len(result.rejected) == 1 and "rightMask" in result.rejected[0].reason

    shenzhen = tmp_path / "Shenzhen"
    write_png(shenzhen / "CXR_png" / "CHNCXR_0001_0.png", image())
    write_png(shenzhen / "CXR_png" / "CHNCXR_0002_1.png", image())
    write_png(shenzhen / "mask" / "CHNCXR_0001_0_mask.png", lung(True))
    result = read_segmentation(shenzhen, "shenzhen")
    assert [r["mask"] is None for r in result.records] == [False, True]  # an image without mask: unlabeled
    with pytest.raises(DatasetLayoutError):
        read_segmentation(tmp_path, "montgomery")


@pytest.fixture()
def datalists(tmp_path: Path) -> dict[str, str]:
    kermany(tmp_path / "Kermany", {"train": 30, "test": 5})
    for i in range(30):
        write_png(tmp_path / "JSRT" / "images" / f"JPC{i:03d}.png", image(i))
        write_png(tmp_path / "JSRT" / "masks" / f"JPC{i:03d}.png", lung(i % 2 == 0))
    paths = {"classification": str(tmp_path / "lists" / "kermany.json"), "segmentation": str(tmp_path / "jsrt.json")}
    prepare_multimix("classification", tmp_path / "Kermany", paths["classification"])
    prepare_multimix("segmentation", tmp_path / "JSRT", paths["segmentation"], test_fraction=0.2, seed=1)
    return paths


def test_prepare_writes_relative_datalists_and_a_rejected_report(datalists: dict[str, str], tmp_path: Path) -> None:
    content = json.loads(Path(datalists["segmentation"]).read_text())
    assert content["task"] == "segmentation" and content["data"][0]["image"] == "JSRT/images/JPC000.png"
    assert sum(r["split"] == "test" for r in content["data"]) == 6
    header, records = load_multimix_datalist(datalists["classification"])
    assert header == {"dataset": "kermany", "task": "classification"}
    assert Path(records[0]["image"]).is_file()
    assert read_rejected(tmp_path / "jsrt.rejected.csv") == []


def test_streams_follow_the_label_budgets(datalists: dict[str, str]) -> None:
    streams = multimix_streams(datalists, cls_labels=10, seg_labels=5, val_fraction=0.1, seed=0)
    sizes = {name: len(records) for name, records in streams.items()}
    val = {kind: sum(r["stream"] == f"{kind}_labeled" for r in streams["val"]) for kind in ("cls", "seg")}
    assert (sizes["cls_labeled"], sizes["seg_labeled"], sizes["test"], val["seg"]) == (10, 5, 10 + 6, 2)
    assert sizes["cls_labeled"] + sizes["cls_unlabeled"] + val["cls"] == 60  # Kermany train images
    assert sizes["seg_labeled"] + sizes["seg_unlabeled"] + val["seg"] == 24  # JSRT images not held out for testing
    assert sorted(r["pneumonia"] for r in streams["cls_labeled"]) == [0] * 5 + [1] * 5  # class-stratified
    assert all(r["pneumonia"] is None for r in streams["cls_unlabeled"])
    assert all("mask" not in r for r in streams["seg_unlabeled"]) and all(r["mask"] for r in streams["seg_labeled"])
    val_patients = {r["patient"] for r in streams["val"]}
    train_patients = {r["patient"] for s in ("cls_labeled", "cls_unlabeled") for r in streams[s]}
    assert not val_patients & train_patients  # patient-level hold-out (two images per pneumonia patient)
    assert {r["stream"] for r in streams["test"]} == {"cls_labeled", "seg_labeled"}
    assert multimix_streams(datalists, 10, 5, seed=0)["cls_labeled"] == streams["cls_labeled"]
    everything = multimix_streams(datalists, "all", "all")
    assert len(everything["cls_unlabeled"]) == 0 and len(everything["seg_labeled"]) == 22
    with pytest.raises(ValueError, match="budget"):
        multimix_streams(datalists, cls_labels=1000)
    with pytest.raises(ValueError, match="budget"):
        multimix_streams(datalists, seg_labels="some")


def test_preprocessing_merges_lung_masks_and_scales_16_bit_images(tmp_path: Path) -> None:
    parser = ConfigParser()
    parser.read_config(ROOT / "configs" / "multimix" / "common.yaml")
    parser["image_size"] = 8
    preprocessing = parser.get_parsed_content("eval_transforms#seg_labeled")
    wide = np.zeros((12, 10), dtype=np.uint16)
    wide[:, 5:] = 4000  # a 12-bit image in a 16-bit PNG: "L" conversion would clip it to 255
    write_png(tmp_path / "x.png", wide)
    write_png(tmp_path / "left.png", lung(True))
    write_png(tmp_path / "right.png", (lung(False) > 0).astype(np.uint8))  # 0/1 masks exist too
    item = preprocessing(
        {
            "image": str(tmp_path / "x.png"),
            "mask": [str(tmp_path / "left.png"), str(tmp_path / "right.png")],
            "stream": "seg_labeled",
        }
    )
    assert item["image"].shape == (1, 8, 8) and item["mask"].shape == (1, 8, 8)
    assert float(item["image"].min()) == 0.0 and float(item["image"].max()) == 1.0
    assert set(torch.unique(item["mask"]).tolist()) == {0.0, 1.0}
    assert item["mask"][0, :, :3].any() and item["mask"][0, :, -3:].any()  # both lungs, right on the image left
