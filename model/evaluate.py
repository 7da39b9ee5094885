"""Evaluation of a model bundle on loaded samples, with the no-prompt ablation."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from model.checkpoint import ModelBundle
from model.dataset import LoadedSample, Sample
from model.decision import MaskRule
from model.feature_cache import FeatureCache
from model.hashing import sha256_bytes
from model.images import decode_image, read_mask
from model.labelled_regions import UNTYPED, true_regions
from model.metrics import review_score, segmentation_report
from model.predict import Predictor
from model.region_types import UNSPECIFIED, label_regions
from model.tiled_prediction import predict_maps
from model.type_metrics import TypedRegions, TypeTally, type_report
from model.typed_decision import decide_types


def predict_probs(
    bundle: ModelBundle,
    items: Sequence[LoadedSample],
    *,
    cache: FeatureCache | None,
    use_prompt: bool = True,
    batch_size: int = 8,
    views: Sequence[str] | None = None,
    progress: bool = False,
) -> list[np.ndarray]:
    """Mask probability maps in model space for every item (tiled and stitched when larger
    than a tile), averaged over `views` (default: the bundle's calibrated test-time views)."""
    probs: list[np.ndarray] = []
    starts = range(0, len(items), batch_size)
    for start in tqdm(starts, desc="evaluating", unit="batch", disable=not progress):
        chunk = items[start : start + batch_size]
        maps = predict_maps(
            bundle,
            [it.image for it in chunk],
            shas=[it.sha256 for it in chunk],
            cache=cache,
            views=views,
            use_prompt=use_prompt,
            batch_size=batch_size,
        )
        probs.extend(m.prob for m in maps)
    return probs


def best_rule(
    probs: Sequence[np.ndarray], items: Sequence[LoadedSample], grid: Sequence[MaskRule]
) -> MaskRule:
    """The mask rule in `grid` with the best review score on these items (first on ties)."""
    targets = [it.mask for it in items]
    types = [it.defect_type for it in items]

    def score(rule: MaskRule) -> float:
        report = segmentation_report(
            probs,
            targets,
            types,
            threshold=rule.threshold,
            min_area=rule.min_area,
            with_auroc=False,
        )
        return review_score(report)

    return max(grid, key=score)


def _typed_decision(
    bundle: ModelBundle,
    items: Sequence[LoadedSample],
    probs: Sequence[np.ndarray],
    cache: FeatureCache | None,
) -> dict[str, Any]:
    """Segmentation metrics of the typed decision (per-type rules applied) and the type
    metrics (`model.type_metrics`), to replace the untyped decision's."""
    rule = bundle.meta.mask_rule
    typed = [
        decide_types(bundle, it.image, p, rule.binarize(p), sha256=it.sha256, cache=cache)
        for it, p in zip(items, probs, strict=True)
    ]
    seg = segmentation_report(
        [t.mask.astype(np.float32) for t in typed],
        [it.mask for it in items],
        [it.defect_type for it in items],
        threshold=0.5,
        with_auroc=False,
    )
    types = type_report(
        [true_regions(it) for it in items], [TypedRegions(t.labels, t.types) for t in typed]
    )
    kept = ("miou", "dice", "empty_accuracy", "per_type")
    return {k: seg[k] for k in kept} | {"types": types}


def evaluate(
    bundle: ModelBundle,
    items: Sequence[LoadedSample],
    *,
    cache: FeatureCache | None = None,
    ablation: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Metrics with the heatmap prompt, plus the same with the prompt off (`no_prompt`).

    A typed model's masks are decided per type (its type rules), and the report gains
    `types`: type accuracy, macro-F1, confusion matrix and per-type pixel IoU / Dice."""
    rule = bundle.meta.mask_rule
    targets = [it.mask for it in items]
    types = [it.defect_type for it in items]
    probs = predict_probs(bundle, items, cache=cache, progress=progress)
    report = segmentation_report(
        probs, targets, types, threshold=rule.threshold, min_area=rule.min_area
    )
    if bundle.meta.type_head:
        report.update(_typed_decision(bundle, items, probs, cache))
    report["score"] = review_score(report)
    if ablation:
        off = predict_probs(bundle, items, cache=cache, use_prompt=False, progress=progress)
        no_prompt = segmentation_report(
            off, targets, types, threshold=rule.threshold, min_area=rule.min_area
        )
        no_prompt["score"] = review_score(no_prompt)
        report["no_prompt"] = no_prompt
    return report


def evaluate_native(
    bundle: ModelBundle,
    samples: Sequence[Sample],
    *,
    views: Sequence[str] | None = None,
    cache: FeatureCache | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Metrics at each image's own resolution: every image is predicted as the app does
    (`Predictor`: model space, tiles, decision, back to the image's size) and compared with
    its mask as drawn, so models of different scales (or fit) are judged on the same pixels.
    `views` overrides the test-time views; `seconds_per_image` is the mean prediction time.
    """
    predictor = Predictor(bundle, cache=cache, views=views)
    probs, targets, types = [], [], []
    tally = TypeTally()
    seconds = 0.0
    for sample in tqdm(samples, desc="evaluating", unit="img", disable=not progress):
        data = sample.image_path.read_bytes()
        image = decode_image(data, name=str(sample.image_path))
        target = (
            read_mask(sample.mask_path, shape=image.shape[:2])
            if sample.mask_path is not None
            else np.zeros(image.shape[:2], bool)
        )
        start = time.perf_counter()
        pred = predictor.predict(image, sha256=sha256_bytes(data))
        seconds += time.perf_counter() - start
        # The decision as served: the mask after the area rule, as a 0/1 "probability".
        probs.append(pred.mask.astype(np.float32))
        targets.append(target)
        types.append(sample.defect_type)
        if pred.labels is not None:
            labels, count = label_regions(target)
            name = UNSPECIFIED if sample.defect_type in UNTYPED else sample.defect_type
            tally.add(
                TypedRegions(labels, [name] * count),
                TypedRegions(pred.labels, [r.name for r in pred.regions]),
            )
    report = segmentation_report(probs, targets, types, threshold=0.5, with_auroc=False)
    report["score"] = review_score(report)
    report["seconds_per_image"] = seconds / max(1, len(samples))
    report["views"] = list(views if views is not None else bundle.meta.test_time_views)
    if bundle.meta.type_head:
        report["types"] = tally.report()
    return report
