"""Training, checkpoints, evaluation and prediction with real small models."""

from pathlib import Path

import numpy as np
import pytest
import torch

from model.augment import TRANSFORMS, apply_transform
from model.checkpoint import load_bundle, new_bundle, read_checkpoint, save_checkpoint
from model.dataset import discover, load_samples, split
from model.encoders import EncoderOutput, build_encoder
from model.errors import CheckpointError
from model.evaluate import evaluate
from model.feature_cache import CacheKey, FeatureCache
from model.inference import encode_images, predict_views, run_heads
from model.predict import Click, Predictor
from model.train import (
    THRESHOLD_GRID,
    TrainConfig,
    area_grid,
    calibration_sample,
    loop_budget_s,
    seed_everything,
    train,
)

EVAL_KEYS = {"miou", "dice", "empty_accuracy", "image_auroc", "pixel_auroc", "per_type"}


def _tiny_run(synth_dir: Path, out: Path, seed: int = 0, epochs: int = 2):  # type: ignore[no-untyped-def]
    train_s, val_s = split(discover(synth_dir), val_fraction=0.25, seed=seed)
    seed_everything(seed)
    bundle = new_bundle(build_encoder("sam_tiny", input_size=64), label_sigma=2.0)
    tr, va = load_samples(train_s, 64), load_samples(val_s, 64)
    config = TrainConfig(epochs=epochs, batch_size=4, seed=seed)
    result = train(bundle, tr, va, config, out=out, cache=FeatureCache(None), progress=False)
    return bundle, result, va


def test_training_is_deterministic_and_writes_a_complete_checkpoint(synth_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, a, _ = _tiny_run(synth_dir, tmp_path / "a.pt")
    _, b, _ = _tiny_run(synth_dir, tmp_path / "b.pt")
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    assert len(a.history) == a.epochs_run == 2
    meta, state = read_checkpoint(a.checkpoint)
    assert meta.encoder_id == "sam_tiny" and meta.input_size == 64
    assert meta.mask_threshold in THRESHOLD_GRID
    assert meta.min_defect_area in area_grid(64)  # calibrated with the threshold
    assert meta.metrics["val"]["count"] > 0 and meta.train_config["seed"] == 0
    assert any(k.startswith("heatmap_head.") for k in state)
    assert not list(tmp_path.glob(".*.tmp"))


class _BusyClock:
    """`time` for `model.train` on a machine so busy that 200 s pass between two looks."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 200.0
        return self.now


def _budget_run(synth_dir: Path, out: Path, *, lr_by_time: bool) -> list[float]:
    """Epoch losses of a 3-epoch run under a budget far beyond its need (1000 minutes)."""
    train_s, val_s = split(discover(synth_dir), val_fraction=0.25, seed=0)
    seed_everything(0)
    bundle = new_bundle(build_encoder("sam_tiny", input_size=64), label_sigma=2.0)
    tr, va = load_samples(train_s, 64), load_samples(val_s, 64)
    config = TrainConfig(
        epochs=3, batch_size=4, seed=0, max_minutes=1000, patience=3, lr_by_time=lr_by_time
    )
    result = train(bundle, tr, va, config, out=out, cache=FeatureCache(None), progress=False)
    assert (result.epochs_run, result.stopped_by) == (3, "epochs")
    return [h["loss"] for h in result.history]


def test_a_schedule_in_steps_learns_the_same_on_a_busy_machine(  # type: ignore[no-untyped-def]
    synth_dir, tmp_path, monkeypatch
) -> None:
    calm = _budget_run(synth_dir, tmp_path / "calm.pt", lr_by_time=False)
    calm_in_time = _budget_run(synth_dir, tmp_path / "calm-t.pt", lr_by_time=True)
    monkeypatch.setattr("model.train.time", _BusyClock())
    busy = _budget_run(synth_dir, tmp_path / "busy.pt", lr_by_time=False)
    busy_in_time = _budget_run(synth_dir, tmp_path / "busy-t.pt", lr_by_time=True)
    assert busy == calm
    # In seconds, the busy clock warms up and decays in fewer steps: another run.
    assert busy_in_time != calm_in_time


def test_training_encodes_each_image_in_at_most_its_fixed_views(synth_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    train_s, val_s = split(discover(synth_dir), val_fraction=0.25, seed=0)
    bundle = new_bundle(build_encoder("sam_tiny", input_size=64), label_sigma=2.0)
    tr, va = load_samples(train_s, 64), load_samples(val_s, 64)
    cache = FeatureCache(None)
    config = TrainConfig(epochs=6, batch_size=4, views_per_image=2, test_time_views=("identity",))
    train(bundle, tr, va, config, out=tmp_path / "m.pt", cache=cache, progress=False)
    assert len(tr) < cache.misses <= 2 * len(tr) + len(va)


def test_evaluation_reports_every_metric_with_the_ablation(synth_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    bundle, _, val = _tiny_run(synth_dir, tmp_path / "m.pt", epochs=1)
    report = evaluate(bundle, val)
    assert set(report) >= EVAL_KEYS and set(report["no_prompt"]) >= EVAL_KEYS
    assert 0.0 <= report["miou"] <= 1.0
    assert report["count"] == len(val)
    assert set(report["per_type"]) == {it.defect_type for it in val}


def test_reloaded_checkpoint_predicts_the_same(synth_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    bundle, result, val = _tiny_run(synth_dir, tmp_path / "m.pt", epochs=1)
    enc = bundle.encoder  # the random tiny encoder is shared, as the app shares encoders
    # Reloaded heads on a CPU are channels-last: the same maths, another summation order.
    reloaded = load_bundle(result.checkpoint, encoder=enc)
    image = val[0].image
    p1, p2 = Predictor(bundle).predict(image), Predictor(reloaded).predict(image)
    assert np.allclose(p1.heatmap, p2.heatmap, atol=1e-5)
    assert (p1.mask == p2.mask).all() and p1.defect_score == pytest.approx(
        p2.defect_score, rel=1e-4
    )


def test_prediction_applies_the_calibrated_area_gate(synth_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    bundle, _, val = _tiny_run(synth_dir, tmp_path / "m.pt", epochs=1)
    image = val[0].image  # already at input size: areas compare one to one
    # As the predictor computes it: cached half-precision features, the model's views.
    views = bundle.meta.test_time_views
    prob = predict_views(bundle, [image], shas=["any"], cache=FeatureCache(None), views=views)
    prob = prob.prob[0]
    bundle.meta.mask_threshold = float(np.quantile(prob, 0.9))  # a mask of ~10 % of pixels
    area = int((prob > bundle.meta.mask_threshold).sum())
    bundle.meta.min_defect_area = area
    kept = Predictor(bundle).predict(image)
    assert kept.mask.sum() == area
    bundle.meta.min_defect_area = area + 1
    assert not Predictor(bundle).predict(image).mask.any()


def test_prediction_outputs_match_the_image_and_clicks_refine(synth_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    bundle, _, val = _tiny_run(synth_dir, tmp_path / "m.pt", epochs=1)
    predictor = Predictor(bundle)
    image = np.ascontiguousarray(np.repeat(np.repeat(val[0].image, 2, 0), 3, 1))  # 128×192
    pred = predictor.predict(image)
    assert pred.heatmap.shape == pred.mask.shape == (128, 192)
    assert pred.heatmap.min() >= 0.0 and pred.heatmap.max() <= 1.0
    assert 0.0 <= pred.uncertainty <= 1.0 and 0.0 <= pred.defect_score <= 1.0
    misses = predictor.cache.misses
    refined = predictor.predict(image, clicks=[Click(90, 60, True)])
    assert predictor.cache.misses == misses  # click-to-refine re-uses the cached encoding
    assert refined.defect_score != pred.defect_score


def test_test_time_views_are_mapped_back_before_averaging(synth_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    seed_everything(0)  # untrained heads: any weights must map back alike
    bundle = new_bundle(build_encoder("sam_tiny", input_size=64), label_sigma=2.0)
    image = load_samples(discover(synth_dir), 64)[0].image
    flips = ("identity", "hflip", "vflip", "rot180")  # closed under composition
    plain = predict_views(bundle, [image], views=["identity"])
    assert np.allclose(plain.prob, run_heads(bundle, encode_images(bundle, [image])).prob)
    avg = predict_views(bundle, [image], views=flips).prob[0]
    # Flipping the input permutes the views, so the average flips with it, exactly.
    flipped = predict_views(bundle, [apply_transform(image, "hflip")], views=flips).prob[0]
    assert np.allclose(flipped, apply_transform(avg, "hflip"), atol=1e-5)
    assert np.abs(avg - plain.prob[0]).max() > 1e-3  # the views do differ
    with pytest.raises(ValueError, match="view"):
        predict_views(bundle, [image], views=[])


def test_calibration_and_prediction_use_the_test_time_views(synth_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    bundle, result, val = _tiny_run(synth_dir, tmp_path / "m.pt", epochs=1)
    assert bundle.meta.test_time_views == list(TRANSFORMS)
    reloaded = load_bundle(result.checkpoint)
    assert reloaded.meta.test_time_views == list(TRANSFORMS)
    expected = predict_views(reloaded, [val[0].image], views=TRANSFORMS, cache=FeatureCache(None))
    pred = Predictor(reloaded).predict(val[0].image)
    assert pred.defect_score == pytest.approx(float(expected.prob[0].max()), abs=1e-6)
    assert (pred.mask == (expected.prob[0] > reloaded.meta.mask_threshold)).all()
    config = TrainConfig(epochs=1, test_time_views=("identity", "spin"))
    with pytest.raises(ValueError, match="test-time views"):
        train(bundle, val, val, config, out=tmp_path / "x.pt", progress=False)


def test_time_budget_keeps_room_for_calibrating_the_views() -> None:
    assert loop_budget_s(900.0, 20.0, 6) == 800.0  # five more passes like the first
    assert loop_budget_s(900.0, 20.0, 1) == 900.0  # upright only: nothing to reserve
    assert loop_budget_s(900.0, 200.0, 6) == 450.0  # never less than half the budget
    assert loop_budget_s(900.0, 20.0, 6, share=0.5) == 850.0  # half the set to calibrate on


def test_calibration_sample_is_seeded_ordered_and_keeps_the_clean_share(synth_dir) -> None:  # type: ignore[no-untyped-def]
    items = load_samples(discover(synth_dir), 64)
    clean = sum(not it.defective for it in items) / len(items)
    position = {id(it): i for i, it in enumerate(items)}

    def picked(seed: int, size: int = 10) -> list[int]:
        return [position[id(it)] for it in calibration_sample(items, size, seed=seed)]

    sample = picked(3)
    assert len(set(sample)) == 10 and sample == sorted(sample)
    assert sum(not items[i].defective for i in sample) == round(10 * clean)
    assert picked(3) == sample and picked(4) != sample
    assert picked(3, size=len(items) + 5) == list(range(len(items)))


def test_checkpoint_for_another_encoder_is_refused(synth_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, result, _ = _tiny_run(synth_dir, tmp_path / "m.pt", epochs=1)
    effnet = build_encoder("effnet_lite0", input_size=64)
    with pytest.raises(CheckpointError, match="not effnet_lite0"):
        load_bundle(result.checkpoint, encoder=effnet)
    other = build_encoder("sam_tiny", input_size=64)  # same shape, other weights id
    other.weights_sha256 = "f" * 64
    with pytest.raises(CheckpointError, match="encoder weights"):
        load_bundle(result.checkpoint, encoder=other)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match=r"bad\.pt"):
        load_bundle(bad)
    not_ours = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, not_ours)
    with pytest.raises(CheckpointError, match="not a HeatPrompt checkpoint"):
        read_checkpoint(not_ours)


def test_save_is_atomic_when_serialisation_fails(tmp_path, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    bundle = new_bundle(tiny_encoder, label_sigma=2.0)
    path = save_checkpoint(tmp_path / "ok.pt", bundle)
    before = path.read_bytes()
    bundle.meta.metrics = {"bad": object()}  # metadata that is not plain JSON
    with pytest.raises(TypeError):
        save_checkpoint(path, bundle)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.slow
def test_effnet_learns_defects_on_cpu(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A short CPU run must beat the all-empty baseline clearly (a can-fail quality check)."""
    from model.synth import write_dataset

    root = write_dataset(tmp_path / "data", seed=11, size=128, count=60, progress=False)
    train_s, val_s = split(discover(root), val_fraction=0.25, seed=0)
    seed_everything(0)
    bundle = new_bundle(build_encoder("effnet_lite0", input_size=128), label_sigma=2.0)
    tr, va = load_samples(train_s, 128), load_samples(val_s, 128)
    config = TrainConfig(epochs=25, batch_size=8, seed=0, max_minutes=1.5)
    train(bundle, tr, va, config, out=tmp_path / "m.pt", progress=False)
    report = evaluate(bundle, va, ablation=False)
    assert report["miou"] > 0.25, report
    assert report["image_auroc"] is None or report["image_auroc"] > 0.6


@pytest.mark.parametrize("mixed", [False, True])
def test_a_run_encodes_in_float32_and_gives_the_bundle_back(
    synth_dir, tmp_path, mixed: bool
) -> None:  # type: ignore[no-untyped-def]
    """Whatever the steps use, a run's cached encoder passes are the float32 pass, and the
    bundle predicts in its own precision again afterwards."""
    train_s, val_s = split(discover(synth_dir), val_fraction=0.25, seed=0)
    bundle = new_bundle(build_encoder("effnet_lite0", input_size=64), label_sigma=2.0)
    tr, va = load_samples(train_s, 64), load_samples(val_s, 64)
    cache = FeatureCache(None, half=False)
    config = TrainConfig(epochs=1, batch_size=4, mixed_precision=mixed)
    train(bundle, tr, va, config, out=tmp_path / "m.pt", cache=cache, progress=False)
    assert bundle.mixed_precision is True
    key = CacheKey(va[0].sha256, bundle.encoder.cache_id, 64, "identity")

    def not_cached(indices: list[int]) -> EncoderOutput:
        raise AssertionError("the validation image was not cached")

    cached = cache.get_or_compute([key], not_cached)
    plain = bundle.encoder.encode(torch.from_numpy(va[0].image[None]))
    pairs = zip(cached.features, plain.features, strict=True)
    # float32 batches of other sizes may sum in another order (bfloat16 differs by ~2).
    assert max(float((a - b).abs().max()) for a, b in pairs) < 1e-4
