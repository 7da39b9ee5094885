"""Segment-encoding network: turns the predicted heatmap into SAM's dense prompt.

The heatmap is aligned (resized) to the embedding grid, encoded by a small conv stack
and fused with the image embedding by a 1×1 conv. The result plays the part of SAM's
dense prompt embedding, which the mask decoder adds to the image embedding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from torch import nn


class SegmentEncoding(nn.Module):
    """heatmap (B, 1, h, w) in [0, 1] + embedding (B, C, g, g) → dense prompt (B, C, g, g)."""

    def __init__(self, *, embed_dim: int = 256, hidden: int = 64) -> None:
        super().__init__()
        self.encode = nn.Sequential(
            nn.Conv2d(1, hidden // 4, kernel_size=3, padding=1),
            LayerNorm2d(hidden // 4),
            nn.GELU(),
            nn.Conv2d(hidden // 4, hidden, kernel_size=3, padding=1),
            LayerNorm2d(hidden),
            nn.GELU(),
        )
        self.fuse = nn.Conv2d(hidden + embed_dim, embed_dim, kernel_size=1)

    def forward(self, heatmap: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        aligned = F.interpolate(
            heatmap, size=embedding.shape[-2:], mode="bilinear", align_corners=False
        )
        return self.fuse(torch.cat([self.encode(aligned), embedding], dim=1))
