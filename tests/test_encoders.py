"""Frozen encoders: real ImageNet weights, SAM checkpoints from local files, shapes."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data as skdata

from model.encoders import build_encoder
from model.encoders.effnet import build_classifier
from model.encoders.sam_vit import SAM_VARIANTS, build_sam, describe_sam_file
from model.errors import WeightsError
from model.hashing import sha256_file
from model.weights import OFFICIAL_WEIGHTS

EGYPTIAN_CAT, ESPRESSO = 285, 967


def _classify(model: torch.nn.Module, image: np.ndarray) -> int:
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
    with torch.no_grad():
        return int(model((x - 0.5) / 0.5).argmax())


def test_packaged_effnet_weights_are_real_imagenet_weights() -> None:
    model = build_classifier()
    assert _classify(model, skdata.chelsea()) == EGYPTIAN_CAT
    assert _classify(model, skdata.coffee()) == ESPRESSO


def test_effnet_encoder_is_frozen_and_multiscale() -> None:
    enc = build_encoder("effnet_lite0", input_size=64)
    assert enc.weights_sha256 and len(enc.weights_sha256) == 64
    assert not any(p.requires_grad for p in enc.parameters())
    out = enc.encode(torch.zeros(2, 64, 64, 3, dtype=torch.uint8))
    assert out.embedding is None
    assert [f.shape[1] for f in out.features] == enc.feature_channels == [3, 16, 24, 40, 112, 320]
    assert [64 // f.shape[-1] for f in out.features] == enc.feature_strides
    assert not out.features[0].requires_grad


def test_encoder_refuses_wrong_input_size() -> None:
    enc = build_encoder("sam_tiny", input_size=64)
    with pytest.raises(ValueError, match="64px"):
        enc.encode(torch.zeros(1, 32, 32, 3, dtype=torch.uint8))


def test_sam_tiny_interpolates_pos_embed_for_other_sizes() -> None:
    torch.manual_seed(0)
    for size in (64, 128, 192):
        enc = build_encoder("sam_tiny", input_size=size)
        out = enc.encode(torch.zeros(1, size, size, 3, dtype=torch.uint8))
        assert out.embedding is not None
        assert out.embedding.shape == (1, 256, size // 16, size // 16)
        assert out.features[0].shape == (1, SAM_VARIANTS["tiny"].embed_dim, size // 16, size // 16)


def test_sam_checkpoint_loads_strictly_from_a_local_file(tmp_path: Path) -> None:
    torch.manual_seed(1)
    reference = build_sam(SAM_VARIANTS["tiny"])
    path = tmp_path / "sam_tiny.pth"
    torch.save(reference.state_dict(), path)
    enc = build_encoder("sam_tiny", sam_checkpoint=path, input_size=128)
    assert enc.weights_sha256 == sha256_file(path)
    assert enc.decoder_pretrained
    key = "image_encoder.blocks.0.attn.qkv.weight"
    assert torch.equal(enc.state_dict()[key], reference.state_dict()[key])
    _, md = enc.make_sam_modules()
    assert torch.equal(md.iou_token.weight, reference.mask_decoder.iou_token.weight)


def test_sam_checkpoint_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        build_encoder("sam_tiny", sam_checkpoint=tmp_path / "missing.pth")
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"broken\.pth"):
        build_encoder("sam_tiny", sam_checkpoint=broken)
    partial = tmp_path / "partial.pth"
    state = build_sam(SAM_VARIANTS["tiny"]).state_dict()
    state.pop("mask_decoder.iou_token.weight")
    torch.save(state, partial)
    with pytest.raises(WeightsError, match="not a SAM tiny checkpoint"):
        build_encoder("sam_tiny", sam_checkpoint=partial)


def test_real_sam_variants_need_a_checkpoint() -> None:
    with pytest.raises(WeightsError, match="--sam-checkpoint"):
        build_encoder("sam_vit_b")


def test_official_hashes_are_recognised() -> None:
    assert "official sam_vit_b" in describe_sam_file(OFFICIAL_WEIGHTS["sam_vit_b"].sha256)
    assert "unrecognised" in describe_sam_file("0" * 64)
