"""The defect-type head: a multinomial logistic regression over region descriptors.

Light on purpose: it learns from a few hundred typed regions in seconds on a CPU, is
deterministic (L-BFGS, no sampling), and lives in the checkpoint's metadata as plain
numbers. A type seen in fewer than `min_regions` training regions is not a class: its
regions, like those it cannot tell apart, come out as "unspecified" rather than guessed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from model.region_types import UNSPECIFIED

MIN_REGIONS = 5  # training regions a type needs to become a class
MIN_CONFIDENCE = 0.0  # below this top probability a region stays unspecified
REGULARISATION = 0.5  # sklearn's C: inverse L2 strength on standardised descriptors


@dataclass(frozen=True)
class TypeHead:
    """Class names, descriptor standardisation and the linear classifier's weights."""

    classes: tuple[str, ...]
    mean: np.ndarray  # (D,)
    std: np.ndarray  # (D,)
    coef: np.ndarray  # (C, D); a single class has none (every region is that class)
    intercept: np.ndarray  # (C,)
    min_confidence: float = MIN_CONFIDENCE

    def probabilities(self, descriptors: np.ndarray) -> np.ndarray:
        """(N, C) class probabilities of N region descriptors."""
        if len(self.classes) == 1:
            return np.ones((len(descriptors), 1), np.float32)
        z = (descriptors - self.mean) / self.std
        logits = z @ self.coef.T + self.intercept
        if len(self.classes) == 2 and self.coef.shape[0] == 1:  # sklearn's binary form
            logits = np.concatenate([-logits / 2, logits / 2], axis=1)
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    def predict(self, descriptors: np.ndarray) -> list[tuple[str, float]]:
        """(type, confidence) per region; UNSPECIFIED below `min_confidence`."""
        if len(descriptors) == 0:
            return []
        probs = self.probabilities(descriptors)
        best = probs.argmax(axis=1)
        return [
            (self.classes[b] if p[b] >= self.min_confidence else UNSPECIFIED, float(p[b]))
            for b, p in zip(best, probs, strict=True)
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": "region",
            "classes": list(self.classes),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
            "min_confidence": self.min_confidence,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TypeHead:
        return cls(
            classes=tuple(data["classes"]),
            mean=np.asarray(data["mean"], np.float32),
            std=np.asarray(data["std"], np.float32),
            coef=np.asarray(data["coef"], np.float32),
            intercept=np.asarray(data["intercept"], np.float32),
            min_confidence=float(data.get("min_confidence", MIN_CONFIDENCE)),
        )


def trainable_types(names: Sequence[str], min_regions: int = MIN_REGIONS) -> list[str]:
    """The named types with at least `min_regions` regions, sorted (unspecified never)."""
    counts = Counter(n for n in names if n != UNSPECIFIED)
    return sorted(n for n, c in counts.items() if c >= min_regions)


def fit_type_head(
    descriptors: np.ndarray,
    names: Sequence[str],
    *,
    min_regions: int = MIN_REGIONS,
    seed: int = 0,
) -> TypeHead | None:
    """A head for the types with enough regions; None when no type has enough."""
    classes = trainable_types(names, min_regions)
    if not classes:
        return None
    keep = np.array([n in classes for n in names])
    x = descriptors[keep].astype(np.float64)
    y = [n for n in names if n in classes]
    mean = x.mean(axis=0)
    std = x.std(axis=0) + 1e-6
    if len(classes) == 1:
        d = x.shape[1]
        return TypeHead(tuple(classes), mean, std, np.zeros((0, d)), np.zeros(0))
    clf = LogisticRegression(C=REGULARISATION, max_iter=3000, random_state=seed)
    clf.fit((x - mean) / std, y)
    assert list(clf.classes_) == classes  # sklearn sorts its classes, as `classes` is
    return TypeHead(
        tuple(classes),
        mean.astype(np.float32),
        std.astype(np.float32),
        np.asarray(clf.coef_, np.float32),
        np.asarray(clf.intercept_, np.float32),
    )
