"""Defect types of mask regions: the vocabulary shared by datasets, models and the app.

A mask's connected regions (8-connectivity) each carry one defect type. In model space a
typed mask is a pair: the boolean mask and a `uint8` code map of the same shape, whose
codes are named by a `{code: name}` table (code 0, or a code the table lacks, is
"unspecified"). The app's codes are its database ids; a dataset's are its folder names'
positions. A region's type is the most common named code inside it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import cv2
import numpy as np

UNSPECIFIED = "unspecified"


@dataclass(frozen=True)
class RegionType:
    """The type a model gives one predicted region, with its confidence and pixel area
    (at the image's own size)."""

    name: str
    confidence: float
    area: int


def label_regions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """(int32 labels, count): 8-connected regions of a boolean mask, numbered from 1."""
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    return labels.astype(np.int32), int(count) - 1


def majority_codes(
    labels: np.ndarray,
    count: int,
    codes: np.ndarray,
    allowed: Collection[int] | None = None,
    ignore: Collection[int] = (),
) -> list[int]:
    """The most common nonzero code inside each labelled region (index i is label i + 1),
    counting only `allowed` codes (when given) and never `ignore`d ones; 0 for a region
    with none. Ties go to the smaller code. The one rule for "the type of a region" in the
    model, the app and the export."""
    keep = (labels > 0) & (codes > 0)
    if allowed is not None:
        keep &= np.isin(codes, np.fromiter(allowed, np.int64))
    if ignore:
        keep &= ~np.isin(codes, np.fromiter(ignore, np.int64))
    out = [0] * count
    if not keep.any():
        return out
    found = labels[keep].astype(np.int64)
    values = codes[keep].astype(np.int64)
    span = int(values.max()) + 1
    keys, counts = np.unique(found * span + values, return_counts=True)
    region, code = keys // span, keys % span
    order = np.lexsort((code, -counts, region))  # by region, most votes, smallest code
    region, code = region[order], code[order]
    first = np.r_[True, region[1:] != region[:-1]]
    for r, c in zip(region[first].tolist(), code[first].tolist(), strict=True):
        out[r - 1] = c
    return out


def region_type_names(
    labels: np.ndarray, count: int, codes: np.ndarray | None, names: Mapping[int, str]
) -> list[str]:
    """The type of each labelled region (index i is label i + 1): its most common named
    code, UNSPECIFIED when it has none."""
    if codes is None or count == 0:
        return [UNSPECIFIED] * count
    named = {c for c, n in names.items() if n != UNSPECIFIED}
    return [names[c] if c else UNSPECIFIED for c in majority_codes(labels, count, codes, named)]


def regions_from_mask(
    mask: np.ndarray, codes: np.ndarray | None, names: Mapping[int, str]
) -> tuple[np.ndarray, list[str]]:
    """(labels, type name per region) of a typed mask."""
    labels, count = label_regions(mask)
    return labels, region_type_names(labels, count, codes, names)


def codes_from_regions(labels: np.ndarray, region_codes: list[int]) -> np.ndarray:
    """A uint8 code map: every pixel of region i + 1 gets `region_codes[i]`, background 0."""
    lut = np.zeros(len(region_codes) + 1, dtype=np.uint8)
    lut[1:] = np.asarray(region_codes, dtype=np.uint8)
    return lut[labels]
