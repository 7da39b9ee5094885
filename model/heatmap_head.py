"""Heatmap head: a down-sampling conv layer, then a 1×1 conv to one channel of logits."""

from __future__ import annotations

import torch
from torch import nn


class HeatmapHead(nn.Module):
    """Predicts defect-heatmap logits at half the resolution of the fused features."""

    def __init__(self, *, in_channels: int, hidden: int = 64) -> None:
        super().__init__()
        self.down = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size=3, stride=2, padding=1),
            nn.GELU(),
        )
        self.out = nn.Conv2d(hidden, 1, kernel_size=1)

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        return self.out(self.down(fused))
