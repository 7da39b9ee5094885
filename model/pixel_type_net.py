"""The per-pixel type classifier's network (`model.pixel_type_head` trains and reads it).

Its own module so the checkpoint can rebuild it without importing the training code.
"""

from __future__ import annotations

import torch
from torch import nn

HIDDEN = 32


class PixelTypeNet(nn.Module):
    """(B, in_channels, h, w) frozen inputs → (B, classes, h, w) type logits: a 1×1
    projection, two 3×3 convolutions for a little spatial context, a 1×1 classifier."""

    def __init__(self, in_channels: int, classes: int, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.in_channels, self.classes, self.hidden = in_channels, classes, hidden
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size=1),
            nn.GELU(),
            nn.Conv2d(hidden, hidden, kernel_size=3, padding=1),
            nn.GELU(),
            nn.Conv2d(hidden, hidden, kernel_size=3, padding=1),
            nn.GELU(),
            nn.Conv2d(hidden, classes, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
