"""Shared inference steps: cached encoding, running the heads, scores from probability maps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from model.augment import apply_transform
from model.checkpoint import ModelBundle
from model.encoders import EncoderOutput
from model.feature_cache import CacheKey, FeatureCache
from model.precision import reduced_precision
from model.stage_times import StageTimes, measured


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' → CUDA when present, else CPU; 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def encode_images(
    bundle: ModelBundle,
    images: Sequence[np.ndarray],
    *,
    shas: Sequence[str | None] | None = None,
    cache: FeatureCache | None = None,
    transforms: Sequence[str] | None = None,
    batch_size: int = 8,
) -> EncoderOutput:
    """Frozen encoder outputs for uint8 (S, S, 3) images, from `cache` where possible;
    computed in the bundle's precision (`ModelBundle.mixed_precision`), returned in float32.

    `images` must already be transformed as named by `transforms` (default identity).
    """
    encoder = bundle.encoder

    def compute(indices: list[int]) -> EncoderOutput:
        batch = torch.from_numpy(np.stack([images[i] for i in indices]))
        with reduced_precision(encoder.device, bundle.mixed_precision):
            return encoder.encode(batch)

    if cache is None or shas is None or any(s is None for s in shas):
        chunks = [
            compute(list(range(i, min(i + batch_size, len(images)))))
            for i in range(0, len(images), batch_size)
        ]
        out = EncoderOutput.stack(chunks) if len(chunks) > 1 else chunks[0]
    else:
        names = transforms or ["identity"] * len(images)
        keys = [
            CacheKey(str(sha), encoder.cache_id, encoder.input_size, name)
            for sha, name in zip(shas, names, strict=True)
        ]
        out = cache.get_or_compute(keys, compute, batch_size=batch_size)
    return out.to(encoder.device, torch.float32)


@dataclass
class MapBatch:
    """Per-pixel outputs at input size: mask probabilities and heatmap, (B, S, S) float32."""

    prob: np.ndarray
    heatmap: np.ndarray


@torch.no_grad()
def run_heads(
    bundle: ModelBundle,
    frozen: EncoderOutput,
    *,
    use_prompt: bool = True,
    points: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> MapBatch:
    """Mask probabilities and heatmaps for a batch of frozen outputs."""
    bundle.heads.eval()
    with reduced_precision(bundle.device, bundle.mixed_precision):
        out = bundle.heads(frozen, use_prompt=use_prompt, points=points)
    size = bundle.encoder.input_size
    heat = F.interpolate(
        torch.sigmoid(out.heatmap_logits.float()),
        size=(size, size),
        mode="bilinear",
        align_corners=False,
    )
    prob = torch.sigmoid(out.mask_logits.float())
    return MapBatch(prob=prob[:, 0].cpu().numpy(), heatmap=heat[:, 0].cpu().numpy())


def predict_views(
    bundle: ModelBundle,
    images: Sequence[np.ndarray],
    *,
    shas: Sequence[str | None] | None = None,
    cache: FeatureCache | None = None,
    views: Sequence[str] = ("identity",),
    use_prompt: bool = True,
    batch_size: int = 8,
    times: StageTimes | None = None,
) -> MapBatch:
    """Maps for uint8 (S, S, 3) images averaged over test-time `views` (flips/rotations).

    Each view of an image is encoded (cached under the view's name), decoded, and mapped
    back to the image's own orientation before averaging; ("identity",) is a plain pass.
    `times`, when given, gets the encoder and head seconds added.
    """
    if not views:
        raise ValueError("at least one view is needed")
    prob_sum: np.ndarray | None = None
    heat_sum: np.ndarray | None = None
    for view in views:
        with measured(times, "encode"):
            frozen = encode_images(
                bundle,
                [apply_transform(im, view) for im in images],
                shas=shas,
                cache=cache,
                transforms=[view] * len(images),
                batch_size=batch_size,
            )
        with measured(times, "heads"):
            maps = run_heads(bundle, frozen, use_prompt=use_prompt)
        # Every view is its own inverse: applying it again maps back.
        prob = np.stack([apply_transform(p, view) for p in maps.prob])
        heat = np.stack([apply_transform(h, view) for h in maps.heatmap])
        prob_sum = prob if prob_sum is None else prob_sum + prob
        heat_sum = heat if heat_sum is None else heat_sum + heat
    assert prob_sum is not None and heat_sum is not None
    return MapBatch(prob=prob_sum / len(views), heatmap=heat_sum / len(views))


def _binary_entropy(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return float(-(p * np.log2(p) + (1 - p) * np.log2(1 - p)))


def defect_score(prob: np.ndarray) -> float:
    """Image-level defect score: the highest mask probability (mask empty iff ≤ threshold)."""
    return float(prob.max())


def uncertainty(prob: np.ndarray, threshold: float) -> float:
    """How unsure the model is about this image, in [0, 1] (active-learning order).

    The larger of: the entropy of the image-level decision (score near the threshold),
    and the share of ambiguous pixels (0.2 < p < 0.8) relative to the predicted area.
    """
    score = defect_score(prob)
    shifted = 0.5 + (score - threshold) / (2 * max(threshold, 1 - threshold))
    image_level = _binary_entropy(shifted)
    ambiguous = int(((prob > 0.2) & (prob < 0.8)).sum())
    predicted = int((prob > threshold).sum())
    boundary = min(1.0, ambiguous / max(predicted, 1)) if ambiguous else 0.0
    return float(max(image_level, boundary))
