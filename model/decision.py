"""How mask probabilities become a decision: one rule for metrics, prediction and the app.

A pixel is defect where its probability exceeds the mask threshold; an image whose mask
then has fewer than `min_area` pixels (at the model's input size) is called defect-free.
The area gate removes the scattered false specks a clean surface can raise, without
shrinking real defects; both numbers are calibrated on validation data after training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MaskRule:
    """threshold on probabilities; min_area in pixels at the model's input size."""

    threshold: float = 0.5
    min_area: int = 0

    def passes_area(self, prob: np.ndarray) -> bool:
        """Whether the thresholded mask of `prob` (input size) is large enough to keep."""
        return self.min_area <= 0 or int((prob > self.threshold).sum()) >= self.min_area

    def binarize(self, prob: np.ndarray) -> np.ndarray:
        """Boolean mask of `prob`; all False when the mask is under `min_area`."""
        mask = prob > self.threshold
        return mask if self.passes_area(prob) else np.zeros_like(mask)


def rule_grid(thresholds: Sequence[float], areas: Sequence[int]) -> list[MaskRule]:
    """Every (threshold, min_area) pair, for calibration."""
    return [MaskRule(t, a) for t in thresholds for a in areas]
