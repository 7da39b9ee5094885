"""The regions of a typed mask as the API and the UI show them: one entry per connected
region (8-connectivity, numbered as `model.region_types.label_regions` numbers them, so
label i + 1 is the model's region i) with its type, area and bounding box."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from model.region_types import label_regions, majority_codes
from storage.defect_types import UNSPECIFIED_ID


def region_type_ids(labels: np.ndarray, count: int, types: np.ndarray | None) -> list[int]:
    """Each region's type id: its most common named id (`majority_codes`, the model's and
    the export's rule), unspecified when the type mask is None or names nothing there."""
    if types is None or count == 0:
        return [UNSPECIFIED_ID] * count
    found = majority_codes(labels, count, types, ignore=(UNSPECIFIED_ID,))
    return [c or UNSPECIFIED_ID for c in found]


def regions_view(
    mask: np.ndarray,
    types: np.ndarray | None,
    names: Mapping[int, str],
    confidences: Sequence[float] | None = None,
) -> list[dict[str, Any]]:
    """{label, type_id, type, area, bbox [x, y, w, h]} per region, plus `confidence` when
    `confidences` (one per region, by label) is given: a prediction's regions."""
    labels, count = label_regions(mask)
    if count == 0:
        return []
    ids = region_type_ids(labels, count, types)
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    out: list[dict[str, Any]] = []
    for i, window in enumerate(ndimage.find_objects(labels, max_label=count)):
        rows, cols = window  # type: ignore[misc]
        entry: dict[str, Any] = {
            "label": i + 1,
            "type_id": ids[i],
            "type": names.get(ids[i], f"type {ids[i]}"),
            "area": int(areas[i]),
            "bbox": [cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start],
        }
        if confidences is not None:
            entry["confidence"] = float(confidences[i]) if i < len(confidences) else None
        out.append(entry)
    return out
