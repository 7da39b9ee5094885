"""The method's loss terms."""

import torch

from model.losses import LossWeights, dice_loss, heatmap_target, heatprompt_loss


def test_heatmap_target_keeps_thin_peaks() -> None:
    label = torch.zeros(1, 1, 64, 64)
    label[0, 0, 31, :] = 1.0  # a one-pixel line
    assert heatmap_target(label, (16, 16)).max() == 1.0


def test_dice_is_low_for_a_match_and_high_for_a_miss() -> None:
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:6, 2:6] = 1
    good = target * 20 - 10
    assert dice_loss(good, target) < 0.01
    assert dice_loss(-good, target) > 0.9


def test_total_is_the_weighted_sum_and_dice_can_be_off() -> None:
    torch.manual_seed(0)
    h, m = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 32, 32)
    hl, ml = torch.rand(2, 1, 32, 32), (torch.rand(2, 1, 32, 32) > 0.5).float()
    w = LossWeights(heatmap=2.0, bce=0.5, dice=0.0)
    terms = heatprompt_loss(h, m, hl, ml, w)
    assert terms["dice"] == 0
    expected = 2.0 * terms["heatmap"] + 0.5 * terms["bce"]
    assert torch.allclose(terms["total"], expected + w.decoder * terms["decoder"])
    assert terms["decoder"] == 0  # no decoder logits given


def test_decoder_term_scores_the_decoders_own_mask_on_its_grid() -> None:
    torch.manual_seed(0)
    h, m = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 32, 32)
    hl, ml = torch.rand(2, 1, 32, 32), torch.zeros(2, 1, 32, 32)
    ml[..., 8:16, 8:24] = 1
    own_right = torch.full((2, 1, 8, 8), -10.0)
    own_right[..., 2:4, 2:6] = 10.0  # the label's rectangle on the 4x coarser grid
    w = LossWeights()
    right = heatprompt_loss(h, m, hl, ml, w, decoder_logits=own_right)
    wrong = heatprompt_loss(h, m, hl, ml, w, decoder_logits=-own_right)
    assert right["decoder"] < 0.01 < 1.0 < wrong["decoder"]
    gap = wrong["total"] - right["total"]
    assert torch.allclose(gap, w.decoder * (wrong["decoder"] - right["decoder"]))
    off = heatprompt_loss(h, m, hl, ml, LossWeights(decoder=0.0), decoder_logits=-own_right)
    assert off["decoder"] == 0
