"""Critical evaluation of a fine-grained COVID-19 appearance model: what does it look at, and can it be trusted?

Reads the same bundle config as training (``configs/ssl/finetune.yaml`` plus the same overrides), loads the trained
weights and, on the test split:

- per-class confusion, precision/recall/F1 and calibration (top-label and one-vs-rest ECE, Brier score);
- the shortcut test: accuracy with the lungs hidden and with everything outside the lungs hidden (lung masks from the
  bundle's classical lung-field step, as a deployment would have them);
- Grad-CAM (``monai.visualize.GradCAM`` on the encoder's deepest feature map) for every test image: share of the map
  in the lungs and in the annotated opacity boxes, and overlays (PNG) for a few images of each class;
- ``metrics.json`` with all numbers and ``readout.md``, a short generated read-out.

Usage::

    python scripts/critical_eval.py --config_file configs/ssl/finetune.yaml --out eval/ssl \\
        [--checkpoint models/ssl/finetune/model.pt] [--samples 3] [--cam_stride 16] [--no-figures] \\
        [--<config id> <value> ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from matplotlib.figure import Figure
from monai.bundle import ConfigParser
from monai.data import DataLoader, PersistentDataset
from monai.data.utils import pickle_hashing
from monai.transforms import Compose, SelectItemsd
from PIL import Image
from sklearn.calibration import calibration_curve

from bundle.engine.checkpoint import load_checkpoint
from bundle.metrics import to_jsonable
from bundle.networks.segmentation import PredOnly
from bundle.plots import plot_confusion
from bundle.ssl.critical import (
    calibration_summary,
    cam_statistics,
    gradcam_maps,
    hide_region,
    per_class_report,
    readout,
    shortcut_test,
)
from bundle.ssl.finetune import OpacityDice
from bundle.tasks import TaskSet
from bundle.transforms.labels import PackLabelsd

logger = logging.getLogger("critical_eval")
DPI = 72


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, dict[str, Any]]:
    """Known options, plus ``--<config id> <value>`` pairs (YAML-parsed) as config overrides, as monai.bundle does."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config_file", default="configs/ssl/finetune.yaml", help="config file or list, as in run")
    parser.add_argument("--checkpoint", default=None, help="trained weights (default: <ckpt_dir>/model.pt)")
    parser.add_argument("--out", default="eval/ssl", help="output folder")
    parser.add_argument("--split", default="test", choices=["test", "val"], help="which split to evaluate")
    parser.add_argument("--samples", type=int, default=3, help="Grad-CAM overlays per class")
    parser.add_argument("--cam_stride", type=int, default=None, help="Grad-CAM layer by stride (default: deepest)")
    parser.add_argument("--no-figures", dest="figures", action="store_false", help="numbers only, no PNGs")
    args, rest = parser.parse_known_args(argv)
    if len(rest) % 2 or not all(k.startswith("--") for k in rest[::2]):
        parser.error(f"config overrides must be --<id> <value> pairs, got {rest}")
    overrides = {k[2:]: yaml.safe_load(v) for k, v in zip(rest[::2], rest[1::2], strict=True)}
    return args, overrides


def load_config(config_file: str, overrides: dict[str, Any]) -> ConfigParser:
    """The bundle config with overrides applied and its ``initialize`` run (makes the demo datalist if needed)."""
    files = yaml.safe_load(config_file) if config_file.startswith("[") else config_file
    parser = ConfigParser()
    parser.read_config(files)
    parser.update(overrides)
    parser.get_parsed_content("initialize")
    return parser


def collect(parser: ConfigParser, split: str) -> dict[str, Any]:
    """Preprocessed images, packed labels, lung masks and opacity masks of a split, with the records."""
    tasks = TaskSet(parser.get_parsed_content("tasks"))
    records = parser.get_parsed_content("splits")[split]
    keep = SelectItemsd(["image", "label", "lung_mask", "seg"])
    transform = Compose([*parser.get_parsed_content("preprocessing_transforms"), PackLabelsd(tasks), keep])
    dataset = PersistentDataset(
        records, transform, cache_dir=parser.get_parsed_content("cache_dir"), hash_transform=pickle_hashing
    )
    batches = list(DataLoader(dataset, batch_size=16, num_workers=0))

    def stack(key: str) -> torch.Tensor:
        return torch.cat([b[key] for b in batches]).as_subclass(torch.Tensor)

    return {
        "records": records,
        "image": stack("image"),
        "label": stack("label")[:, 0].long().numpy(),
        "lung_mask": stack("lung_mask"),
        "seg": stack("seg"),
    }


def shrink_png(path: Path, colors: int = 64) -> Path:
    """Re-save a PNG with an adaptive palette: figures for the docs stay a few tens of kB."""
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)
    return path


def save_png(fig: Figure, path: Path) -> Path:
    """Write a figure as a palette PNG at :data:`DPI`."""
    fig.savefig(path, dpi=DPI)
    return shrink_png(path)


def _overlay(ax: Any, image: np.ndarray, cam: np.ndarray, lungs: np.ndarray, boxes: np.ndarray, title: str) -> None:
    """A radiograph with its Grad-CAM (colour), the lung outline (cyan) and the opacity boxes (white)."""
    ax.imshow(image, cmap="gray")
    ax.imshow(cam, cmap="jet", alpha=0.35, vmin=0.0, vmax=1.0)
    ax.contour(lungs, levels=[0.5], colors="cyan", linewidths=0.6)
    if np.isfinite(boxes).all() and boxes.any():
        ax.contour(boxes, levels=[0.5], colors="white", linewidths=0.8, linestyles="dashed")
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def plot_gradcam(
    data: dict, cams: torch.Tensor, probs: np.ndarray, classes: list[str], out: Path, n: int
) -> list[Path]:
    """One PNG per class: ``n`` test images of that class with their Grad-CAM of the predicted class."""
    paths = []
    for k, name in enumerate(classes):
        index = np.flatnonzero(data["label"] == k)[:n]
        if index.size == 0:
            continue
        fig = Figure(figsize=(2.0 * index.size, 2.3))
        axes = np.atleast_1d(fig.subplots(1, index.size))
        for ax, i in zip(axes, index, strict=True):
            image = data["image"][i].mean(0).numpy()
            predicted = classes[int(probs[i].argmax())]
            title = f"true {name}\npred {predicted} ({probs[i].max():.2f})"
            _overlay(ax, image, cams[i, 0].numpy(), data["lung_mask"][i, 0].numpy(), data["seg"][i, 0].numpy(), title)
        fig.tight_layout()
        paths.append(out / f"gradcam_{name}.png")
        save_png(fig, paths[-1])
    return paths


def plot_shortcut(data: dict, shortcut: dict, out: Path) -> Path:
    """The three inputs of the shortcut test for one image, and the accuracy under each."""
    i = int(np.flatnonzero(data["label"] > 0)[0]) if (data["label"] > 0).any() else 0
    fig = Figure(figsize=(8.0, 2.3))
    axes = fig.subplots(1, 4)
    titles = {"none": "full image", "lungs": "lungs hidden", "outside": "outside hidden"}
    for ax, mode in zip(axes[:3], titles, strict=True):
        hidden = hide_region(data["image"][i : i + 1], data["lung_mask"][i : i + 1], mode)
        ax.imshow(hidden[0].mean(0).numpy(), cmap="gray")
        ax.set_title(titles[mode], fontsize=8)
        ax.axis("off")
    values = [shortcut["accuracy"][m] for m in titles]
    axes[3].bar(range(3), values, color=["grey", "tab:red", "tab:blue"])
    axes[3].axhline(shortcut["majority_rate"], color="black", linestyle=":", linewidth=1, label="majority class")
    axes[3].set_xticks(range(3), ["full", "no lungs", "lungs only"], fontsize=7)
    axes[3].set_ylim(0, 1)
    axes[3].set_title("test accuracy", fontsize=8)
    axes[3].legend(fontsize=6)
    axes[3].tick_params(labelsize=7)
    fig.tight_layout()
    return save_png(fig, out / "shortcut.png")


def plot_reliability(labels: np.ndarray, probs: np.ndarray, out: Path, n_bins: int = 8) -> Path:
    """Top-label reliability diagram: accuracy against confidence, with the confidence histogram below."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(int)
    fig = Figure(figsize=(3.2, 3.4))
    ax, hist = fig.subplots(2, 1, gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], ":", color="grey")
    if np.unique(correct).size > 1:
        accuracy, mean_confidence = calibration_curve(correct, confidence, n_bins=n_bins, strategy="uniform")
        ax.plot(mean_confidence, accuracy, "o-", color="tab:blue")
    ax.set_ylabel("accuracy", fontsize=8)
    ax.set_title("top-label reliability", fontsize=8)
    hist.hist(confidence, bins=n_bins, range=(0, 1), color="tab:blue", alpha=0.6)
    hist.set_xlabel("confidence", fontsize=8)
    for a in (ax, hist):
        a.tick_params(labelsize=7)
    fig.tight_layout()
    return save_png(fig, out / "reliability.png")


def evaluate(
    parser: ConfigParser,
    checkpoint: str | None,
    out: Path,
    split: str,
    samples: int,
    figures: bool,
    cam_stride: int | None = None,
) -> dict:
    """Run every check on ``split`` and write ``metrics.json``, ``readout.md`` and (optionally) the figures.

    Grad-CAM is taken at the encoder's deepest map unless ``cam_stride`` names a shallower one: at small input sizes
    the deepest map has very few cells (2 x 2 at 64 px), a stride-16 map four times as many.
    """
    out.mkdir(parents=True, exist_ok=True)
    classes = TaskSet(parser.get_parsed_content("tasks")).tasks[0].classes
    network = parser.get_parsed_content("network_def")
    checkpoint = checkpoint or os.path.join(parser.get_parsed_content("ckpt_dir"), "model.pt")
    network.load_state_dict(load_checkpoint(checkpoint))
    model = PredOnly(network).eval()
    data = collect(parser, split)
    with torch.no_grad():
        probs = torch.cat([torch.softmax(model(b), dim=1) for b in data["image"].split(32)]).numpy()
    predicted = probs.argmax(axis=1)
    layer = network.cam_layer
    if cam_stride is not None:
        taps = {tap.stride: tap.name for tap in network.pyramid.taps}
        if cam_stride not in taps:
            raise ValueError(f"no feature map at stride {cam_stride}; strides: {sorted(taps)}")
        layer = f"backbone.{taps[cam_stride]}"
    cams = gradcam_maps(model, f"network.{layer}", data["image"], class_idx=predicted.tolist())
    stats = cam_statistics(cams, data["lung_mask"], data["seg"])
    per_class_cam = {
        name: {key: [values[i] for i in np.flatnonzero(data["label"] == k)] for key, values in stats.items()}
        for k, name in enumerate(classes)
    }
    report = {
        "checkpoint": str(checkpoint),
        "cam_layer": layer,
        "split": split,
        "n": len(data["records"]),
        "classification": per_class_report(data["label"], predicted, classes),
        "calibration": calibration_summary(data["label"], probs, classes),
        "shortcut": shortcut_test(model, data["image"], data["label"], data["lung_mask"]),
        "cam": per_class_cam,
    }
    if network.decoder is not None:
        report["opacity_dice"] = _pooled_dice(network, data)
    text = readout(report, classes)
    (out / "readout.md").write_text(text)
    (out / "metrics.json").write_text(json.dumps(to_jsonable(report), indent=1) + "\n")
    if figures:
        plot_gradcam(data, cams, probs, classes, out, samples)
        shrink_png(plot_confusion(data["label"], predicted, classes, out / "confusion.png"))
        plot_reliability(data["label"], probs, out)
        plot_shortcut(data, report["shortcut"], out)
    return report


def _pooled_dice(network: torch.nn.Module, data: dict) -> float:
    """Pooled Dice of the thresholded opacity masks over the images that carry a mask (as in validation)."""
    metric = OpacityDice(output_transform=lambda output: output)
    with torch.no_grad():
        for images, masks in zip(data["image"].split(32), data["seg"].split(32), strict=True):
            metric.update((network(images)["seg"], masks))
    return metric.compute()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    args, overrides = parse_args(argv)
    parser = load_config(args.config_file, overrides)
    report = evaluate(parser, args.checkpoint, Path(args.out), args.split, args.samples, args.figures, args.cam_stride)
    shortcut = report["shortcut"]["accuracy"]
    logger.info(
        f"{args.split}: accuracy {report['classification']['accuracy']:.3f}, macro F1 "
        f"{report['classification']['macro_f1']:.3f}; lungs hidden {shortcut['lungs']:.3f}, outside hidden "
        f"{shortcut['outside']:.3f}; written to {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
