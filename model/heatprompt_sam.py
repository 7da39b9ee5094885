"""The heatmap-prompted SAM: trainable heads around frozen SAM parts.

    frozen features ─► feature fusion ─► heatmap head ─► heatmap
                                                           │
    embedding (SAM's, or the neck's) ─► segment encoding ◄─┘ ─► dense prompt
                                                           │
    early features ─► high-res path ─► SAM mask decoder (batched) ◄┘ ─► mask logits
                                                           │
    pixels (stride-1 level, if any) ─► full-res correction ◄┘ ─► mask logits at input size

Trainable: neck (when the encoder has no SAM embedding), fusion, heatmap head, segment
encoding, high-res path, full-res correction, and the prompt encoder / mask decoder only
when no pretrained SAM decoder exists for the encoder. The encoder itself lives outside
this module (its outputs are cached).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model.encoders.base import EncoderOutput, FrozenEncoder
from model.encoders.sam_modules import SAM_EMBED_DIM
from model.full_res import FullResRefinement
from model.fusion import Contrasted, FeatureFusion
from model.heatmap_head import HeatmapHead
from model.high_res import HighResFeatures, pixel_levels, split_levels
from model.mask_decoding import decode_batched
from model.segment_encoding import SegmentEncoding


@dataclass(frozen=True)
class HeadsConfig:
    """Sizes of the trainable parts; stored in every checkpoint."""

    fusion_channels: int = 64
    neck_width: int = 128
    segment_hidden: int = 64
    high_res: bool = True  # SAM-HQ-style early features in the mask up-sampling
    full_res: bool = True  # per-pixel correction from the pixels (encoders that pass them)
    full_res_hidden: int = 32
    # Fused features at this many times the embedding grid's resolution; the heatmap head
    # halves it, so 2 puts the heatmap on the embedding grid (1: half the grid's size).
    fusion_scale: int = 2

    def __post_init__(self) -> None:
        if self.fusion_scale not in (1, 2, 4):
            raise ValueError(f"fusion_scale must be 1, 2 or 4, got {self.fusion_scale}")

    def as_dict(self) -> dict[str, int | bool]:
        return {
            "fusion_channels": self.fusion_channels,
            "neck_width": self.neck_width,
            "segment_hidden": self.segment_hidden,
            "high_res": self.high_res,
            "full_res": self.full_res,
            "full_res_hidden": self.full_res_hidden,
            "fusion_scale": self.fusion_scale,
        }


@dataclass
class HeatPromptOutput:
    """heatmap_logits (B, 1, g·k/2, g·k/2), k = fusion_scale; mask_logits (B, 1, S, S) at
    input size; iou (B, 1); decoder_logits (B, 1, 4g, 4g): the SAM decoder's own mask,
    before the high-resolution and full-resolution refinements (deeply supervised)."""

    heatmap_logits: torch.Tensor
    mask_logits: torch.Tensor
    iou_pred: torch.Tensor
    decoder_logits: torch.Tensor


class HeatPromptSAM(nn.Module):
    """Heads + SAM prompt encoder / mask decoder for one frozen encoder's outputs."""

    def __init__(self, encoder: FrozenEncoder, *, config: HeadsConfig | None = None) -> None:
        super().__init__()
        self.config = config or HeadsConfig()
        self.input_size = encoder.input_size
        self.grid_size = encoder.grid_size
        self.decoder_frozen = encoder.decoder_pretrained
        # Detail levels (stride 2) only feed the high-res path, pixels the full-res one.
        context, _ = split_levels(encoder.feature_strides)
        self.neck: FeatureFusion | None = None
        if not encoder.has_embedding:
            self.neck = FeatureFusion(
                in_channels=encoder.feature_channels,
                in_strides=encoder.feature_strides,
                out_stride=encoder.embedding_stride,
                width=self.config.neck_width,
                out_channels=SAM_EMBED_DIM,
                levels=context,
            )
        self.fusion = FeatureFusion(
            in_channels=encoder.feature_channels,
            in_strides=encoder.feature_strides,
            out_stride=max(1, encoder.embedding_stride // self.config.fusion_scale),
            width=self.config.fusion_channels,
            out_channels=self.config.fusion_channels,
            levels=context,
        )
        self.heatmap_head = HeatmapHead(in_channels=self.config.fusion_channels)
        # Early features at the decoder's output resolution (4× the embedding grid).
        self.high_res: HighResFeatures | None = None
        if self.config.high_res:
            self.high_res = HighResFeatures(
                in_channels=encoder.feature_channels,
                in_strides=encoder.feature_strides,
                out_stride=max(1, encoder.embedding_stride // 4),
                channels=SAM_EMBED_DIM // 8,
            )
        # The pixels themselves, where the encoder passes them on (a stride-1 level).
        self.pixel_levels = pixel_levels(encoder.feature_strides)
        self.full_res: FullResRefinement | None = None
        if self.config.full_res and self.pixel_levels:
            self.full_res = FullResRefinement(
                pixel_channels=sum(encoder.feature_channels[i] for i in self.pixel_levels),
                hidden=self.config.full_res_hidden,
            )
        self.segment_encoding = SegmentEncoding(
            embed_dim=SAM_EMBED_DIM, hidden=self.config.segment_hidden
        )
        self.prompt_encoder, self.mask_decoder = encoder.make_sam_modules()
        if self.decoder_frozen:
            for module in (self.prompt_encoder, self.mask_decoder):
                for p in module.parameters():
                    p.requires_grad_(False)

    # ------------------------------------------------------------------ checkpoints
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights a checkpoint must hold: everything but pretrained, frozen SAM parts."""
        frozen = ("prompt_encoder.", "mask_decoder.") if self.decoder_frozen else ()
        return {
            k: v.detach().cpu() for k, v in self.state_dict().items() if not k.startswith(frozen)
        }

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load `trainable_state_dict()` output with strict key checking."""
        expected = set(self.trainable_state_dict())
        missing, unexpected = expected - set(state), set(state) - expected
        if missing or unexpected:
            raise KeyError(
                f"checkpoint keys do not match the model: {len(missing)} missing "
                f"(e.g. {sorted(missing)[:2]}), {len(unexpected)} unexpected "
                f"(e.g. {sorted(unexpected)[:2]})"
            )
        self.load_state_dict(state, strict=False)

    # ------------------------------------------------------------------ forward
    def embedding(self, frozen: EncoderOutput, levels: Contrasted | None = None) -> torch.Tensor:
        """The 256-channel embedding grid: SAM's own, or the neck's."""
        if frozen.embedding is not None:
            return frozen.embedding.to(self.segment_encoding.fuse.weight.dtype)
        assert self.neck is not None
        return self.neck(levels if levels is not None else frozen.features)

    def forward(
        self,
        frozen: EncoderOutput,
        *,
        use_prompt: bool | torch.Tensor = True,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> HeatPromptOutput:
        """Run the heads and the decoder on frozen encoder outputs.

        use_prompt: True / False for the whole batch, or a (B,) bool tensor; where False
            the heatmap prompt is replaced by SAM's "no mask" embedding (the ablation).
        points: optional click prompts, coords (B, N, 2) in input pixels (x, y) and
            labels (B, N) with 1 positive, 0 negative, -1 padding.
        """
        levels = Contrasted(frozen.features)  # contrast channels shared by every reader
        embedding = self.embedding(frozen, levels)
        b = embedding.shape[0]
        heatmap_logits = self.heatmap_head(self.fusion(levels))
        dense = self.segment_encoding(torch.sigmoid(heatmap_logits), embedding)
        no_prompt = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand_as(dense)
        if isinstance(use_prompt, bool):
            if not use_prompt:
                dense = no_prompt
        else:
            keep = use_prompt.to(dense.device).view(b, 1, 1, 1)
            dense = torch.where(keep, dense, no_prompt)
        if points is None:
            sparse = embedding.new_zeros((b, 0, SAM_EMBED_DIM))
        else:
            sparse, _ = self.prompt_encoder(points=points, boxes=None, masks=None)
        low_res, iou_pred, decoder_logits = decode_batched(
            self.mask_decoder,
            image_embeddings=embedding,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            hq_features=None if self.high_res is None else self.high_res(levels),
        )
        mask_logits = low_res
        if low_res.shape[-1] != self.input_size:
            mask_logits = F.interpolate(
                low_res,
                size=(self.input_size, self.input_size),
                mode="bilinear",
                align_corners=False,
            )
        if self.full_res is not None:
            pixels = torch.cat([frozen.features[i] for i in self.pixel_levels], dim=1)
            mask_logits = self.full_res(mask_logits, pixels)
        return HeatPromptOutput(heatmap_logits, mask_logits, iou_pred, decoder_logits)
