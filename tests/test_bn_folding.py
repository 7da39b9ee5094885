"""Folding the frozen encoder's batch norms changes its speed, not its outputs."""

from __future__ import annotations

import numpy as np
import timm
import torch
from torch import nn

from model.encoders import build_encoder
from model.encoders.bn_folding import fold_batch_norms
from model.encoders.effnet import (
    OUT_INDICES,
    TIMM_ARCH,
    load_imagenet_state,
    packaged_weights_path,
)


def test_folded_effnet_features_match_the_unfolded_network() -> None:
    encoder = build_encoder("effnet_lite0", input_size=64)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in encoder.backbone.modules())
    # The unfolded network, from the shipped weights as the encoder loads them.
    plain = timm.create_model(
        TIMM_ARCH, pretrained=False, features_only=True, out_indices=OUT_INDICES
    )
    plain.load_state_dict(load_imagenet_state(list(plain.state_dict()), packaged_weights_path()))
    plain.eval()
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8))
    with torch.no_grad():
        folded = encoder.encode(x).features[1:]
        reference = plain(encoder.preprocess(x))
    assert len(folded) == len(reference) == len(OUT_INDICES)
    for a, b in zip(folded, reference, strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), float((a - b).abs().max())


def test_norms_with_random_statistics_fold_exactly() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, groups=8),
        nn.BatchNorm2d(8),
    )
    for m in net:
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    net.eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        before = net(x)
        assert fold_batch_norms(net) == 2
        after = net(x)
    assert torch.allclose(before, after, atol=1e-5)
