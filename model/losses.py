"""Training losses: heatmap MSE plus mask BCE and Dice, with configurable weights.

The SAM decoder's own mask (before the high-resolution refinements) is supervised too,
against the mask label averaged down to its grid: without it, a decoder trained from
scratch leaves the whole mask to the linear readout of the early features and stops
looking at its prompted embedding, so the heatmap prompt would change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    """Weights of the terms (Dice and the decoder's own mask may be switched off with 0)."""

    heatmap: float = 5.0
    bce: float = 1.0
    dice: float = 1.0
    decoder: float = 2.0  # BCE + Dice of the decoder's own mask, on its grid


def heatmap_target(label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Reduce a full-resolution heatmap label to the head's grid by max-pooling (keeps peaks)."""
    return F.adaptive_max_pool2d(label, size)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss per image, averaged; an empty target with an empty prediction costs ~0."""
    prob = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1)
    inter = (prob * target).sum(1)
    denom = prob.sum(1) + target.sum(1)
    return (1 - (2 * inter + eps) / (denom + eps)).mean()


def heatprompt_loss(
    heatmap_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    heatmap_label: torch.Tensor,
    mask_label: torch.Tensor,
    weights: LossWeights,
    *,
    decoder_logits: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The method's loss; returns each term and their weighted `total`."""
    target = heatmap_target(heatmap_label, heatmap_logits.shape[-2:])
    heat = F.mse_loss(torch.sigmoid(heatmap_logits.float()), target)
    bce = F.binary_cross_entropy_with_logits(mask_logits.float(), mask_label)
    dice = dice_loss(mask_logits.float(), mask_label) if weights.dice else bce.new_zeros(())
    total = weights.heatmap * heat + weights.bce * bce + weights.dice * dice
    decoder = bce.new_zeros(())
    if decoder_logits is not None and weights.decoder:
        logits = decoder_logits.float()
        coarse = F.adaptive_avg_pool2d(mask_label, logits.shape[-2:])  # share of defect
        decoder = F.binary_cross_entropy_with_logits(logits, coarse)
        if weights.dice:
            decoder = decoder + dice_loss(logits, coarse)
        total = total + weights.decoder * decoder
    return {"total": total, "heatmap": heat, "bce": bce, "dice": dice, "decoder": decoder}
