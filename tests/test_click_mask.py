"""A click proposes a defect mask (GrabCut), bounded by the anomaly heatmap and refined by
positive and negative clicks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from model.click_mask import propose_mask, refine_with_clicks

SIZE = 256


def textured_background(seed: int = 0) -> np.ndarray:
    """Mid-grey sand-blasted-like texture: fine grain on slow shading, uint8 RGB."""
    rng = np.random.default_rng(seed)
    grain = cv2.GaussianBlur(rng.normal(0, 1, (SIZE, SIZE)).astype(np.float32), (0, 0), 1.0)
    shade = cv2.resize(rng.random((4, 4)).astype(np.float32), (SIZE, SIZE))
    gray = 0.55 + 0.08 * grain + 0.08 * shade
    return (np.clip(np.repeat(gray[..., None], 3, axis=2), 0, 1) * 255).astype(np.uint8)


def disk(centre: tuple[int, int], radius: int) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cv2.circle(mask, centre, radius, 1, -1)
    return mask > 0


def darken(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = image.copy()
    out[mask] = (out[mask] * 0.35).astype(np.uint8)
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


A, B = disk((100, 128), 18), disk((150, 128), 16)
BRIDGE = np.zeros((SIZE, SIZE), bool)
BRIDGE[122:134, 100:150] = True  # joins A and B into one dark region


def test_click_on_dark_blob_covers_it() -> None:
    image = darken(textured_background(), A)
    mask = propose_mask(image, (100.0, 128.0))
    assert mask.shape == (SIZE, SIZE) and mask.dtype == bool
    assert iou(mask, A) >= 0.7


def test_proposal_is_deterministic() -> None:
    image = darken(textured_background(1), A)
    assert np.array_equal(propose_mask(image, (100, 128)), propose_mask(image, (100, 128)))


def test_heatmap_keeps_proposal_off_a_distant_blob() -> None:
    image = darken(textured_background(2), A | B | BRIDGE)
    unbounded = propose_mask(image, (100, 128))
    assert (unbounded & B).sum() > 0.5 * B.sum()  # the joined dark region spreads to B
    heat = cv2.GaussianBlur(A.astype(np.float32), (0, 0), 4)
    heat = np.clip(heat / heat.max(), 0, 1)
    bounded = propose_mask(image, (100, 128), heatmap=heat)
    assert not (bounded & B).any()
    assert iou(bounded, A) >= 0.7


def test_heatmap_of_another_size_is_resized() -> None:
    image = darken(textured_background(3), A)
    heat = cv2.resize(A.astype(np.float32), (64, 64), interpolation=cv2.INTER_AREA)
    assert iou(propose_mask(image, (100, 128), heatmap=heat), A) >= 0.7


def test_max_fraction_bounds_the_proposal() -> None:
    image = darken(textured_background(4), disk((128, 128), 90))
    mask = propose_mask(image, (128, 128), max_fraction=0.1)
    assert mask.sum() <= 0.1 * SIZE * SIZE


def test_negative_click_removes_its_region() -> None:
    image = darken(textured_background(5), A | B | BRIDGE)
    positive_only = refine_with_clicks(image, [(100, 128, True)])
    assert (positive_only & B).sum() > 0.5 * B.sum()
    refined = refine_with_clicks(image, [(100, 128, True), (150, 128, False)])
    assert not refined[128, 150]
    assert (refined & B).sum() < 0.1 * B.sum()
    assert (refined & A).sum() > 0.7 * A.sum()


def test_positive_clicks_unite() -> None:
    image = darken(textured_background(6), disk((60, 60), 16) | disk((190, 190), 16))
    both = refine_with_clicks(image, [(60, 60, True), (190, 190, True)])
    assert both[60, 60] and both[190, 190]
    assert not refine_with_clicks(image, []).any()


@pytest.mark.parametrize("click", [(-1.0, 10.0), (10.0, SIZE), (SIZE + 5.0, 3.0)])
def test_click_outside_image_is_refused(click: tuple[float, float]) -> None:
    image = textured_background()
    with pytest.raises(ValueError, match="outside"):
        propose_mask(image, click)
    with pytest.raises(ValueError, match="outside"):
        refine_with_clicks(image, [(*click, False)])


def test_large_image_is_proposed_at_its_own_size() -> None:
    big = cv2.resize(darken(textured_background(7), A), (900, 700))
    truth = cv2.resize(A.astype(np.uint8), (900, 700), interpolation=cv2.INTER_NEAREST) > 0
    mask = propose_mask(big, (100 * 900 / SIZE, 128 * 700 / SIZE))
    assert mask.shape == (700, 900)
    assert iou(mask, truth) >= 0.7


def test_a_click_on_a_hairline_in_a_large_image_keeps_it_thin() -> None:
    rng = np.random.default_rng(0)
    big = np.clip(rng.normal(170, 4, (3000, 3000, 3)), 0, 255).astype(np.uint8)
    line = np.zeros((3000, 3000), np.uint8)
    cv2.line(line, (1200, 2000), (1500, 2100), 1, 2)
    big[line > 0] = 40
    mask = propose_mask(big, (1350.0, 2050.0))
    assert mask.shape == (3000, 3000) and mask[2050, 1350]
    assert iou(mask, line > 0) >= 0.5  # drawn at native resolution, not 6× coarser
    ys, xs = np.nonzero(mask)
    assert ys.max() - ys.min() < 512 and xs.max() - xs.min() < 512  # the click's window
