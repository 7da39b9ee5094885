"""How well regions are typed: predicted regions matched to true regions, then compared.

Each true region is matched to the predicted region that covers most of its pixels (none:
missed, which the segmentation metrics already count). Over the matched pairs:
`type_accuracy`, `type_macro_f1` (over the true types present) and a confusion matrix;
and per type, the IoU / Dice of its pixels (true pixels of the type against pixels
predicted as it), averaged over the images where either has the type.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import f1_score

from model.metrics import dice, iou


@dataclass
class TypedRegions:
    """One image's regions: int32 labels (region i is label i + 1) and their types."""

    labels: np.ndarray
    types: list[str]


@dataclass
class TypeTally:
    """Matched (true, predicted) type pairs and per-type pixel scores, image by image."""

    pairs: list[tuple[str, str]] = field(default_factory=list)
    pixel_iou: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    pixel_dice: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def add(self, truth: TypedRegions, pred: TypedRegions) -> None:
        """Match and score one image."""
        for i, true_type in enumerate(truth.types):
            covered = pred.labels[truth.labels == i + 1]
            covered = covered[covered > 0]
            if covered.size:
                best = Counter(covered.tolist()).most_common(1)[0][0]
                self.pairs.append((true_type, pred.types[best - 1]))
        for name in set(truth.types) | set(pred.types):
            t = _pixels_of(truth, name)
            p = _pixels_of(pred, name)
            self.pixel_iou[name].append(iou(p, t))
            self.pixel_dice[name].append(dice(p, t))

    def report(self) -> dict[str, Any]:
        """JSON-ready: type_accuracy, type_macro_f1, confusion, per_type, regions."""
        labels = sorted({t for t, _ in self.pairs} | {p for _, p in self.pairs})
        index = {n: k for k, n in enumerate(labels)}
        matrix = np.zeros((len(labels), len(labels)), int)
        for t, p in self.pairs:
            matrix[index[t], index[p]] += 1
        true = [t for t, _ in self.pairs]
        predicted = [p for _, p in self.pairs]
        present = sorted(set(true))
        return {
            "regions": len(self.pairs),
            "type_accuracy": float(np.mean([t == p for t, p in self.pairs]))
            if self.pairs
            else None,
            "type_macro_f1": float(
                f1_score(true, predicted, labels=present, average="macro", zero_division=0)
            )
            if self.pairs
            else None,
            "confusion": {"labels": labels, "matrix": matrix.tolist()},
            "per_type": {
                name: {
                    "iou": float(np.mean(self.pixel_iou[name])),
                    "dice": float(np.mean(self.pixel_dice[name])),
                    "images": len(self.pixel_iou[name]),
                }
                for name in sorted(self.pixel_iou)
            },
        }


def _pixels_of(regions: TypedRegions, name: str) -> np.ndarray:
    wanted = [i + 1 for i, t in enumerate(regions.types) if t == name]
    return np.isin(regions.labels, wanted)


def type_report(truths: Sequence[TypedRegions], preds: Sequence[TypedRegions]) -> dict[str, Any]:
    """The type metrics of paired images (same sizes)."""
    tally = TypeTally()
    for truth, pred in zip(truths, preds, strict=True):
        tally.add(truth, pred)
    return tally.report()
