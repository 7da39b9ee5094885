"""A batched path through SAM's `MaskDecoder`.

The stock `MaskDecoder.predict_masks` repeats each image embedding once per prompt set,
which is right for many prompts on one image but wrong for B images with one prompt set
each (it would build B² pairs). This runs the same layers with image i paired only with
prompt set i.
"""

from __future__ import annotations

import torch
from segment_anything.modeling import MaskDecoder


def decode_batched(
    decoder: MaskDecoder,
    *,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse_prompt_embeddings: torch.Tensor,
    dense_prompt_embeddings: torch.Tensor,
    hq_features: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Single-mask logits (B, 1, 4g, 4g), IoU predictions (B, 1), and the decoder's own
    mask logits (B, 1, 4g, 4g) before the high-resolution features, one per image.

    `hq_features` (B, C/8, 4g, 4g), when given, are added to the decoder's up-scaled
    embedding before the mask is read out: the SAM-HQ remedy that brings early,
    high-resolution encoder features to thin structures. The readout is linear, so the
    mask is the decoder's own mask plus the high-resolution features' share; training
    supervises the former too, so the decoder cannot leave the work to the latter.
    """
    b = image_embeddings.shape[0]
    if sparse_prompt_embeddings.shape[0] != b or dense_prompt_embeddings.shape[0] != b:
        raise ValueError("one sparse and one dense prompt set per image expected")
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    output_tokens = output_tokens.unsqueeze(0).expand(b, -1, -1)
    tokens = torch.cat((output_tokens, sparse_prompt_embeddings.to(output_tokens.dtype)), dim=1)
    src = image_embeddings + dense_prompt_embeddings
    pos_src = image_pe.expand(b, -1, -1, -1)
    _, c, h, w = src.shape
    hs, src = decoder.transformer(src, pos_src, tokens)
    iou_token_out = hs[:, 0, :]
    mask_tokens_out = hs[:, 1 : 1 + decoder.num_mask_tokens, :]
    upscaled = decoder.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
    # Mask token 0 is SAM's single-mask output (multimask_output=False).
    hyper_in = decoder.output_hypernetworks_mlps[0](mask_tokens_out[:, 0, :]).unsqueeze(1)
    _, uc, uh, uw = upscaled.shape
    own = (hyper_in @ upscaled.reshape(b, uc, uh * uw)).reshape(b, 1, uh, uw)
    masks = own
    if hq_features is not None:
        hq = hq_features.to(hyper_in.dtype).reshape(b, uc, uh * uw)
        masks = own + (hyper_in @ hq).reshape(b, 1, uh, uw)
    iou_pred = decoder.iou_prediction_head(iou_token_out)[:, :1]
    return masks, iou_pred, own
