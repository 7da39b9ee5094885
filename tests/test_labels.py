"""Skeleton-heatmap labels."""

import numpy as np
import pytest

from model.labels import skeleton_heatmap


def test_empty_mask_gives_all_zero_heatmap() -> None:
    heat = skeleton_heatmap(np.zeros((32, 40), bool))
    assert heat.shape == (32, 40)
    assert heat.dtype == np.float32
    assert not heat.any()


def test_thick_line_peaks_on_its_skeleton_and_fades_away() -> None:
    mask = np.zeros((64, 64), bool)
    mask[30:35, 8:56] = True  # a 5 px wide horizontal bar
    heat = skeleton_heatmap(mask, sigma=2.0)
    assert heat.max() == pytest.approx(1.0)
    assert heat[32, 32] > 0.9  # centre line
    assert heat[30, 32] < heat[32, 32]  # edge of the bar is below its medial axis
    assert heat[5, 32] < 1e-3  # far away
    assert heat.min() >= 0.0 and heat.max() <= 1.0


def test_each_region_reaches_one_even_when_small() -> None:
    mask = np.zeros((64, 64), bool)
    mask[10:12, 10:12] = True  # a tiny pit
    mask[40:60, 40:60] = True  # a large stain
    heat = skeleton_heatmap(mask, sigma=2.0)
    assert heat[8:14, 8:14].max() == pytest.approx(1.0, abs=1e-5)
    assert heat[40:60, 40:60].max() == pytest.approx(1.0, abs=1e-5)


def test_blob_label_is_centred() -> None:
    yy, xx = np.mgrid[0:64, 0:64]
    mask = (yy - 32) ** 2 + (xx - 32) ** 2 < 12**2
    heat = skeleton_heatmap(mask, sigma=3.0)
    peak = np.unravel_index(np.argmax(heat), heat.shape)
    assert abs(peak[0] - 32) <= 2 and abs(peak[1] - 32) <= 2


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="2-D"):
        skeleton_heatmap(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="sigma"):
        skeleton_heatmap(np.ones((4, 4)), sigma=0)
