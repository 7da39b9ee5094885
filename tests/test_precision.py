"""Predictions in the device's reduced precision (`model.precision`): the encoder and the
heads really run in it (also on the compute pool's threads), the float32 choice is the
plain float32 pass, both give the same maps within rounding, and the serving setting and
the command line's --float32 reach the model."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import ModelBundle, load_bundle, new_bundle, save_checkpoint
from model.encoders import build_encoder
from model.inference import encode_images, run_heads
from model.precision import precision_name, reduced_dtype, reduced_precision
from model.predict import Predictor
from webapp.app import build_services
from webapp.cli import main as cli_main
from webapp.model_server import ModelServer
from webapp.settings import Settings

CPU = torch.device("cpu")
needs_reduced = pytest.mark.skipif(
    reduced_dtype(CPU) is None, reason="this CPU has no native bfloat16"
)


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    torch.manual_seed(0)
    return new_bundle(build_encoder("effnet_lite0", input_size=128), label_sigma=2.0, scale=1.0)


def tiles(count: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (128, 128, 3), dtype=np.uint8) for _ in range(count)]


def exact(bundle: ModelBundle) -> ModelBundle:
    return dataclasses.replace(bundle, mixed_precision=False)


def test_float32_is_the_plain_float32_pass(bundle: ModelBundle) -> None:
    images = tiles()
    plain = bundle.encoder.encode(torch.from_numpy(np.stack(images)))
    got = encode_images(exact(bundle), images)
    for a, b in zip(got.features, plain.features, strict=True):
        assert a.dtype == torch.float32 and torch.equal(a, b)


def test_the_context_is_a_no_op_when_disabled() -> None:
    with reduced_precision(CPU, enabled=False):
        assert not torch.is_autocast_enabled("cpu")
    assert precision_name(CPU, enabled=False) == "float32"


@needs_reduced
def test_the_served_arithmetic_is_named(bundle: ModelBundle) -> None:
    assert Predictor(bundle).precision == precision_name(CPU) == "bfloat16"
    assert Predictor(exact(bundle)).precision == "float32"


@needs_reduced
def test_reduced_precision_runs_encoder_and_heads_in_it(bundle: ModelBundle) -> None:
    images = tiles()
    fast, full = encode_images(bundle, images), encode_images(exact(bundle), images)
    # Returned in float32 either way, but computed in bfloat16: not the same numbers.
    assert all(f.dtype == torch.float32 for f in fast.features)
    assert any(not torch.equal(a, b) for a, b in zip(fast.features, full.features, strict=True))
    # The heads on identical inputs: they too compute in bfloat16 unless told not to.
    heads_fast, heads_full = run_heads(bundle, full), run_heads(exact(bundle), full)
    assert not np.array_equal(heads_fast.prob, heads_full.prob)
    # ... within rounding of the float32 maps.
    assert np.abs(heads_fast.prob - heads_full.prob).max() < 0.05
    assert np.abs(run_heads(bundle, fast).heatmap - heads_full.heatmap).max() < 0.05


@needs_reduced
def test_a_compute_thread_predicts_in_reduced_precision_too(bundle: ModelBundle) -> None:
    """Autocast is per thread: the pool's threads must enter it themselves."""
    images = tiles(2)
    here = encode_images(bundle, images)
    there: list[torch.Tensor] = []
    worker = threading.Thread(
        target=lambda: there.append(encode_images(bundle, images).features[2])
    )
    worker.start()
    worker.join()
    assert torch.equal(there[0], here.features[2])
    assert not torch.equal(there[0], encode_images(exact(bundle), images).features[2])


@needs_reduced
def test_whole_image_predictions_agree_within_rounding(bundle: ModelBundle) -> None:
    image = np.random.default_rng(1).integers(0, 255, (200, 300, 3), dtype=np.uint8)
    fast = Predictor(bundle).predict(image)
    full = Predictor(exact(bundle)).predict(image)
    assert fast.heatmap.shape == full.heatmap.shape == (200, 300)
    assert np.abs(fast.heatmap - full.heatmap).max() < 0.05
    assert abs(fast.defect_score - full.defect_score) < 0.05


def test_the_serving_setting_reaches_the_served_model(
    bundle: ModelBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Settings().prediction_mixed_precision is True
    monkeypatch.setenv("HEATPROMPT_PREDICTION_MIXED_PRECISION", "false")
    assert Settings().prediction_mixed_precision is False
    checkpoint = save_checkpoint(tmp_path / "m.pt", bundle)
    for choice in (True, False):
        served = ModelServer(mixed_precision=choice).load(checkpoint, version_id=1)
        assert served.predictor.bundle.mixed_precision is choice
    services = build_services(
        Settings(data_dir=tmp_path / "data", prediction_mixed_precision=False)
    )
    try:
        served = services.models.load(checkpoint, version_id=None)
        assert served.predictor.bundle.mixed_precision is False
        assert services.model_status()["precision"] == "float32"
    finally:
        services.shutdown()


@needs_reduced
def test_predict_float32_writes_the_float32_maps(bundle: ModelBundle, tmp_path: Path) -> None:
    from PIL import Image

    checkpoint = save_checkpoint(tmp_path / "m.pt", bundle)
    image = np.random.default_rng(2).integers(0, 255, (160, 140, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "part.png")
    heatmaps = {}
    for flag in ([], ["--float32"]):
        out = tmp_path / ("full" if flag else "fast")
        argv = ["predict", "--checkpoint", str(checkpoint), "--out", str(out), "--device", "cpu"]
        assert cli_main([*argv, *flag, str(tmp_path / "part.png")]) == 0
        heatmaps[bool(flag)] = np.load(out / "part_heatmap.npy")
        assert json.loads((out / "predictions.json").read_text())[0]["image"]
    expected = Predictor(exact(load_bundle(checkpoint))).predict(image).heatmap
    np.testing.assert_allclose(heatmaps[True], expected, atol=1e-5)
    assert not np.array_equal(heatmaps[False], heatmaps[True])
