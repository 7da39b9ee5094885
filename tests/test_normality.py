"""Zero-label normality model: known-good images in, anomaly heatmap and score out."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from model.encoders import build_encoder
from model.encoders.base import EncoderOutput
from model.encoders.effnet import EffNetLite0Encoder
from model.errors import CheckpointError
from model.feature_cache import FeatureCache
from model.hashing import sha256_bytes
from model.normality import BASELINE_QUANTILE, AnomalyScorer, NormalityModel, fit_normality

SIZE = 256


class CountingEncoder(EffNetLite0Encoder):
    """The real frozen encoder, counting the images it encodes."""

    def __init__(self) -> None:
        super().__init__(input_size=SIZE)
        self.encoded = 0

    def _encode(self, x: torch.Tensor) -> EncoderOutput:
        self.encoded += x.shape[0]
        return super()._encode(x)


def surface(seed: int, shape: tuple[int, int] = (SIZE, SIZE)) -> np.ndarray:
    """A brushed-metal-like surface: directional grain on slow shading, uint8 RGB."""
    rng = np.random.default_rng(seed)
    grain = cv2.GaussianBlur(
        rng.normal(0, 1, shape).astype(np.float32), (0, 0), sigmaX=3, sigmaY=0.7
    )
    shade = cv2.resize(rng.random((3, 3)).astype(np.float32), shape[::-1])
    gray = 0.5 + 0.12 * grain + 0.06 * shade
    colour = np.array([1.0, 0.95, 0.9], np.float32)
    return (np.clip(gray[..., None] * colour, 0, 1) * 255).astype(np.uint8)


def with_blob(
    image: np.ndarray, centre: tuple[int, int], radius: int
) -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.circle(mask, centre, radius, 1, -1)
    out = image.copy()
    out[mask > 0] = (out[mask > 0] * 0.4).astype(np.uint8)
    return out, mask > 0


def shas(images: list[np.ndarray]) -> list[tuple[str, np.ndarray]]:
    return [(sha256_bytes(im.tobytes()), im) for im in images]


@pytest.fixture(scope="module")
def encoder() -> CountingEncoder:
    torch.manual_seed(0)
    return CountingEncoder()


@pytest.fixture(scope="module")
def cache() -> FeatureCache:
    return FeatureCache(None)


@pytest.fixture(scope="module")
def goods() -> list[tuple[str, np.ndarray]]:
    return shas([surface(seed) for seed in range(8)])


@pytest.fixture(scope="module")
def model(encoder: CountingEncoder, cache: FeatureCache, goods) -> NormalityModel:  # type: ignore[no-untyped-def]
    return fit_normality(encoder, goods, cache=cache, seed=0)


def test_fitted_model_describes_itself(model: NormalityModel) -> None:
    assert model.encoder_id == "effnet_lite0" and model.input_size == SIZE
    assert model.good_images == 8
    assert 0 < model.metrics["memory_bank"] <= model.metrics["patches"] * 0.1 + 1
    assert model.metrics["pixel_threshold"] > 0 and model.metrics["image_threshold"] > 0


def test_defect_scores_higher_and_heatmap_peaks_on_it(
    model: NormalityModel, encoder: CountingEncoder, cache: FeatureCache
) -> None:
    scorer = AnomalyScorer(model, encoder, cache=cache)
    unseen_goods = [scorer.score(surface(seed)) for seed in (100, 101, 102)]
    defect, mask = with_blob(surface(103), (80, 160), 14)
    result = scorer.score(defect)
    assert result.score > 1.0
    assert result.score > max(g.score for g in unseen_goods)
    raw = scorer.anomaly_map(defect)  # the heatmap saturates at 1 over a strong defect
    peak = np.unravel_index(np.argmax(raw), raw.shape)
    near_blob = cv2.dilate(mask.astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
    assert near_blob[peak]
    assert result.heatmap[mask].mean() > 1.5 * result.heatmap[~near_blob].mean()
    assert result.heatmap.dtype == np.float32
    assert result.heatmap.min() >= 0.0 and result.heatmap.max() <= 1.0


def test_heatmap_has_the_images_own_size(model: NormalityModel, encoder: CountingEncoder) -> None:
    image, _ = with_blob(surface(7, (100, 160)), (120, 50), 8)
    result = AnomalyScorer(model, encoder).score(image)
    assert result.heatmap.shape == (100, 160)
    assert result.heatmap.min() >= 0.0 and result.heatmap.max() <= 1.0


def test_save_load_round_trip_scores_identically(
    model: NormalityModel, encoder: CountingEncoder, cache: FeatureCache, tmp_path: Path
) -> None:
    path = model.save(tmp_path / "normality.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["normality.npz"]  # no temp file left
    loaded = NormalityModel.load(path)
    assert loaded.metrics == model.metrics and loaded.levels == model.levels
    image, _ = with_blob(surface(104), (64, 64), 7)
    before = AnomalyScorer(model, encoder, cache=cache).score(image)
    after = AnomalyScorer(loaded, encoder, cache=cache).score(image)
    assert before.score == after.score
    assert np.array_equal(before.heatmap, after.heatmap)


def test_map_is_measured_against_the_images_own_baseline(
    model: NormalityModel, encoder: CountingEncoder, cache: FeatureCache
) -> None:
    """A surface that is uniformly a little unlike the known-good ones is not anomalous as a
    whole: its map is taken relative to its own lower quartile."""
    assert model.baseline_quantile == BASELINE_QUANTILE
    image, _ = with_blob(surface(105), (150, 90), 9)
    amap = AnomalyScorer(model, encoder, cache=cache).anomaly_map(image)
    plain = AnomalyScorer(replace(model, baseline_quantile=None), encoder, cache=cache)
    raw = plain.anomaly_map(image)
    assert np.quantile(raw, BASELINE_QUANTILE) > 0
    np.testing.assert_allclose(amap, np.maximum(raw - np.quantile(raw, BASELINE_QUANTILE), 0))


def test_a_model_saved_without_a_baseline_keeps_the_plain_map(
    model: NormalityModel, tmp_path: Path
) -> None:
    path = model.save(tmp_path / "normality.npz")
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    meta = json.loads(str(arrays["meta"]))
    del meta["baseline_quantile"]
    arrays["meta"] = np.array(json.dumps(meta))
    older = tmp_path / "older.npz"
    with older.open("wb") as fh:
        np.savez(fh, **arrays)
    assert NormalityModel.load(path).baseline_quantile == BASELINE_QUANTILE
    assert NormalityModel.load(older).baseline_quantile is None


def test_bad_files_raise_checkpoint_error(model: NormalityModel, tmp_path: Path) -> None:
    path = model.save(tmp_path / "normality.npz")
    data = path.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a model")
    for bad in (truncated, garbage, tmp_path / "missing.npz"):
        with pytest.raises(CheckpointError, match=bad.name):
            NormalityModel.load(bad)


def test_scorer_refuses_another_encoder(model: NormalityModel) -> None:
    other = build_encoder("sam_tiny", input_size=64)
    with pytest.raises(CheckpointError, match="fitted with"):
        AnomalyScorer(model, other)


def test_same_seed_gives_same_memory_bank(
    model: NormalityModel, encoder: CountingEncoder, cache: FeatureCache, goods
) -> None:  # type: ignore[no-untyped-def]
    again = fit_normality(encoder, goods, cache=cache, seed=0)
    assert np.array_equal(again.memory_bank, model.memory_bank)
    assert again.metrics == model.metrics
    other = fit_normality(encoder, goods, cache=cache, seed=1)
    assert not np.array_equal(other.memory_bank, model.memory_bank)


def test_fewer_than_two_images_is_refused(encoder: CountingEncoder, goods) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="at least 2"):
        fit_normality(encoder, goods[:1])
    with pytest.raises(ValueError, match="at least 2"):
        fit_normality(encoder, [])


def test_cache_spares_encoding(encoder: CountingEncoder, goods) -> None:  # type: ignore[no-untyped-def]
    cache = FeatureCache(None)
    fitted = fit_normality(encoder, goods[:3], cache=cache)
    scorer = AnomalyScorer(fitted, encoder, cache=cache)
    start = encoder.encoded
    sha, image = goods[0]
    scorer.score(image, sha256=sha)  # a known-good sample: encoded while fitting
    assert encoder.encoded == start
    fresh = surface(200)
    scorer.score(fresh, sha256="f" * 64)
    scorer.score(fresh, sha256="f" * 64)
    assert encoder.encoded == start + 1


def test_many_good_images_are_thinned_to_a_seeded_sample(
    encoder: CountingEncoder, cache: FeatureCache, goods
) -> None:  # type: ignore[no-untyped-def]
    """Every patch of every fitted image is held at once: the fit reads a bounded sample."""
    thin = fit_normality(encoder, goods, cache=cache, seed=0, max_images=3)
    again = fit_normality(encoder, goods, cache=cache, seed=0, max_images=3)
    full = fit_normality(encoder, goods, cache=cache, seed=0)
    assert thin.good_images == 3 and thin.metrics["offered_images"] == len(goods) == 8
    assert thin.metrics["patches"] * 8 == full.metrics["patches"] * 3
    assert np.array_equal(thin.memory_bank, again.memory_bank)
