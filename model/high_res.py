"""Early, high-resolution features for the mask up-sampling (SAM-HQ's remedy for thin defects).

SAM's decoder reads masks off an embedding up-scaled 4× from the grid; thin and tiny
defects are lost there. This module brings early encoder features to that resolution:
the context levels (stride ≥ 4) are fused at their finest stride, where the norm and
depthwise refinement are cheap, up-sampled to the mask grid, and the detail levels
(stride < 4, e.g. EfficientNet's stride-2 map) are added through a 1×1 projection, so the
finest edges reach the mask without a costly refinement at full mask resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from model.fusion import Contrasted, FeatureFusion, contrasted

DETAIL_MAX_STRIDE = 2  # feature maps this fine are detail levels; coarser ones are context


def pixel_levels(strides: Sequence[int]) -> list[int]:
    """Indices of levels at full resolution (stride 1: the pixels themselves)."""
    return [i for i, s in enumerate(strides) if s == 1]


def split_levels(strides: Sequence[int]) -> tuple[list[int], list[int]]:
    """Indices of (context, detail) levels, pixel levels left out; all levels are context
    when none is coarser than a detail level."""
    context = [i for i, s in enumerate(strides) if s > DETAIL_MAX_STRIDE]
    detail = [i for i, s in enumerate(strides) if 1 < s <= DETAIL_MAX_STRIDE]
    return (context, detail) if context else ([i for i, s in enumerate(strides) if s > 1], [])


class HighResFeatures(nn.Module):
    """Multi-level features → (B, channels, S/out_stride, S/out_stride)."""

    def __init__(
        self,
        *,
        in_channels: Sequence[int],
        in_strides: Sequence[int],
        out_stride: int,
        channels: int,
    ) -> None:
        super().__init__()
        context, detail = split_levels(in_strides)
        self.out_stride = out_stride
        fuse_stride = max(out_stride, min(in_strides[i] for i in context))
        self.context = FeatureFusion(
            in_channels=list(in_channels),
            in_strides=list(in_strides),
            out_stride=fuse_stride,
            width=channels,
            out_channels=channels,
            levels=context,
        )
        self.detail_levels = detail
        self.detail = nn.ModuleList(
            nn.Conv2d(2 * in_channels[i], channels, kernel_size=1) for i in detail
        )

    def forward(self, features: list[torch.Tensor] | Contrasted) -> torch.Tensor:
        levels = contrasted(features)
        x = self.context(levels)
        scale = self.context.out_stride // self.out_stride
        if scale > 1:
            x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        for proj, i in zip(self.detail, self.detail_levels, strict=True):
            d = proj(levels.level(i, proj.weight.dtype))
            if d.shape[-2:] != x.shape[-2:]:
                d = F.interpolate(d, size=x.shape[-2:], mode="bilinear", align_corners=False)
            x = x + d
        return x
