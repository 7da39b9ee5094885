"""Teaching a model its defect types, after the segmentation heads are trained.

The type head learns from the true regions of the training images (their typed masks, or
the folder a dataset file sits in), so typing never touches the segmentation weights and
cannot lower mask quality. Two kinds of head: "pixel" (the default), a per-pixel class map
over the features the mask is made from (`model.pixel_type_head`), and "region", a
classifier of region descriptors with an encoder pass per region (`model.type_head`). On
the independent generator's 150 unseen images, with the same weights and masks, the pixel
head named more predicted regions right in two trained models (0.940 against 0.929,
macro-F1 0.931 against 0.901; and 0.968 against 0.924), in 75 against 117 ms per image,
for a longer fit (217 against 160 s) (`tests/benchmarks/quality.py --typed`).

Then, on the validation sample the global mask rule was calibrated on, each type with
enough predicted regions gets its own mask rule where that scores better than the global
one, and the typed decision is measured.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from model.checkpoint import ModelBundle
from model.dataset import LoadedSample
from model.decision import MaskRule
from model.evaluate import predict_probs
from model.feature_cache import FeatureCache
from model.labelled_regions import true_regions
from model.metrics import review_score, segmentation_report
from model.pixel_type_head import fit_pixel_head, pixel_typing_work
from model.region_features import describe_many
from model.region_types import UNSPECIFIED, label_regions, majority_codes
from model.type_head import MIN_REGIONS, TypeHead, fit_type_head
from model.type_metrics import TypedRegions, type_report
from model.typed_decision import apply_type_rules, classify_regions
from model.typed_mask import TypedMask

TYPE_HEAD_KINDS = ("pixel", "region")

MAX_REGIONS_PER_TYPE = 400  # true regions per type the head learns from (seeded sample)
MAX_PREDICTED_IMAGES = 500  # images whose predicted regions it also learns from
MIN_RULE_REGIONS = 8  # predicted validation regions a type needs for its own mask rule
TYPE_THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
TYPE_AREAS_256 = (0, 10, 20, 40, 80)  # per-region minimum areas, in pixels at 256 × 256


def _training_regions(items: Sequence[LoadedSample], seed: int) -> list[tuple[int, int, str]]:
    """(item, label, type) of the typed regions to learn from, at most
    `MAX_REGIONS_PER_TYPE` per type (a seeded sample)."""
    by_type: dict[str, list[tuple[int, int, str]]] = {}
    for k, item in enumerate(items):
        regions = true_regions(item)
        for i, name in enumerate(regions.types):
            if name != UNSPECIFIED:
                by_type.setdefault(name, []).append((k, i + 1, name))
    rng = random.Random(seed)
    chosen: list[tuple[int, int, str]] = []
    for name in sorted(by_type):
        group = by_type[name]
        chosen += (
            group if len(group) <= MAX_REGIONS_PER_TYPE else rng.sample(group, MAX_REGIONS_PER_TYPE)
        )
    return sorted(chosen)


def typing_work(items: Sequence[LoadedSample], seed: int, *, kind: str, tile: int) -> int:
    """About how many tile passes fitting a `kind` head on `items` costs (region: one
    encoder pass per region crop and per predicted image), so a time-bounded run can
    reserve them."""
    if kind == "pixel":
        return pixel_typing_work(items, tile, seed)
    chosen = _training_regions(items, seed)
    images = len({k for k, _, _ in chosen})
    predicted = min(images, MAX_PREDICTED_IMAGES)
    return len(chosen) + round(predicted * (1 + len(chosen) / max(1, images)))


def _predicted_examples(
    bundle: ModelBundle,
    items: Sequence[LoadedSample],
    cache: FeatureCache | None,
) -> list[tuple[int, np.ndarray, str]]:
    """(item, region, type) of the regions the trained heads predict on `items` (one
    upright view, the calibrated rule), each named by the true region it mostly covers;
    a region over no typed true region teaches nothing and is left out."""
    probs = predict_probs(bundle, items, cache=cache, views=["identity"])
    rule = bundle.meta.mask_rule
    out = []
    for k, (item, prob) in enumerate(zip(items, probs, strict=True)):
        truth = true_regions(item)
        labels, count = label_regions(rule.binarize(prob))
        for i, source in enumerate(majority_codes(labels, count, truth.labels)):
            if source and truth.types[source - 1] != UNSPECIFIED:
                out.append((k, labels == i + 1, truth.types[source - 1]))
    return out


def fit_head(
    bundle: ModelBundle,
    items: Sequence[LoadedSample],
    *,
    cache: FeatureCache | None,
    seed: int,
    min_regions: int = MIN_REGIONS,
    progress: bool = False,
) -> TypeHead | None:
    """A type head from the items' true typed regions and from the regions the trained
    heads predict on (a sample of) the same images, named by the true region under them:
    the head then also knows regions as prediction draws them, fragments and all (type
    accuracy on predicted regions 0.68 → 0.85 in one measurement). None: no type has
    enough regions."""
    chosen = _training_regions(items, seed)
    if not chosen:
        return None
    typed_items = sorted({k for k, _, _ in chosen})
    labels = {k: true_regions(items[k]).labels for k in typed_items}  # once per image
    examples = [(k, labels[k] == label, name) for k, label, name in chosen]
    rng = random.Random(seed)
    if len(typed_items) > MAX_PREDICTED_IMAGES:
        typed_items = sorted(rng.sample(typed_items, MAX_PREDICTED_IMAGES))
    predicted = _predicted_examples(bundle, [items[k] for k in typed_items], cache)
    examples += [(typed_items[j], region, name) for j, region, name in predicted]
    by_item: dict[int, list[tuple[np.ndarray, str]]] = {}
    for k, region, name in examples:
        by_item.setdefault(k, []).append((region, name))
    order = sorted(by_item)
    jobs = [(items[k].image, [region for region, _ in by_item[k]]) for k in order]
    names = [name for k in order for _, name in by_item[k]]
    descriptors = describe_many(bundle, jobs, cache=cache, progress=progress)
    return fit_type_head(descriptors, names, min_regions=min_regions, seed=seed)


def _typed(
    bundle: ModelBundle,
    items: Sequence[LoadedSample],
    probs: Sequence[np.ndarray],
    rule: MaskRule,
    cache: FeatureCache | None,
) -> list[TypedMask]:
    return [
        classify_regions(bundle, it.image, rule.binarize(p), sha256=it.sha256, cache=cache)
        for it, p in zip(items, probs, strict=True)
    ]


def _score(
    items: Sequence[LoadedSample],
    probs: Sequence[np.ndarray],
    typed: Sequence[TypedMask],
    rules: dict[str, MaskRule],
    threshold: float,
) -> float:
    masks = [
        apply_type_rules(p, t, rules, threshold).mask for p, t in zip(probs, typed, strict=True)
    ]
    report = segmentation_report(
        [m.astype(np.float32) for m in masks],
        [it.mask for it in items],
        [it.defect_type for it in items],
        threshold=0.5,
        with_auroc=False,
    )
    return review_score(report)


def calibrate_type_rules(
    items: Sequence[LoadedSample],
    probs: Sequence[np.ndarray],
    typed: Sequence[TypedMask],
    rule: MaskRule,
    input_size: int,
) -> dict[str, MaskRule]:
    """Per type with at least `MIN_RULE_REGIONS` predicted regions, the mask rule that
    scores best on these items with the other types' rules held, kept only where it
    beats the global rule (types are calibrated one after another, in name order)."""
    counts: dict[str, int] = {}
    for t in typed:
        for name in t.types:
            counts[name] = counts.get(name, 0) + 1
    areas = [round(a * (input_size / 256) ** 2) for a in TYPE_AREAS_256]
    rules: dict[str, MaskRule] = {}
    best = _score(items, probs, typed, rules, rule.threshold)
    for name in sorted(n for n, c in counts.items() if c >= MIN_RULE_REGIONS and n != UNSPECIFIED):
        chosen = None
        for candidate in (MaskRule(t, a) for t in TYPE_THRESHOLDS for a in areas):
            score = _score(items, probs, typed, {**rules, name: candidate}, rule.threshold)
            if score > best + 1e-9:
                best, chosen = score, candidate
        if chosen is not None:
            rules[name] = chosen
    return rules


def fit_region_types(
    bundle: ModelBundle,
    train_items: Sequence[LoadedSample],
    calib_items: Sequence[LoadedSample],
    calib_probs: Sequence[np.ndarray],
    *,
    cache: FeatureCache | None,
    seed: int,
    kind: str = "pixel",
    progress: bool = False,
) -> dict[str, Any] | None:
    """Fit a `kind` type head (`TYPE_HEAD_KINDS`) and per-type rules into the bundle; the
    validation type report (None when the data names no types: the model stays untyped)."""
    if kind not in TYPE_HEAD_KINDS:
        raise ValueError(f"type head must be one of {', '.join(TYPE_HEAD_KINDS)}, got {kind!r}")
    meta = bundle.meta
    meta.type_head, meta.type_rules, bundle.type_net = None, {}, None
    if kind == "pixel":
        pixel = fit_pixel_head(bundle, train_items, cache=cache, seed=seed, progress=progress)
        if pixel is None:
            return None
        meta.type_head, bundle.type_net = pixel.as_dict(), pixel.net
        classes = pixel.classes
    else:
        head = fit_head(bundle, train_items, cache=cache, seed=seed, progress=progress)
        if head is None:
            return None
        meta.type_head = head.as_dict()
        classes = head.classes
    if not calib_items:
        return None
    rule = meta.mask_rule
    typed = _typed(bundle, calib_items, calib_probs, rule, cache)
    rules = calibrate_type_rules(calib_items, calib_probs, typed, rule, bundle.encoder.input_size)
    meta.type_rules = {
        n: {"threshold": r.threshold, "min_area": r.min_area} for n, r in rules.items()
    }
    final = [
        apply_type_rules(p, t, rules, rule.threshold)
        for p, t in zip(calib_probs, typed, strict=True)
    ]
    report = type_report(
        [true_regions(it) for it in calib_items],
        [TypedRegions(t.labels, t.types) for t in final],
    )
    report["classes"] = list(classes)
    report["kind"] = kind
    report["rules"] = meta.type_rules
    return report
