"""SAM ViT image encoders (vit_b / vit_l / vit_h from Meta's checkpoints, and a tiny one).

The official checkpoints are read from a local path the user gives (see `model.weights`
for the download command), loaded with `map_location` and strict keys, and recognised by
sha256. Intermediate features are the channels-last outputs of selected ViT blocks,
returned channels-first. SAM's `pos_embed` fixes the input size, so it is interpolated
for other sizes (the relative position tables are interpolated by SAM itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam
from torch import nn

from model.encoders.base import EncoderOutput, FrozenEncoder
from model.encoders.sam_modules import SAM_EMBED_DIM, make_mask_decoder, make_prompt_encoder
from model.errors import WeightsError
from model.hashing import sha256_file
from model.weights import OFFICIAL_WEIGHTS

PATCH_SIZE = 16
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class SamVariant:
    """Architecture of one SAM image encoder (keyword-for-keyword as in segment-anything)."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    native_size: int = 1024
    window_size: int = 14

    @property
    def intermediate_blocks(self) -> tuple[int, ...]:
        """Default blocks whose outputs feed the fusion network: the global-attention ones."""
        return self.global_attn_indexes


SAM_VARIANTS: dict[str, SamVariant] = {
    "vit_b": SamVariant(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    "vit_l": SamVariant(
        embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)
    ),
    "vit_h": SamVariant(
        embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)
    ),
    # Small random SAM-architecture encoder for fast tests only.
    "tiny": SamVariant(
        embed_dim=32,
        depth=2,
        num_heads=2,
        global_attn_indexes=(1,),
        native_size=128,
        window_size=4,
    ),
}


def build_sam(variant: SamVariant) -> Sam:
    """A randomly initialised SAM of `variant` at its native input size."""
    grid = variant.native_size // PATCH_SIZE
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=variant.depth,
            embed_dim=variant.embed_dim,
            img_size=variant.native_size,
            mlp_ratio=4,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            num_heads=variant.num_heads,
            patch_size=PATCH_SIZE,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=variant.global_attn_indexes,
            window_size=variant.window_size,
            out_chans=SAM_EMBED_DIM,
        ),
        prompt_encoder=make_prompt_encoder(grid_size=grid, input_size=variant.native_size),
        mask_decoder=make_mask_decoder(),
        pixel_mean=list(SAM_PIXEL_MEAN),
        pixel_std=list(SAM_PIXEL_STD),
    )


def load_sam_checkpoint(sam: Sam, path: Path, variant_name: str) -> str:
    """Load an official-format SAM state dict into `sam` (strict keys); return its sha256."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"SAM checkpoint not found: {path} (download it with "
            f"'heatprompt weights download sam_{variant_name}')"
        )
    digest = sha256_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({exc})") from exc
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state dict, found {type(state).__name__}")
    try:
        sam.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise WeightsError(f"{path}: not a SAM {variant_name} checkpoint ({first})") from exc
    return digest


def describe_sam_file(sha256: str) -> str:
    """'official sam_vit_b (sam_vit_b_01ec64.pth)' or 'unrecognised file'."""
    for name, spec in OFFICIAL_WEIGHTS.items():
        if spec.sha256 == sha256:
            return f"official {name} ({spec.filename})"
    return "unrecognised file (not one of Meta's published checkpoints)"


class SamViTEncoder(FrozenEncoder):
    """A frozen SAM ViT image encoder with intermediate block features."""

    def __init__(
        self,
        variant_name: str,
        *,
        checkpoint: Path | None = None,
        input_size: int | None = None,
        intermediate_blocks: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        if variant_name not in SAM_VARIANTS:
            raise ValueError(f"unknown SAM variant {variant_name!r}; known: {list(SAM_VARIANTS)}")
        variant = SAM_VARIANTS[variant_name]
        sam = build_sam(variant)
        self.weights_sha256 = None
        self.weights_description = "random weights"
        if checkpoint is not None:
            self.weights_sha256 = load_sam_checkpoint(sam, checkpoint, variant_name)
            self.weights_description = describe_sam_file(self.weights_sha256)
        self.encoder_id = f"sam_{variant_name}"
        self.input_size = input_size or variant.native_size
        if self.input_size % PATCH_SIZE:
            raise ValueError(f"SAM input size must be a multiple of 16, got {self.input_size}")
        self.embedding_stride = PATCH_SIZE
        self.blocks_out = tuple(intermediate_blocks or variant.intermediate_blocks)
        if any(not 0 <= b < variant.depth for b in self.blocks_out):
            raise ValueError(
                f"intermediate blocks {self.blocks_out} outside 0..{variant.depth - 1}"
            )
        self.feature_channels = [variant.embed_dim] * len(self.blocks_out)
        self.feature_strides = [PATCH_SIZE] * len(self.blocks_out)
        self.has_embedding = True
        self.decoder_pretrained = checkpoint is not None
        self.image_encoder = sam.image_encoder
        # The prompt encoder / decoder travel with the encoder but are not its submodules:
        # the heads model owns them (frozen or trainable, see `decoder_pretrained`).
        pe, md = sam.prompt_encoder, sam.mask_decoder
        pe.image_embedding_size = (self.grid_size, self.grid_size)
        pe.input_image_size = (self.input_size, self.input_size)
        object.__setattr__(self, "_sam_modules", (pe, md))
        self.register_buffer("pixel_mean", torch.tensor(SAM_PIXEL_MEAN).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(SAM_PIXEL_STD).view(1, 3, 1, 1))
        self.freeze()

    @property
    def cache_id(self) -> str:
        # SAM files of one variant differ (fine-tuned copies): the weights are part of it.
        blocks = "_".join(str(b) for b in self.blocks_out)
        weights = (self.weights_sha256 or "random")[:16]
        return f"{self.encoder_id}.{weights}.blocks{blocks}"

    def make_sam_modules(self) -> tuple[PromptEncoder, MaskDecoder]:
        return self._sam_modules  # type: ignore[attr-defined]

    def _pos_embed(self, grid_hw: tuple[int, int]) -> torch.Tensor:
        pos = self.image_encoder.pos_embed
        if pos.shape[1:3] == grid_hw:
            return pos
        resized = F.interpolate(
            pos.permute(0, 3, 1, 2), size=grid_hw, mode="bicubic", align_corners=False
        )
        return resized.permute(0, 2, 3, 1)

    def _encode(self, x: torch.Tensor) -> EncoderOutput:
        enc = self.image_encoder
        x = enc.patch_embed(x)
        x = x + self._pos_embed((x.shape[1], x.shape[2]))
        features: list[torch.Tensor] = []
        for i, blk in enumerate(enc.blocks):
            x = blk(x)
            if i in self.blocks_out:
                features.append(x.permute(0, 3, 1, 2).contiguous())  # channels-last → first
        embedding = enc.neck(x.permute(0, 3, 1, 2))
        return EncoderOutput(features=features, embedding=embedding)
