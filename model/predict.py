"""Prediction for single images: heatmap, mask, defect score and uncertainty.

`Predictor` is the stateful object the application keeps per served model version (as
`SamPredictor` is kept apart from SAM's modules): it owns the bundle and a feature cache,
so an image seen before is never re-encoded, and click-to-refine reuses the cached
encoding with the heatmap prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from model.checkpoint import ModelBundle
from model.decision import MaskRule
from model.feature_cache import FeatureCache
from model.hashing import sha256_bytes
from model.images import resize_image, resize_to
from model.inference import (
    defect_score,
    encode_images,
    predict_views,
    run_heads,
    uncertainty,
)


@dataclass
class Prediction:
    """Outputs at the image's own size: heatmap float32 in [0, 1], boolean mask."""

    heatmap: np.ndarray
    mask: np.ndarray
    defect_score: float
    uncertainty: float
    threshold: float

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
    """Predicts with one model bundle, caching frozen encodings by image hash."""

    def __init__(self, bundle: ModelBundle, *, cache: FeatureCache | None = None) -> None:
        self.bundle = bundle
        self.cache = cache if cache is not None else FeatureCache(None, max_memory_bytes=256 << 20)

    @property
    def threshold(self) -> float:
        return self.bundle.meta.mask_threshold

    @property
    def rule(self) -> MaskRule:
        return self.bundle.meta.mask_rule

    def _points(
        self, clicks: Sequence[Click], shape: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not clicks:
            return None
        size = self.bundle.encoder.input_size
        sx, sy = size / shape[1], size / shape[0]
        coords = torch.tensor([[[c.x * sx, c.y * sy] for c in clicks]], dtype=torch.float32)
        labels = torch.tensor([[1.0 if c.positive else 0.0 for c in clicks]])
        device = self.bundle.device
        return coords.to(device), labels.to(device)

    def predict(
        self,
        image: np.ndarray,
        *,
        sha256: str | None = None,
        clicks: Sequence[Click] = (),
        use_prompt: bool = True,
    ) -> Prediction:
        """Predict for one uint8 RGB image of any size."""
        return self.predict_many([image], shas=[sha256], clicks=[clicks], use_prompt=use_prompt)[0]

    def predict_many(
        self,
        images: Sequence[np.ndarray],
        *,
        shas: Sequence[str | None] | None = None,
        clicks: Sequence[Sequence[Click]] | None = None,
        use_prompt: bool = True,
    ) -> list[Prediction]:
        """Predict for several images; images with clicks run one by one."""
        size = self.bundle.encoder.input_size
        shas = list(shas) if shas is not None else [None] * len(images)
        shas = [
            s or sha256_bytes(np.ascontiguousarray(im).tobytes())
            for s, im in zip(shas, images, strict=True)
        ]
        clicks = list(clicks) if clicks is not None else [()] * len(images)
        resized = [resize_image(im, size) for im in images]
        results: list[Prediction] = []
        plain = [i for i, c in enumerate(clicks) if not c]
        clicked = [i for i, c in enumerate(clicks) if c]
        maps: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if plain:  # averaged over the model's test-time views
            batch = predict_views(
                self.bundle,
                [resized[i] for i in plain],
                shas=[shas[i] for i in plain],
                cache=self.cache,
                views=self.bundle.meta.test_time_views,
                use_prompt=use_prompt,
            )
            for j, i in enumerate(plain):
                maps[i] = (batch.prob[j], batch.heatmap[j])
        if clicked:  # clicks are placed on the image as shown: one upright pass
            frozen = encode_images(
                self.bundle,
                [resized[i] for i in clicked],
                shas=[shas[i] for i in clicked],
                cache=self.cache,
            )
            for j, i in enumerate(clicked):
                one = run_heads(
                    self.bundle,
                    frozen.select(j),
                    use_prompt=use_prompt,
                    points=self._points(clicks[i], images[i].shape[:2]),
                )
                maps[i] = (one.prob[0], one.heatmap[0])
        for i, image in enumerate(images):
            prob, heat = maps[i]
            shape = image.shape[:2]
            prob_full = resize_to(prob, shape)
            mask = prob_full > self.threshold
            if not self.rule.passes_area(prob):  # area judged at input size, as in training
                mask = np.zeros_like(mask)
            results.append(
                Prediction(
                    heatmap=np.clip(resize_to(heat, shape), 0.0, 1.0),
                    mask=mask,
                    defect_score=defect_score(prob),
                    uncertainty=uncertainty(prob, self.threshold),
                    threshold=self.threshold,
                )
            )
        return results
