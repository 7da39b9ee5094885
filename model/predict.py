"""Prediction for single images: heatmap, mask, defect score and uncertainty.

`Predictor` is the stateful object the application keeps per served model version (as
`SamPredictor` is kept apart from SAM's modules): it owns the bundle and a feature cache,
so an image seen before is never re-encoded, and click-to-refine reuses the cached
encoding with the heatmap prompt. Images of any size are brought into the model's space
(its pixel scale, or the squash of a fit model), tiled and stitched; the decision is taken
on the stitched map and the outputs are returned at the image's own size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from model.checkpoint import ModelBundle
from model.cpu_threads import ComputePool
from model.decision import MaskRule
from model.feature_cache import FeatureCache
from model.geometry import Geometry
from model.hashing import sha256_bytes
from model.images import resize_to
from model.inference import defect_score, encode_images, run_heads, uncertainty
from model.precision import precision_name
from model.region_types import UNSPECIFIED, RegionType, label_regions, majority_codes
from model.stage_times import StageTimes
from model.tiled_prediction import ImageMaps, crop_key, predict_maps, tile_at
from model.tiling import TilePlan
from model.typed_decision import decide_types


@dataclass
class Prediction:
    """Outputs at the image's own size: heatmap float32 in [0, 1], boolean mask."""

    heatmap: np.ndarray
    mask: np.ndarray
    defect_score: float
    uncertainty: float
    threshold: float
    # Connected regions of `mask` (int32, 0 background, region i is label i + 1) and the
    # type of each (`model.region_types`); a model without a type head calls them all
    # "unspecified".
    labels: np.ndarray | None = None
    regions: list[RegionType] = field(default_factory=list)

    @property
    def is_defective(self) -> bool:
        return bool(self.mask.any())


@dataclass(frozen=True)
class Click:
    """A refinement click in image pixels: positive marks defect, negative background."""

    x: float
    y: float
    positive: bool


class Predictor:
    """Predicts with one model bundle, caching frozen encodings by image (or tile) hash.

    `views` overrides the model's calibrated test-time views (fewer views: faster, a
    little less accurate); None keeps them. With a `pool`, tile batches run on its threads.
    """

    def __init__(
        self,
        bundle: ModelBundle,
        *,
        cache: FeatureCache | None = None,
        views: Sequence[str] | None = None,
        pool: ComputePool | None = None,
    ) -> None:
        self.bundle = bundle
        self.pool = pool
        self.cache = cache if cache is not None else FeatureCache(None, max_memory_bytes=256 << 20)
        self.views = tuple(views) if views is not None else None
        if self.views is not None and not self.views:
            raise ValueError("at least one test-time view is needed")

    @property
    def active_views(self) -> tuple[str, ...]:
        """The test-time views predictions average: the override, or the model's own."""
        return self.views if self.views is not None else tuple(self.bundle.meta.test_time_views)

    @property
    def precision(self) -> str:
        """The arithmetic the encoder and heads compute in (`model.precision`)."""
        return precision_name(self.bundle.device, self.bundle.mixed_precision)

    @property
    def threshold(self) -> float:
        return self.bundle.meta.mask_threshold

    @property
    def rule(self) -> MaskRule:
        return self.bundle.meta.mask_rule

    @property
    def geometry(self) -> Geometry:
        return self.bundle.geometry

    def predict(
        self,
        image: np.ndarray,
        *,
        sha256: str | None = None,
        clicks: Sequence[Click] = (),
        use_prompt: bool = True,
        times: StageTimes | None = None,
    ) -> Prediction:
        """Predict for one uint8 RGB image of any size."""
        return self.predict_many(
            [image], shas=[sha256], clicks=[clicks], use_prompt=use_prompt, times=times
        )[0]

    def predict_many(
        self,
        images: Sequence[np.ndarray],
        *,
        shas: Sequence[str | None] | None = None,
        clicks: Sequence[Sequence[Click]] | None = None,
        use_prompt: bool = True,
        times: StageTimes | None = None,
    ) -> list[Prediction]:
        """Predict for several images of any sizes; their tiles share batches.

        An image with clicks is predicted as the others, then the tile under its clicks is
        decoded again with them (one upright pass, as the image is shown).
        """
        geometry = self.geometry
        shas = list(shas) if shas is not None else [None] * len(images)
        shas = [
            s or sha256_bytes(np.ascontiguousarray(im).tobytes())
            for s, im in zip(shas, images, strict=True)
        ]
        clicks = list(clicks) if clicks is not None else [()] * len(images)
        model_images = [geometry.image_to_model(im) for im in images]
        maps = predict_maps(
            self.bundle,
            model_images,
            shas=shas,
            cache=self.cache,
            views=self.views,
            use_prompt=use_prompt,
            times=times,
            pool=self.pool,
        )
        for i, image_clicks in enumerate(clicks):
            if image_clicks:
                self._refine(maps[i], model_images[i], shas[i], image_clicks, images[i].shape[:2])
        return [
            self._decide(m, model_image, im.shape[:2], sha)
            for m, model_image, im, sha in zip(maps, model_images, images, shas, strict=True)
        ]

    def _refine(
        self,
        maps: ImageMaps,
        model_image: np.ndarray,
        sha: str,
        clicks: Sequence[Click],
        shape: tuple[int, int],
    ) -> None:
        """Decode the tile under the clicks again with them as point prompts, in place."""
        size = self.bundle.encoder.input_size
        mh, mw = model_image.shape[:2]
        sx, sy = mw / shape[1], mh / shape[0]  # image pixels → model space
        plan = TilePlan((mh, mw), size, self.geometry.overlap)
        cx = float(np.mean([c.x for c in clicks])) * sx
        cy = float(np.mean([c.y for c in clicks])) * sy
        tile = tile_at(plan, cx, cy)
        crop = plan.pad(model_image)[tile.y : tile.y + size, tile.x : tile.x + size]
        whole = (mh, mw) == (size, size)
        frozen = encode_images(
            self.bundle, [crop], shas=[crop_key(crop, sha, whole)], cache=self.cache
        )
        coords = torch.tensor(
            [[[c.x * sx - tile.x, c.y * sy - tile.y] for c in clicks]], dtype=torch.float32
        )
        labels = torch.tensor([[1.0 if c.positive else 0.0 for c in clicks]])
        device = self.bundle.device
        one = run_heads(self.bundle, frozen, points=(coords.to(device), labels.to(device)))
        h, w = min(size, mh - tile.y), min(size, mw - tile.x)
        maps.prob[tile.y : tile.y + h, tile.x : tile.x + w] = one.prob[0][:h, :w]
        maps.heatmap[tile.y : tile.y + h, tile.x : tile.x + w] = one.heatmap[0][:h, :w]

    def _decide(
        self, maps: ImageMaps, model_image: np.ndarray, shape: tuple[int, int], sha: str
    ) -> Prediction:
        """The image-level decision on the stitched model-space map, outputs at `shape`:
        the global mask rule, then (a typed model) each region's type and its type's
        rule, in model space as calibrated."""
        prob = maps.prob
        model_mask = self.rule.binarize(prob)  # area judged in model space, as calibrated
        if self.bundle.meta.type_head is None:
            mask = resize_to(prob, shape) > self.threshold
            if not model_mask.any():
                mask = np.zeros_like(mask)
            labels, count = label_regions(mask)
            names, confidences = [UNSPECIFIED] * count, [0.0] * count
        else:
            typed = decide_types(
                self.bundle, model_image, prob, model_mask, sha256=sha, cache=self.cache
            )
            mask = resize_to(typed.mask.astype(np.float32), shape) > 0.5
            labels, count = label_regions(mask)
            source_labels = resize_to(typed.labels, shape, nearest=True).astype(np.int32)
            sources = majority_codes(labels, count, source_labels)
            names = [typed.types[k - 1] if k else UNSPECIFIED for k in sources]
            confidences = [typed.confidences[k - 1] if k else 0.0 for k in sources]
        areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        return Prediction(
            heatmap=np.clip(resize_to(maps.heatmap, shape), 0.0, 1.0),
            mask=mask,
            defect_score=defect_score(prob),
            uncertainty=uncertainty(prob, self.threshold),
            threshold=self.threshold,
            labels=labels,
            regions=[
                RegionType(n, c, int(a)) for n, c, a in zip(names, confidences, areas, strict=True)
            ],
        )
