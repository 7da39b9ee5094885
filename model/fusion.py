"""Feature-fusion network: merges frozen multi-level features onto one grid.

Used twice: as the fusion network that feeds the heatmap head, and (for encoders with no
pretrained SAM embedding) as the neck that makes the 256-channel embedding grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from torch import nn


class FeatureFusion(nn.Module):
    """Project each level with a 1×1 conv, resize to the output grid, sum, refine.

    Refinement is a depthwise 3×3 + pointwise conv pair, cheap enough to run at stride 4.
    """

    def __init__(
        self,
        *,
        in_channels: list[int],
        in_strides: list[int],
        out_stride: int,
        width: int,
        out_channels: int,
    ) -> None:
        super().__init__()
        self.in_strides = list(in_strides)
        self.out_stride = out_stride
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, kernel_size=1) for c in in_channels)
        self.refine = nn.Sequential(
            LayerNorm2d(width),
            nn.GELU(),
            nn.Conv2d(width, width, kernel_size=3, padding=1, groups=width),
            nn.Conv2d(width, out_channels, kernel_size=1),
            LayerNorm2d(out_channels),
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        h = features[0].shape[-2] * self.in_strides[0] // self.out_stride
        w = features[0].shape[-1] * self.in_strides[0] // self.out_stride
        merged = None
        for proj, feat in zip(self.lateral, features, strict=True):
            x = proj(feat.to(proj.weight.dtype))
            if x.shape[-2:] != (h, w):
                x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
            merged = x if merged is None else merged + x
        assert merged is not None
        return self.refine(merged)
