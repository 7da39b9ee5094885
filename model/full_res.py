"""Full-resolution correction of the mask logits from the pixels themselves.

SAM's decoder yields one logit per cell of a grid 4× finer than its embedding; the final
resize to input size can only interpolate between cells, so a defect one or two pixels
wide (a hairline, a speck) can never be drawn sharper than a cell. This small conv pair
looks at the interpolated logits next to the image's own pixels (and their texture
contrast) and corrects each pixel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.fusion import with_contrast

FOLD = 2  # pixels per side folded into channels


class FullResRefinement(nn.Module):
    """(logits (B, 1, S, S), pixels (B, C, S, S)) → corrected logits (B, 1, S, S).

    Works on 2×2 pixel blocks folded into channels (pixel unshuffle), so its convs run
    at half resolution with mostly 1×1 kernels: cheap on a CPU, yet every output pixel
    gets its own correction.
    """

    def __init__(self, *, pixel_channels: int, hidden: int = 16) -> None:
        super().__init__()
        cells = FOLD * FOLD
        self.net = nn.Sequential(
            nn.Conv2d(cells * (1 + 2 * pixel_channels), hidden, kernel_size=1),
            nn.GELU(),
            nn.Conv2d(hidden, hidden, kernel_size=3, padding=1, groups=hidden),
            nn.GELU(),
            nn.Conv2d(hidden, cells, kernel_size=1),
        )
        last = self.net[-1]
        assert isinstance(last, nn.Conv2d)
        nn.init.zeros_(last.weight)  # starts as the identity: the decoder's logits unchanged
        nn.init.zeros_(last.bias)

    def forward(self, logits: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        x = torch.cat([logits, with_contrast(pixels.to(logits.dtype))], dim=1)
        delta = F.pixel_shuffle(self.net(F.pixel_unshuffle(x, FOLD)), FOLD)
        return logits + delta
