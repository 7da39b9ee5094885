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
from model.metrics import review_score, segmentation_report
from model.predict import Predictor
from model.tiled_prediction import predict_maps


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
    report = segmentation_report(probs, targets, types, threshold=0.5, with_auroc=False)
    report["score"] = review_score(report)
    report["seconds_per_image"] = seconds / max(1, len(samples))
    report["views"] = list(views if views is not None else bundle.meta.test_time_views)
    return report
