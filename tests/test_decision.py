"""The mask rule: threshold, then an area gate that calls tiny masks defect-free."""

from __future__ import annotations

import numpy as np

from model.decision import MaskRule, rule_grid
from model.metrics import segmentation_report


def _prob_with_square(side: int, value: float = 0.9) -> np.ndarray:
    prob = np.full((32, 32), 0.1, np.float32)
    prob[4 : 4 + side, 4 : 4 + side] = value
    return prob


def test_threshold_alone_keeps_every_pixel_above_it() -> None:
    mask = MaskRule(0.5, 0).binarize(_prob_with_square(2))
    assert mask.sum() == 4 and mask.dtype == bool


def test_area_gate_empties_small_masks_and_keeps_large_ones_whole() -> None:
    rule = MaskRule(0.5, min_area=10)
    assert not rule.binarize(_prob_with_square(3)).any()  # 9 px < 10
    kept = rule.binarize(_prob_with_square(4))  # 16 px ≥ 10: unchanged
    np.testing.assert_array_equal(kept, _prob_with_square(4) > 0.5)
    assert rule.passes_area(_prob_with_square(4)) and not rule.passes_area(_prob_with_square(3))


def test_report_applies_the_area_gate_to_clean_and_defective_images() -> None:
    speck, clean = _prob_with_square(2), np.zeros((32, 32), np.uint8)
    big = _prob_with_square(6)
    target = (big > 0.5).astype(np.uint8)
    probs, targets, types = [speck, big], [clean, target], ["good", "scratch"]
    loose = segmentation_report(probs, targets, types, threshold=0.5)
    gated = segmentation_report(probs, targets, types, threshold=0.5, min_area=10)
    assert loose["empty_accuracy"] == 0.0 and gated["empty_accuracy"] == 1.0
    assert loose["miou"] == gated["miou"] == 1.0
    assert gated["min_area"] == 10


def test_rule_grid_is_the_full_product() -> None:
    grid = rule_grid((0.3, 0.5), (0, 20))
    assert grid == [MaskRule(0.3, 0), MaskRule(0.3, 20), MaskRule(0.5, 0), MaskRule(0.5, 20)]


def test_report_without_auroc_keeps_every_mask_metric() -> None:
    probs = [_prob_with_square(6), _prob_with_square(2)]
    targets = [(_prob_with_square(5) > 0.5).astype(np.uint8), np.zeros((32, 32), np.uint8)]
    full = segmentation_report(probs, targets, ["scratch", "good"], threshold=0.5, min_area=10)
    lean = segmentation_report(
        probs, targets, ["scratch", "good"], threshold=0.5, min_area=10, with_auroc=False
    )
    assert full["image_auroc"] is not None and full["pixel_auroc"] is not None
    assert lean["image_auroc"] is None and lean["pixel_auroc"] is None
    drop = {"image_auroc", "pixel_auroc"}
    assert {k: v for k, v in lean.items() if k not in drop} == {
        k: v for k, v in full.items() if k not in drop
    }
