"""The interface every frozen encoder implements.

An encoder turns a batch of RGB images into *frozen* tensors: intermediate features for
the fusion network and, when the encoder is a real SAM image encoder, the final
256-channel image embedding. Frozen outputs never change for an image, so they are what
the feature cache stores.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder
from torch import nn


@dataclass
class EncoderOutput:
    """Frozen encoder outputs for a batch.

    features: intermediate feature maps, each (B, C_i, H_i, W_i), channels first.
    embedding: the final SAM image embedding (B, 256, g, g), or None when the encoder has
        no pretrained embedding and the trainable neck produces it.
    """

    features: list[torch.Tensor]
    embedding: torch.Tensor | None

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> EncoderOutput:
        """Move every tensor to `device` (and `dtype` when given)."""
        move = (lambda t: t.to(device, dtype)) if dtype is not None else (lambda t: t.to(device))
        return EncoderOutput(
            features=[move(f) for f in self.features],
            embedding=None if self.embedding is None else move(self.embedding),
        )

    def as_dict(self) -> dict[str, torch.Tensor]:
        """Flatten to named tensors (the feature cache's storage format)."""
        named = {f"f{i}": f for i, f in enumerate(self.features)}
        if self.embedding is not None:
            named["embedding"] = self.embedding
        return named

    @classmethod
    def from_dict(cls, named: dict[str, torch.Tensor]) -> EncoderOutput:
        """Inverse of `as_dict`."""
        n = sum(1 for k in named if k.startswith("f"))
        return cls(features=[named[f"f{i}"] for i in range(n)], embedding=named.get("embedding"))

    def select(self, index: int) -> EncoderOutput:
        """The single-image output at `index`, batch dimension kept."""
        return EncoderOutput(
            features=[f[index : index + 1] for f in self.features],
            embedding=None if self.embedding is None else self.embedding[index : index + 1],
        )

    @classmethod
    def stack(cls, items: list[EncoderOutput]) -> EncoderOutput:
        """Concatenate single-image outputs along the batch dimension."""
        features = [
            torch.cat([it.features[i] for it in items]) for i in range(len(items[0].features))
        ]
        embedding = None
        if items[0].embedding is not None:
            embedding = torch.cat([it.embedding for it in items])  # type: ignore[misc]
        return cls(features=features, embedding=embedding)


class FrozenEncoder(nn.Module):
    """A frozen image encoder.

    Subclasses set the attributes below in `__init__` and implement `_encode`.
    `prompt_encoder` / `mask_decoder` are the SAM modules that belong with the encoder:
    pretrained and frozen for real SAM checkpoints, freshly initialised (and then trained
    with the heads) when no SAM decoder exists for the encoder.
    """

    encoder_id: str
    input_size: int
    feature_channels: list[int]
    feature_strides: list[int]
    embedding_stride: int
    has_embedding: bool
    weights_sha256: str | None
    decoder_pretrained: bool
    pixel_mean: torch.Tensor
    pixel_std: torch.Tensor

    def make_sam_modules(self) -> tuple[PromptEncoder, MaskDecoder]:
        """The SAM prompt encoder and mask decoder paired with this encoder."""
        raise NotImplementedError

    @property
    def cache_id(self) -> str:
        """Encoder identity for the feature cache: the id plus the layout of its outputs,
        so features cached by an encoder that returned other levels are never reused."""
        levels = "_".join(
            f"{c}s{s}" for c, s in zip(self.feature_channels, self.feature_strides, strict=True)
        )
        return f"{self.encoder_id}.{levels}"

    @property
    def grid_size(self) -> int:
        """Side of the embedding grid the mask decoder works on."""
        return self.input_size // self.embedding_stride

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) at `input_size` → normalised float (B, 3, H, W)."""
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected (B, H, W, 3) images, got {tuple(images.shape)}")
        if images.shape[1] != self.input_size or images.shape[2] != self.input_size:
            raise ValueError(
                f"expected {self.input_size}px images, got {images.shape[1]}x{images.shape[2]}"
            )
        x = images.to(self.device).permute(0, 3, 1, 2).float()
        return (x - self.pixel_mean) / self.pixel_std

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> EncoderOutput:
        """Encode uint8 (B, H, W, 3) images; the result carries no autograd history."""
        self.eval()
        return self._encode(self.preprocess(images))

    def _encode(self, x: torch.Tensor) -> EncoderOutput:
        raise NotImplementedError

    def freeze(self) -> None:
        """Freeze every parameter of the encoder."""
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FrozenEncoder:
        # A frozen encoder never switches batch norm / dropout to training mode.
        return super().train(False)
