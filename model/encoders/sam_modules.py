"""Fresh SAM-architecture prompt encoder and mask decoder, sized for an embedding grid."""

from __future__ import annotations

from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

SAM_EMBED_DIM = 256


def make_prompt_encoder(*, grid_size: int, input_size: int) -> PromptEncoder:
    """SAM's prompt encoder for a `grid_size`² embedding of an `input_size`² image."""
    return PromptEncoder(
        embed_dim=SAM_EMBED_DIM,
        image_embedding_size=(grid_size, grid_size),
        input_image_size=(input_size, input_size),
        mask_in_chans=16,
    )


def make_mask_decoder() -> MaskDecoder:
    """SAM's mask decoder with the official architecture (two-way transformer, depth 2)."""
    return MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(
            depth=2, embedding_dim=SAM_EMBED_DIM, mlp_dim=2048, num_heads=8
        ),
        transformer_dim=SAM_EMBED_DIM,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
