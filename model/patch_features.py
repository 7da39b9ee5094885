"""Locally aware patch features of a frozen encoder, the input of the normality model.

As in PatchCore (Roth et al., CVPR 2022): two feature maps, each averaged over its 3×3
neighbourhood so a patch carries its surroundings, the coarser one upsampled to the finer
grid and the two concatenated. The finer map (stride 8) localises; the coarser one is the
deepest map (stride 32 on EfficientNet-Lite0), not PatchCore's stride 16: on the unseen
synthetic surfaces (`tests/benchmarks/bench_normality.py`, 20 good images, 256 px) strides
8+16 gave image AUROC 0.70 and strides 8+32 gave 0.90, as the deeper map separates a
defect from the wide variety of normal textures better. Each map is also standardised by the
image's own per-channel statistics (`texture_contrast`, as the fusion network does): a
surface's colour and brightness vary from part to part, and what matters is what stands
out from the part's own texture.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from model.encoders.base import EncoderOutput, FrozenEncoder
from model.feature_cache import CacheKey, FeatureCache
from model.fusion import texture_contrast
from model.images import resize_image

TARGET_STRIDES = (8, 32)


def pick_levels(strides: Sequence[int], channels: Sequence[int]) -> tuple[int, int]:
    """Indices of the two feature levels nearest strides 8 and 32.

    Levels with 3 channels (the normalised image itself) are skipped. When every level has
    the same stride (a ViT), the two middle blocks are taken: mid-depth features transfer
    best.
    """
    usable = [i for i, c in enumerate(channels) if c > 3]
    if len(usable) < 2:
        raise ValueError("the encoder needs at least two feature levels for patch features")
    if len({strides[i] for i in usable}) == 1:
        mid = len(usable) // 2
        return usable[mid - 1], usable[mid]
    fine = min(usable, key=lambda i: (abs(np.log2(strides[i] / TARGET_STRIDES[0])), i))
    rest = [i for i in usable if i != fine and strides[i] >= strides[fine]]
    coarse = min(rest, key=lambda i: (abs(np.log2(strides[i] / TARGET_STRIDES[1])), -i))
    return fine, coarse


def patch_embedding(
    features: Sequence[torch.Tensor], levels: tuple[int, int], *, contrast: bool = True
) -> torch.Tensor:
    """(B, D, h, w) float32 patch features on the grid of the finer of `levels`."""
    maps = []
    for i in levels:
        x = features[i].float()
        if contrast:
            x = texture_contrast(x)
        maps.append(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
    size = maps[0].shape[-2:]
    maps = [
        m if m.shape[-2:] == size else F.interpolate(m, size=size, mode="bilinear") for m in maps
    ]
    return torch.cat(maps, dim=1)


def encode_cached(
    encoder: FrozenEncoder,
    images: Sequence[np.ndarray],
    shas: Sequence[str],
    cache: FeatureCache | None,
    *,
    batch_size: int = 8,
) -> EncoderOutput:
    """Frozen outputs for RGB images of any size, resized to the encoder's input size.

    Keys match the predictor's, so an image is encoded once whether it is predicted,
    scored or used as a known-good sample.
    """
    size = encoder.input_size

    def compute(indices: list[int]) -> EncoderOutput:
        batch = np.stack([resize_image(images[i], size) for i in indices])
        return encoder.encode(torch.from_numpy(batch))

    if cache is None:
        chunks = [
            compute(list(range(i, min(i + batch_size, len(images)))))
            for i in range(0, len(images), batch_size)
        ]
        return EncoderOutput.stack(chunks)
    keys = [CacheKey(sha, encoder.cache_id, size) for sha in shas]
    return cache.get_or_compute(keys, compute, batch_size=batch_size)
