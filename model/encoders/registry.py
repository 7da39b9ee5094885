"""Encoder names the command line and checkpoints use, and how to build each."""

from __future__ import annotations

from pathlib import Path

import torch

from model.encoders.base import FrozenEncoder
from model.errors import WeightsError

ENCODER_NAMES = ("effnet_lite0", "sam_vit_b", "sam_vit_l", "sam_vit_h", "sam_tiny")
DEFAULT_ENCODER = "effnet_lite0"
RANDOM_ENCODER_SEED = 0


def build_encoder(
    name: str,
    *,
    input_size: int | None = None,
    sam_checkpoint: Path | str | None = None,
    embedding_stride: int | None = None,
    pretrained: bool = True,
) -> FrozenEncoder:
    """Build a frozen encoder by name.

    `sam_vit_*` need `sam_checkpoint` (Meta's file) unless `pretrained` is False, which
    gives random weights of the same size (for timing). `sam_tiny` is random and small.
    """
    if name == "effnet_lite0":
        from model.encoders.effnet import EffNetLite0Encoder

        return EffNetLite0Encoder(
            input_size=input_size or 256,
            embedding_stride=embedding_stride or 16,
            pretrained=pretrained,
        )
    if name in ("sam_vit_b", "sam_vit_l", "sam_vit_h", "sam_tiny"):
        from model.encoders.sam_vit import SamViTEncoder

        variant = name.removeprefix("sam_")
        if variant != "tiny" and pretrained and sam_checkpoint is None:
            raise WeightsError(
                f"encoder {name} needs Meta's checkpoint: pass --sam-checkpoint PATH "
                f"(get it with 'heatprompt weights download {name}')"
            )
        checkpoint = Path(sam_checkpoint) if sam_checkpoint is not None else None
        if checkpoint is not None:
            return SamViTEncoder(variant, checkpoint=checkpoint, input_size=input_size)
        # Random weights come from a fixed seed, so the same encoder is rebuilt at load time.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_ENCODER_SEED)
            encoder = SamViTEncoder(variant, input_size=input_size)
        encoder.weights_sha256 = f"random-seed-{RANDOM_ENCODER_SEED}"
        return encoder
    raise ValueError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODER_NAMES)}")
