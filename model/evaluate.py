"""Evaluation of a model bundle on loaded samples, with the no-prompt ablation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from model.checkpoint import ModelBundle
from model.dataset import LoadedSample
from model.decision import MaskRule
from model.feature_cache import FeatureCache
from model.inference import predict_views
from model.metrics import review_score, segmentation_report


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
    """Mask probability maps at input size for every item, averaged over `views`
    (default: the bundle's calibrated test-time views)."""
    views = bundle.meta.test_time_views if views is None else views
    probs: list[np.ndarray] = []
    starts = range(0, len(items), batch_size)
    for start in tqdm(starts, desc="evaluating", unit="batch", disable=not progress):
        chunk = items[start : start + batch_size]
        maps = predict_views(
            bundle,
            [it.image for it in chunk],
            shas=[it.sha256 for it in chunk],
            cache=cache,
            views=views,
            use_prompt=use_prompt,
            batch_size=batch_size,
        )
        probs.extend(maps.prob)
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


def evaluate(
    bundle: ModelBundle,
    items: Sequence[LoadedSample],
    *,
    cache: FeatureCache | None = None,
    ablation: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Metrics with the heatmap prompt, plus the same with the prompt off (`no_prompt`)."""
    rule = bundle.meta.mask_rule
    targets = [it.mask for it in items]
    types = [it.defect_type for it in items]
    probs = predict_probs(bundle, items, cache=cache, progress=progress)
    report = segmentation_report(
        probs, targets, types, threshold=rule.threshold, min_area=rule.min_area
    )
    report["score"] = review_score(report)
    if ablation:
        off = predict_probs(bundle, items, cache=cache, use_prompt=False, progress=progress)
        no_prompt = segmentation_report(
            off, targets, types, threshold=rule.threshold, min_area=rule.min_area
        )
        no_prompt["score"] = review_score(no_prompt)
        report["no_prompt"] = no_prompt
    return report
