"""Segmentation and detection metrics over a set of images."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from model.decision import MaskRule

_PIXEL_AUROC_MAX = 4_000_000  # subsample pixels beyond this (seeded), to bound memory


def iou(pred: np.ndarray, target: np.ndarray) -> float:
    """Intersection over union; two empty masks agree perfectly (1.0)."""
    union = np.logical_or(pred, target).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, target).sum() / union)


def dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice coefficient; two empty masks agree perfectly (1.0)."""
    total = pred.sum() + target.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(pred, target).sum() / total)


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    if labels.min() == labels.max():
        return None  # undefined with a single class
    return float(roc_auc_score(labels, scores))


def _pixel_auroc(
    probs: Sequence[np.ndarray], targets: Sequence[np.ndarray], seed: int
) -> float | None:
    flat_p = np.concatenate([p.ravel() for p in probs])
    flat_t = np.concatenate([t.ravel() for t in targets]).astype(np.uint8)
    if flat_p.size > _PIXEL_AUROC_MAX:
        pick = np.random.default_rng(seed).choice(flat_p.size, _PIXEL_AUROC_MAX, replace=False)
        flat_p, flat_t = flat_p[pick], flat_t[pick]
    return _auroc(flat_t, flat_p)


def segmentation_report(
    probs: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    types: Sequence[str],
    *,
    threshold: float,
    min_area: int = 0,
    seed: int = 0,
    with_auroc: bool = True,
) -> dict[str, Any]:
    """miou / dice over defective images, empty_accuracy over defect-free ones, image and
    pixel AUROC, and a per-defect-type breakdown. Masks follow `MaskRule(threshold,
    min_area)`. AUROCs are None where undefined, or skipped with `with_auroc=False` (they
    do not depend on the mask rule, so calibration need not pay for them per rule)."""
    rule = MaskRule(threshold, min_area)
    ious, dices, empties, scores, labels = [], [], [], [], []
    per_type: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for prob, target, kind in zip(probs, targets, types, strict=True):
        pred = rule.binarize(prob)
        defective = bool(target.any())
        scores.append(float(prob.max()))
        labels.append(int(defective))
        if defective:
            ious.append(iou(pred, target))
            dices.append(dice(pred, target))
            per_type[kind]["iou"].append(ious[-1])
            per_type[kind]["dice"].append(dices[-1])
        else:
            empties.append(float(not pred.any()))
            per_type[kind]["empty"].append(empties[-1])
    image_auroc = pixel_auroc = None
    if with_auroc:
        image_auroc = _auroc(np.array(labels), np.array(scores))
        pixel_auroc = _pixel_auroc(probs, targets, seed)

    def mean(values: list[float]) -> float | None:
        return float(np.mean(values)) if values else None

    return {
        "miou": mean(ious),
        "dice": mean(dices),
        "empty_accuracy": mean(empties),
        "image_auroc": image_auroc,
        "pixel_auroc": pixel_auroc,
        "count": len(labels),
        "defective": len(ious),
        "threshold": threshold,
        "min_area": min_area,
        "per_type": {
            kind: {name: mean(vals) for name, vals in stats.items()}
            | {"count": max(len(v) for v in stats.values())}
            for kind, stats in sorted(per_type.items())
        },
    }


def review_score(report: dict[str, Any]) -> float:
    """One number to rank models: mean IoU over defective and empty accuracy over clean
    images, weighted by their counts (an empty image predicted empty counts as IoU 1)."""
    n_def = report["defective"]
    n_good = report["count"] - n_def
    total = (report["miou"] or 0.0) * n_def + (report["empty_accuracy"] or 0.0) * n_good
    return total / max(report["count"], 1)
