"""A mask whose regions are named: what every type head hands the decision."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_TYPED_REGIONS = 64  # regions of one image a type head names, largest first


@dataclass
class TypedMask:
    """A mask in model space with its regions named: `labels` (int32, region i is label
    i + 1), `types[i]` and `confidences[i]`."""

    mask: np.ndarray
    labels: np.ndarray
    types: list[str]
    confidences: list[float]


def largest_regions(labels: np.ndarray, count: int) -> list[int]:
    """Indices (label - 1) of the `MAX_TYPED_REGIONS` largest regions, in label order."""
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    return sorted(np.argsort(-areas, kind="stable")[:MAX_TYPED_REGIONS].tolist())
