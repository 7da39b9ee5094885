"""Feature-fusion network: merges frozen multi-level features onto one grid.

Used twice: as the fusion network that feeds the heatmap head, and (for encoders with no
pretrained SAM embedding) as the neck that makes the 256-channel embedding grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from torch import nn


def texture_contrast(feat: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Each channel standardised by its own image-wide mean and spread.

    A surface is mostly defect-free texture, so the image's own feature statistics are
    those of the normal surface; a defect is what stands out from them. Making that
    explicit lets small heads find faint defects that look unremarkable in absolute terms.
    """
    x = feat.float()  # statistics in full precision, also under autocast
    # Two plain passes (mean, then the centred squares, which the output reuses) and one
    # multiply: the same unbiased statistics as `std`, 2–10× faster on a CPU than
    # `var_mean`'s one-pass (Welford) reduction over a batch of tiles' levels.
    centred = x - x.mean(dim=(-2, -1), keepdim=True)
    count = x.shape[-2] * x.shape[-1]
    var = (centred * centred).sum(dim=(-2, -1), keepdim=True) / max(count - 1, 1)
    scale = 1.0 / (var.sqrt() + eps)
    out = centred * scale if centred.requires_grad else centred.mul_(scale)
    return out.to(feat.dtype)


def with_contrast(feat: torch.Tensor) -> torch.Tensor:
    """Channels of `feat` followed by its `texture_contrast` (2× the channels)."""
    return torch.cat([feat, texture_contrast(feat)], dim=1)


class Contrasted:
    """The encoder levels with their texture-contrast channels, each computed on first use.

    The neck, the fusion network and the high-resolution path read the same levels; the
    image statistics behind the contrast channels are then taken once per forward pass,
    not once per reader (they were about a third of the heads' time on a CPU).
    """

    def __init__(self, features: list[torch.Tensor]) -> None:
        self.features = features
        self._levels: dict[tuple[int, torch.dtype], torch.Tensor] = {}

    def level(self, index: int, dtype: torch.dtype) -> torch.Tensor:
        """`with_contrast` of level `index`, in `dtype`."""
        key = (index, dtype)
        if key not in self._levels:
            self._levels[key] = with_contrast(self.features[index].to(dtype))
        return self._levels[key]


def contrasted(features: list[torch.Tensor] | Contrasted) -> Contrasted:
    """`features` as a `Contrasted` (itself when it already is one)."""
    return features if isinstance(features, Contrasted) else Contrasted(features)


class FeatureFusion(nn.Module):
    """Project each level with a 1×1 conv, resize to the output grid, sum, refine.

    Each level enters with its texture-contrast channels (`with_contrast`). Refinement is
    a depthwise 3×3 + pointwise conv pair, cheap enough to run at stride 4.
    """

    def __init__(
        self,
        *,
        in_channels: list[int],
        in_strides: list[int],
        out_stride: int,
        width: int,
        out_channels: int,
        levels: Sequence[int] | None = None,
    ) -> None:
        """`levels` picks which of the encoder's feature maps to use (default: all)."""
        super().__init__()
        self.levels = list(levels) if levels is not None else list(range(len(in_channels)))
        self.in_strides = [in_strides[i] for i in self.levels]
        self.out_stride = out_stride
        self.lateral = nn.ModuleList(
            nn.Conv2d(2 * in_channels[i], width, kernel_size=1) for i in self.levels
        )
        self.refine = nn.Sequential(
            LayerNorm2d(width),
            nn.GELU(),
            nn.Conv2d(width, width, kernel_size=3, padding=1, groups=width),
            nn.Conv2d(width, out_channels, kernel_size=1),
            LayerNorm2d(out_channels),
        )

    def forward(self, features: list[torch.Tensor] | Contrasted) -> torch.Tensor:
        levels = contrasted(features)
        first = levels.features[self.levels[0]]
        h = first.shape[-2] * self.in_strides[0] // self.out_stride
        w = first.shape[-1] * self.in_strides[0] // self.out_stride
        merged = None
        for proj, index in zip(self.lateral, self.levels, strict=True):
            x = proj(levels.level(index, proj.weight.dtype))
            if x.shape[-2:] != (h, w):
                x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
            merged = x if merged is None else merged + x
        assert merged is not None
        return self.refine(merged)
