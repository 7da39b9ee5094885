"""The decision per defect type: name each region of a mask, then apply its type's rule.

After the global mask rule (`model.decision`), each connected region is named by the
model's type head (a per-pixel class map, `model.pixel_type_head`, or for older models a
classifier of region descriptors, `model.type_head`); a type with a calibrated rule then
re-thresholds its own regions (a lower threshold lets a faint stain grow into its
neighbourhood, a higher one trims a scratch) and drops them under its own minimum area.
Types without a rule (too few validation examples) keep the global one. Evaluation,
prediction and the app all decide through `decide_types`, as they decide masks through
`MaskRule`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from model.checkpoint import ModelBundle
from model.decision import MaskRule
from model.feature_cache import FeatureCache
from model.pixel_type_head import PixelTypeHead, classify_regions_by_pixels
from model.region_features import describe_regions
from model.region_types import UNSPECIFIED, label_regions, majority_codes
from model.type_head import TypeHead
from model.typed_mask import TypedMask, largest_regions

GROW = 3  # pixels a region may grow into under a lower per-type threshold


def classify_regions(
    bundle: ModelBundle,
    image: np.ndarray,
    mask: np.ndarray,
    *,
    sha256: str | None = None,
    cache: FeatureCache | None,
) -> TypedMask:
    """Type every region of a model-space mask with the bundle's type head (all
    unspecified for an untyped model). Only the `MAX_TYPED_REGIONS` largest are named; a
    mask broken into more specks leaves the smallest unspecified. `sha256` (the image's
    hash) lets a one-tile image reuse the features its mask was predicted from."""
    kind = bundle.meta.type_head_kind
    if kind == "pixel":
        head = PixelTypeHead.of(bundle)
        return classify_regions_by_pixels(bundle, head, image, mask, sha256=sha256, cache=cache)
    if kind is None:
        labels, count = label_regions(mask)
        return TypedMask(mask, labels, [UNSPECIFIED] * count, [0.0] * count)
    return classify_by_descriptors(
        bundle, TypeHead.from_dict(bundle.meta.type_head or {}), image, mask, cache=cache
    )


def classify_by_descriptors(
    bundle: ModelBundle,
    head: TypeHead,
    image: np.ndarray,
    mask: np.ndarray,
    *,
    cache: FeatureCache | None,
) -> TypedMask:
    """Type the regions with a region-kind head: each region's descriptors (an encoder
    pass over a context crop per region) through its classifier."""
    labels, count = label_regions(mask)
    types, confidences = [UNSPECIFIED] * count, [0.0] * count
    if count == 0:
        return TypedMask(mask, labels, types, confidences)
    largest = largest_regions(labels, count)
    regions = [labels == i + 1 for i in largest]
    named = head.predict(describe_regions(bundle, image, regions, cache=cache))
    for i, (name, confidence) in zip(largest, named, strict=True):
        types[i], confidences[i] = name, confidence
    return TypedMask(mask, labels, types, confidences)


def apply_type_rules(
    prob: np.ndarray, typed: TypedMask, rules: Mapping[str, MaskRule], global_threshold: float
) -> TypedMask:
    """Each region of a type with a rule re-thresholded (near its pixels) and kept only
    when its own minimum area is met; regions are then labelled again, each carrying the
    type and confidence of the region it came from."""
    if not rules or not any(t in rules for t in typed.types):
        return typed
    codes = np.zeros(prob.shape, np.int32)  # 1 + index of the source region
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * GROW + 1, 2 * GROW + 1))
    for i, name in enumerate(typed.types):
        region = typed.labels == i + 1
        rule = rules.get(name)
        if rule is not None:
            if rule.threshold < global_threshold:
                near = cv2.dilate(region.astype(np.uint8), kernel) > 0
                region = near & (prob > rule.threshold)
            else:
                region = region & (prob > rule.threshold)
            if int(region.sum()) < max(1, rule.min_area):
                continue
        codes[region & (codes == 0)] = i + 1
    mask = codes > 0
    labels, count = label_regions(mask)
    sources = [k - 1 for k in majority_codes(labels, count, codes)]  # every region has one
    types = [typed.types[k] for k in sources]
    return TypedMask(mask, labels, types, [typed.confidences[k] for k in sources])


def decide_types(
    bundle: ModelBundle,
    image: np.ndarray,
    prob: np.ndarray,
    mask: np.ndarray,
    *,
    sha256: str | None = None,
    cache: FeatureCache | None,
) -> TypedMask:
    """Typed regions of a model-space image whose global decision gave `mask`, each type
    then decided by its own rule (the bundle's)."""
    typed = classify_regions(bundle, image, mask, sha256=sha256, cache=cache)
    rules = bundle.meta.type_mask_rules
    return apply_type_rules(prob, typed, rules, bundle.meta.mask_threshold)


def typed_masks(typed: Sequence[TypedMask], names: Sequence[str]) -> list[np.ndarray]:
    """Per image, a uint8 code map: 1 + index of each region's type in `names`."""
    index = {n: k + 1 for k, n in enumerate(names)}
    out = []
    for t in typed:
        lut = np.zeros(len(t.types) + 1, np.uint8)
        lut[1:] = [index.get(n, 0) for n in t.types]
        out.append(lut[t.labels])
    return out
