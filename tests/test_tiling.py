"""Scale and tiles: the model-space geometry, the tile grid, stitching, training crops, and
prediction of images of any size with a real (small, untrained) model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.checkpoint import new_bundle
from model.cpu_threads import ComputePool
from model.dataset import LoadedSample, Sample
from model.encoders import build_encoder
from model.feature_cache import FeatureCache
from model.geometry import AUTO, Geometry, choose_scale, parse_scale
from model.inference import predict_views
from model.predict import Click, Predictor
from model.stage_times import StageTimes
from model.tile_sampling import training_tiles
from model.tiling import Stitcher, TilePlan, blend_window, positions
from model.train import capped_sample

TILE = 64


@pytest.mark.parametrize(("length", "overlap"), [(64, 16), (65, 16), (200, 16), (1000, 0), (10, 4)])
def test_tiles_span_each_side_with_at_least_the_overlap(length: int, overlap: int) -> None:
    starts = positions(length, TILE, overlap)
    assert starts[0] == 0
    assert starts[-1] + TILE == max(length, TILE)
    gaps = np.diff(starts)
    assert (gaps <= TILE - overlap).all() and (gaps > 0).all()


def test_stitching_rebuilds_a_map_from_its_overlapping_tiles() -> None:
    rng = np.random.default_rng(0)
    full = rng.random((150, 230)).astype(np.float32)
    plan = TilePlan(full.shape, TILE, TILE // 4)
    stitcher = Stitcher(plan, 1)
    for tile, crop in zip(plan.tiles, plan.crops(full), strict=True):
        stitcher.add(tile, [crop])
    assert np.allclose(stitcher.result()[0], full, atol=1e-6)


def test_a_map_smaller_than_a_tile_is_padded_not_stretched() -> None:
    plan = TilePlan((20, 50), TILE, 16)
    assert plan.padded_shape == (TILE, TILE) and len(plan) == 1
    image = np.ones((20, 50, 3), np.uint8)
    (crop,) = plan.crops(image)
    assert crop.shape == (TILE, TILE, 3) and crop[:20, :50].all() and not crop[20:].any()


def test_the_blend_window_is_positive_and_highest_inside() -> None:
    w = blend_window(TILE, 16)
    assert w.min() > 0 and w.max() == 1.0 and w[TILE // 2, TILE // 2] == 1.0
    assert w[0, 0] < w[8, 8] < w[16, 16]


def test_scales_parse_and_refuse_nonsense() -> None:
    assert parse_scale("fit") is None and parse_scale("auto") == AUTO
    assert parse_scale("0.5") == 0.5 and parse_scale(1) == 1.0
    for bad in ("big", "0", "-1", "9"):
        with pytest.raises(ValueError):
            parse_scale(bad)


def test_auto_squashes_only_images_about_one_tile() -> None:
    assert choose_scale([(256, 256), (250, 260)], 256) is None
    assert choose_scale([(256, 256), (1024, 1024)], 256) == 1.0
    assert choose_scale([(250, 1000)], 256) == 1.0  # a strip would be distorted fourfold


def test_model_space_keeps_the_aspect_ratio() -> None:
    image = np.zeros((250, 1000, 3), np.uint8)
    mask = np.zeros((250, 1000), bool)
    mask[100, 10:990] = True  # a 1-pixel hairline
    assert Geometry(TILE, 0.5).image_to_model(image).shape == (125, 500, 3)
    assert Geometry(TILE, None).image_to_model(image).shape == (TILE, TILE, 3)
    native = Geometry(TILE, 1.0).mask_to_model(mask)
    assert native.sum() == mask.sum()  # at native scale a hairline stays one pixel wide


def _item(shape: tuple[int, int], defect: tuple[int, int] | None) -> LoadedSample:
    image = np.random.default_rng(1).integers(0, 255, (*shape, 3), dtype=np.uint8)
    mask = np.zeros(shape, bool)
    if defect is not None:
        y, x = defect
        mask[y : y + 3, x : x + 3] = True
    return LoadedSample(Sample(f"img{shape}", None, "x"), "sha", image, mask)  # type: ignore[arg-type]


def test_training_crops_are_tiles_mostly_around_the_defect() -> None:
    item = _item((400, 600), defect=(300, 500))
    tiles = training_tiles([item], tile=TILE, per_image=8, seed=0)
    assert len(tiles) == 8
    assert all(t.image.shape == (TILE, TILE, 3) and t.mask.shape == (TILE, TILE) for t in tiles)
    assert sum(t.mask.any() for t in tiles) >= 6  # round(8 × 0.75) placed around the defect
    assert all(np.shares_memory(t.image, item.image) for t in tiles)  # views, not copies
    again = training_tiles([item], tile=TILE, per_image=8, seed=0)
    assert [t.sha256 for t in tiles] == [t.sha256 for t in again]  # drawn from the seed
    other = training_tiles([item], tile=TILE, per_image=8, seed=1)
    assert [t.sha256 for t in tiles] != [t.sha256 for t in other]


def test_small_images_give_one_padded_crop_and_tiles_keep_their_hash() -> None:
    small, exact = _item((30, 40), (5, 5)), _item((TILE, TILE), None)
    out = training_tiles([small, exact], tile=TILE, per_image=5, seed=0)
    assert len(out) == 2 and out[0].image.shape == (TILE, TILE, 3) and out[0].mask.sum() == 9
    assert out[1] is exact
    with pytest.raises(ValueError, match="at least 1"):
        training_tiles([small], tile=TILE, per_image=0, seed=0)


@pytest.fixture(scope="module")
def native_bundle():  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    bundle = new_bundle(build_encoder("effnet_lite0", input_size=TILE), label_sigma=1.0, scale=1.0)
    bundle.meta.test_time_views = ["identity", "hflip"]
    return bundle


@pytest.mark.parametrize("shape", [(250, 100), (40, 30), (TILE, TILE), (130, 70)])
def test_predictions_come_back_at_the_image_size(native_bundle, shape: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    image = np.random.default_rng(2).integers(0, 255, (*shape, 3), dtype=np.uint8)
    times = StageTimes()
    pred = Predictor(native_bundle).predict(image, times=times)
    assert pred.mask.shape == pred.heatmap.shape == shape
    plan = TilePlan(shape, TILE, TILE // 4)
    assert times.tiles == len(plan) and times.encode_s > 0 and times.heads_s > 0


def test_one_tile_images_are_the_plain_single_pass(native_bundle) -> None:  # type: ignore[no-untyped-def]
    image = np.random.default_rng(3).integers(0, 255, (TILE, TILE, 3), dtype=np.uint8)
    pred = Predictor(native_bundle).predict(image, sha256="img")
    plain = predict_views(  # as before tiles existed: one pass, keyed by the image's hash
        native_bundle, [image], shas=["img"], cache=FeatureCache(None), views=("identity", "hflip")
    )
    assert np.allclose(pred.heatmap, np.clip(plain.heatmap[0], 0, 1), atol=1e-5)
    assert pred.defect_score == pytest.approx(float(plain.prob[0].max()), abs=1e-5)


def test_tiles_are_cached_and_views_can_be_reduced(native_bundle) -> None:  # type: ignore[no-untyped-def]
    image = np.random.default_rng(4).integers(0, 255, (150, 150, 3), dtype=np.uint8)
    cache = FeatureCache(None)
    first = Predictor(native_bundle, cache=cache).predict(image)
    encoded = cache.misses
    assert encoded == len(TilePlan((150, 150), TILE, TILE // 4)) * 2  # tiles × views
    again = Predictor(native_bundle, cache=cache).predict(image)
    assert cache.misses == encoded and np.array_equal(first.mask, again.mask)
    fast = StageTimes()
    Predictor(native_bundle, cache=FeatureCache(None), views=["identity"]).predict(
        image, times=fast
    )
    assert fast.tiles == len(TilePlan((150, 150), TILE, TILE // 4))
    with pytest.raises(ValueError, match="view"):
        Predictor(native_bundle, views=[])


def test_a_click_decodes_the_tile_under_it_again(native_bundle) -> None:  # type: ignore[no-untyped-def]
    image = np.random.default_rng(5).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    predictor = Predictor(native_bundle)
    plain = predictor.predict(image)
    clicked = predictor.predict(image, clicks=[Click(190.0, 190.0, True)])
    changed = np.argwhere(~np.isclose(plain.heatmap, clicked.heatmap, atol=1e-6))
    assert changed.size > 0
    assert changed.min() >= 200 - TILE  # only the area of the tile under the click


def test_validation_of_large_images_is_capped_by_their_tiles() -> None:
    items = [_item((300, 300), (10 * i, 10 * i) if i % 2 else None) for i in range(10)]
    per_image = len(TilePlan((300, 300), TILE, TILE // 4))
    native = capped_sample(items, Geometry(TILE, 1.0), images=10, tiles=3 * per_image, seed=0)
    assert len(native) == 3
    assert {it.defective for it in native} == {True, False}  # both kinds kept
    small = [_item((TILE, TILE), None) for _ in range(10)]
    assert len(capped_sample(small, Geometry(TILE, None), images=8, tiles=100, seed=0)) == 8


def test_tile_overlap_is_a_stored_choice(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from model.checkpoint import load_bundle, save_checkpoint

    with pytest.raises(ValueError, match="overlap"):
        Geometry(TILE, 1.0, TILE)
    torch.manual_seed(0)
    bundle = new_bundle(
        build_encoder("effnet_lite0", input_size=TILE), label_sigma=1.0, scale=1.0, tile_overlap=8
    )
    loaded = load_bundle(save_checkpoint(tmp_path / "m.pt", bundle))
    assert loaded.geometry.overlap == 8 and Geometry(TILE, 1.0).overlap == TILE // 4
    times = StageTimes()
    image = np.zeros((400, 400, 3), np.uint8)
    Predictor(loaded, views=["identity"]).predict(image, times=times)
    assert times.tiles == len(TilePlan((400, 400), TILE, 8)) < len(TilePlan((400, 400), TILE, 16))


def test_tile_batches_on_a_compute_pool_give_the_same_maps(native_bundle) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(5)
    images = [
        rng.integers(0, 255, shape, dtype=np.uint8) for shape in ((250, 100, 3), (TILE, TILE, 3))
    ]
    alone = Predictor(native_bundle, views=["identity"]).predict_many(images)
    pool = ComputePool(3, 1)
    try:
        times = StageTimes()
        pooled = Predictor(native_bundle, views=["identity"], pool=pool).predict_many(
            images, times=times
        )
    finally:
        pool.shutdown()
    assert times.tiles == len(TilePlan((250, 100), TILE, TILE // 4)) + 1
    for a, b in zip(alone, pooled, strict=True):
        assert np.allclose(a.heatmap, b.heatmap, atol=1e-5)
        assert np.array_equal(a.mask, b.mask)
