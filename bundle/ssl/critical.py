"""What a chest-radiograph classifier looks at: the numbers behind the critical evaluation (methods.md, section 5).

A good test accuracy does not make a model deployable: COVID-19 collections carry shortcuts (support devices, text
markers, projection, hospital) that a CNN learns as readily as the lung findings. Three checks, each a small
function here so that it can be tested on toy models and reused outside the script:

- :func:`shortcut_test`: accuracy on the full image, with the lungs hidden and with everything *outside* the lungs
  hidden. A model that reads the lungs collapses towards chance without them and keeps most of its accuracy with
  only them; a model that stays well above chance with the lungs hidden uses something else.
- :func:`gradcam_maps` and :func:`cam_statistics`: Grad-CAM (``monai.visualize.GradCAM``) and how much of its mass
  lies in the lung fields and in the annotated opacity boxes, against the share an uninformative map would give;
- :func:`calibration_summary` and :func:`per_class_report`: confusion, per-class recall/precision and calibration
  (top-label and one-vs-rest expected calibration error).

:func:`readout` turns the results into a short markdown read-out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from monai.visualize import GradCAM
from numpy.typing import ArrayLike
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
from torch import nn

from bundle.metrics import expected_calibration_error

__all__ = [
    "HIDE_MODES",
    "calibration_summary",
    "cam_statistics",
    "gradcam_maps",
    "hide_region",
    "per_class_report",
    "readout",
    "shortcut_test",
]

HIDE_MODES = ("none", "lungs", "outside")
# Accuracy this far above the majority-class rate (absolute) counts as "information is left" in the read-out.
_MARGIN = 0.1


def hide_region(images: torch.Tensor, lung_masks: torch.Tensor, hide: str, fill: float = 0.0) -> torch.Tensor:
    """Set the lungs (``hide="lungs"``) or everything outside them (``"outside"``) to ``fill``.

    Args:
        images: (B, C, *spatial) network inputs.
        lung_masks: (B, 1, *spatial) lung masks (non-zero = lung), on the same grid.
        hide: one of :data:`HIDE_MODES` (``"none"`` returns the images unchanged).
        fill: the value of hidden pixels; 0 is the dataset mean after the bundle's normalisation, so a hidden region
            carries no intensity cue.

    Raises:
        ValueError: for an unknown mode or masks that do not match the images.
    """
    if hide not in HIDE_MODES:
        raise ValueError(f"hide must be one of {HIDE_MODES}, got {hide!r}")
    if lung_masks.shape[0] != images.shape[0] or lung_masks.shape[2:] != images.shape[2:]:
        raise ValueError(f"lung masks {tuple(lung_masks.shape)} do not match images {tuple(images.shape)}")
    if hide == "none":
        return images
    lungs = lung_masks.to(images.device) > 0
    region = lungs if hide == "lungs" else ~lungs
    return images.masked_fill(region.expand_as(images), fill)


def shortcut_test(
    predict: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    labels: ArrayLike,
    lung_masks: torch.Tensor,
    fill: float = 0.0,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Accuracy with nothing, the lungs, or everything outside the lungs hidden.

    Args:
        predict: maps a batch of images to class scores (B, K) (logits or probabilities).
        images: (N, C, *spatial) preprocessed test images.
        labels: (N,) true class indices.
        lung_masks: (N, 1, *spatial) lung masks.
        fill: value of hidden pixels (see :func:`hide_region`).
        batch_size: images per call of ``predict``.

    Returns:
        ``{"n", "majority_rate", "accuracy": {mode: value}, "predictions": {mode: list}}`` where ``majority_rate``
        is the accuracy of always answering the most frequent true class (the "no information" level).
    """
    y = np.asarray(labels).astype(int)
    result: dict[str, Any] = {"n": int(y.size), "majority_rate": float(np.bincount(y).max() / max(y.size, 1))}
    result["accuracy"], result["predictions"] = {}, {}
    for mode in HIDE_MODES:
        predicted = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                batch = hide_region(
                    images[start : start + batch_size], lung_masks[start : start + batch_size], mode, fill
                )
                predicted.append(torch.as_tensor(predict(batch)).argmax(dim=1).cpu())
        p = torch.cat(predicted).numpy() if predicted else np.zeros(0, dtype=int)
        result["predictions"][mode] = p.tolist()
        result["accuracy"][mode] = float((p == y).mean()) if y.size else float("nan")
    return result


def gradcam_maps(
    model: nn.Module, layer: str, images: torch.Tensor, class_idx: Sequence[int] | None = None
) -> torch.Tensor:
    """Grad-CAM maps (N, 1, *spatial) in [0, 1] of ``model`` (images -> class scores) at ``layer``.

    Each image is explained for its own ``class_idx`` entry (the predicted class when ``None``), one image at a time
    so that batch norm in eval mode and per-image normalisation are unaffected by the rest of the batch.

    Args:
        model: one image tensor in, (B, K) scores out (wrap dict-output networks in ``PredOnly``).
        layer: module path of the target layer (``backbone.layer4``).
        images: (N, C, *spatial).
        class_idx: the class to explain per image.
    """
    was_training = model.training
    model.eval()
    cam = GradCAM(nn_module=model, target_layers=layer)
    maps = []
    try:
        for i in range(len(images)):
            index = None if class_idx is None else int(class_idx[i])
            maps.append(cam(images[i : i + 1], class_idx=index).detach().cpu())
    finally:
        model.train(was_training)
    return torch.cat(maps) if maps else torch.zeros(0, 1, *images.shape[2:])


def cam_statistics(cams: torch.Tensor, lung_masks: torch.Tensor, box_masks: torch.Tensor | None = None) -> dict:
    """Where the Grad-CAM mass lies, per image, against what a flat map would give.

    Args:
        cams: (N, 1, *spatial) non-negative maps.
        lung_masks: (N, 1, *spatial) lung masks.
        box_masks: (N, 1, *spatial) opacity masks, NaN-filled where unknown (optional).

    Returns:
        Per image lists: ``lung_share`` (CAM mass in the lungs), ``lung_area`` (the lungs' share of the image, what a
        flat map scores), ``peak_in_lungs``; with ``box_masks``: ``box_share``, ``box_area`` and ``peak_in_box``
        (pointing game), NaN for images without a non-empty box mask.
    """
    mass = cams.flatten(1).clamp_min(0).double()
    total = mass.sum(dim=1).clamp_min(1e-12)
    peak = mass.argmax(dim=1, keepdim=True)
    lungs = (lung_masks.flatten(1) > 0).double()
    stats = {
        "lung_share": ((mass * lungs).sum(1) / total).tolist(),
        "lung_area": lungs.mean(1).tolist(),
        "peak_in_lungs": lungs.gather(1, peak).squeeze(1).bool().tolist(),
    }
    if box_masks is not None:
        boxes = box_masks.flatten(1).double()
        valid = ~torch.isnan(boxes).any(1) & (torch.nan_to_num(boxes).sum(1) > 0)
        boxes = torch.nan_to_num(boxes) > 0.5
        nan = torch.full_like(total, float("nan"))
        stats["box_share"] = torch.where(valid, (mass * boxes).sum(1) / total, nan).tolist()
        stats["box_area"] = torch.where(valid, boxes.double().mean(1), nan).tolist()
        hit = boxes.gather(1, peak).squeeze(1).double()
        stats["peak_in_box"] = torch.where(valid, hit, nan).tolist()
    return stats


def per_class_report(labels: ArrayLike, predicted: ArrayLike, classes: Sequence[str]) -> dict[str, Any]:
    """Confusion matrix, accuracy, macro F1 and per-class precision/recall/F1/support."""
    y, p = np.asarray(labels).astype(int), np.asarray(predicted).astype(int)
    indices = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(y, p, labels=indices, zero_division=0)
    return {
        "accuracy": float((y == p).mean()) if y.size else float("nan"),
        "macro_f1": float(np.mean(f1)),
        "confusion": confusion_matrix(y, p, labels=indices).tolist(),
        "per_class": {
            name: {"precision": float(pr), "recall": float(rc), "f1": float(f), "support": int(s)}
            for name, pr, rc, f, s in zip(classes, precision, recall, f1, support, strict=True)
        },
    }


def calibration_summary(labels: ArrayLike, probabilities: ArrayLike, classes: Sequence[str], n_bins: int = 10) -> dict:
    """Top-label ECE (confidence vs correctness), one-vs-rest ECE per class, and the multi-class Brier score."""
    y = np.asarray(labels).astype(int)
    prob = np.asarray(probabilities, dtype=float)
    confidence, predicted = prob.max(axis=1), prob.argmax(axis=1)
    onehot = np.eye(len(classes))[y]
    return {
        "top_label_ece": expected_calibration_error((predicted == y).astype(int), confidence, n_bins),
        "mean_confidence": float(confidence.mean()),
        "accuracy": float((predicted == y).mean()),
        "brier": float(np.mean(np.sum((prob - onehot) ** 2, axis=1))),
        "per_class_ece": {
            name: expected_calibration_error((y == k).astype(int), prob[:, k], n_bins) for k, name in enumerate(classes)
        },
    }


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if v == v]
    return float(np.mean(finite)) if finite else float("nan")


def readout(report: dict[str, Any], classes: Sequence[str]) -> str:
    """A short markdown read-out of what the model looks at, written from the numbers (no claims beyond them).

    Args:
        report: ``{"classification": per_class_report, "calibration": calibration_summary, "shortcut":
            shortcut_test (with or without its predictions), "cam": {class: cam_statistics of that class's samples}}``.
        classes: class names.
    """
    shortcut, calibration = report["shortcut"], report["calibration"]
    accuracy, majority = shortcut["accuracy"], shortcut["majority_rate"]
    lines = ["## What the model looks at", ""]
    lines.append(
        f"Test accuracy {accuracy['none']:.2f} (n = {shortcut['n']}; always answering the most frequent class gives "
        f"{majority:.2f}). With the lungs hidden: {accuracy['lungs']:.2f}; with everything outside the lungs hidden: "
        f"{accuracy['outside']:.2f}."
    )
    if accuracy["none"] <= majority + _MARGIN:
        lines.append(
            "- The model itself is hardly above the no-information level, so the masking tests below say little "
            "about what it relies on."
        )
    if accuracy["lungs"] > majority + _MARGIN:
        lines.append(
            f"- **Shortcut warning**: with the lungs hidden the model is still {accuracy['lungs'] - majority:.2f} "
            "above the no-information level, so part of its decision rests on image content outside the lung fields "
            "(devices, markers, body habitus, acquisition)."
        )
    else:
        lines.append(
            "- Hiding the lungs brings the model down to the no-information level: this test found no shortcut "
            "outside the lungs."
        )
    if accuracy["outside"] >= accuracy["none"] - _MARGIN:
        lines.append("- With only the lungs visible it keeps most of its accuracy: the lung fields carry its evidence.")
    else:
        lines.append(
            f"- With only the lungs visible it loses {accuracy['none'] - accuracy['outside']:.2f} of accuracy: it "
            "depends on context outside the lungs, or on the masked image being unlike its training images."
        )
    for mode, what in (("lungs", "lungs hidden"), ("outside", "only the lungs visible")):
        predicted = shortcut.get("predictions", {}).get(mode)
        if predicted:
            top = int(np.bincount(predicted).argmax())
            share = float(np.mean(np.asarray(predicted) == top))
            if share >= 0.9:
                lines.append(
                    f"- With {what} it answers **{classes[top]}** for {share:.0%} of the images: the masked inputs are "
                    "far from its training images, so that arm of the test measures this shift more than the evidence."
                )
    cam = [report["cam"][c] for c in classes if report["cam"].get(c, {}).get("lung_share")]
    if cam:
        share = _mean([v for c in cam for v in c["lung_share"]])
        area = _mean([v for c in cam for v in c["lung_area"]])
        if share > area + 0.05:
            lines.append(
                f"- Grad-CAM mass is concentrated on the lung fields ({share:.2f} of it on {area:.2f} of the image)."
            )
        else:
            lines.append(
                f"- Grad-CAM mass is not concentrated on the lung fields ({share:.2f} of it on {area:.2f} of the "
                "image, what a flat map gives)."
            )
    lines += [
        "",
        "| class | recall | precision | Grad-CAM mass in lungs (lung area) | in boxes (box area) | peak in a box |",
        "|---|---|---|---|---|---|",
    ]
    for name in classes:
        scores = report["classification"]["per_class"][name]
        cam = report["cam"].get(name, {})
        box = (
            f"{_mean(cam.get('box_share', [])):.2f} ({_mean(cam.get('box_area', [])):.2f})"
            if cam.get("box_share") and _mean(cam["box_share"]) == _mean(cam["box_share"])
            else "n/a"
        )
        peak = f"{_mean(cam.get('peak_in_box', [])):.2f}" if box != "n/a" else "n/a"
        lungs = f"{_mean(cam.get('lung_share', [])):.2f} ({_mean(cam.get('lung_area', [])):.2f})" if cam else "n/a"
        lines.append(f"| {name} | {scores['recall']:.2f} | {scores['precision']:.2f} | {lungs} | {box} | {peak} |")
    worst = min(classes, key=lambda c: report["classification"]["per_class"][c]["recall"])
    confusion = np.asarray(report["classification"]["confusion"])
    row = confusion[list(classes).index(worst)].copy()
    row[list(classes).index(worst)] = -1
    lines += [
        "",
        f"- Weakest class: **{worst}** (recall {report['classification']['per_class'][worst]['recall']:.2f}), most "
        f"often called **{classes[int(row.argmax())]}**.",
        f"- Calibration: mean confidence {calibration['mean_confidence']:.2f} for an accuracy of "
        f"{calibration['accuracy']:.2f} (top-label ECE {calibration['top_label_ece']:.3f}); the model is "
        f"{'over' if calibration['mean_confidence'] > calibration['accuracy'] else 'under'}-confident.",
    ]
    return "\n".join(lines) + "\n"
