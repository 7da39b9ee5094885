"""Typed datasets and typed models: types read from folders and code maps, a type head
trained after the segmentation heads, typed predictions and type metrics."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from model.checkpoint import load_bundle
from model.dataset import GOOD, discover, load_samples
from model.evaluate import evaluate, evaluate_native
from model.feature_cache import FeatureCache
from model.labelled_regions import has_types, true_regions
from model.pipeline import train_from_folders
from model.predict import Predictor
from model.region_types import UNSPECIFIED
from model.train import TrainConfig
from model.training_task import run_training_task
from tests.benchmarks.unseen_synth import DEFECT_TYPES, write_unseen_dataset


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_pairs_read_types_from_mask_folders_and_code_maps(tmp_path: Path) -> None:
    image = np.zeros((32, 32, 3), np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    mask[2:6, 2:6] = 255
    mask[20:30, 20:22] = 255
    for stem in ("a", "b", "c", "d"):
        _save(image, tmp_path / "images" / f"{stem}.png")
    _save(mask, tmp_path / "masks" / "a.png")  # untyped
    _save(mask, tmp_path / "masks" / "crack" / "b.png")  # typed by its folder
    _save(mask, tmp_path / "masks" / "c.png")  # typed region by region
    codes = np.zeros((32, 32), np.uint8)
    codes[2:6, 2:6] = 4
    codes[20:30, 20:22] = 9
    _save(codes, tmp_path / "types" / "c.png")
    (tmp_path / "types.json").write_text(json.dumps({"4": {"name": "dent"}, "9": {"name": "x"}}))
    samples = {s.image_path.stem: s for s in discover(tmp_path)}
    assert samples["d"].mask_path is None and samples["d"].defect_type == "good"
    items = {it.sample.image_path.stem: it for it in load_samples(samples.values(), 32)}
    assert true_regions(items["a"]).types == [UNSPECIFIED, UNSPECIFIED]
    assert true_regions(items["b"]).types == ["crack", "crack"]
    assert true_regions(items["c"]).types == ["dent", "x"]
    assert has_types(list(items.values()))
    assert not has_types([items["a"], items["d"]])


def _train_tiny(data: Path, out: Path, **options: Any) -> Path:
    """A tiny sam_tiny model of 64-px images, trained on `data`; its checkpoint."""
    settings = {"epochs": 2, "cache_dir": out.parent / "cache"} | options
    return train_from_folders(
        data=[data],
        out=out,
        encoder="sam_tiny",
        input_size=64,
        scale="fit",
        batch_size=8,
        test_time_views=1,
        progress=False,
        **settings,
    ).checkpoint


@pytest.fixture(scope="module")
def typed_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny model trained on the independent generator's five typed folders."""
    work = tmp_path_factory.mktemp("typed")
    data = write_unseen_dataset(work / "train", seed=5, count=60, size=64)
    checkpoint = _train_tiny(data, work / "model.pt")
    test = write_unseen_dataset(work / "test", seed=6, count=20, size=64)
    return checkpoint, test


def test_a_typed_dataset_trains_a_type_head_with_its_folder_names(typed_model) -> None:  # type: ignore[no-untyped-def]
    checkpoint, _ = typed_model
    bundle = load_bundle(checkpoint)
    classes = bundle.meta.defect_types
    assert classes and set(classes) <= set(DEFECT_TYPES)
    val_types = bundle.meta.metrics["val"]["types"]
    assert set(val_types) >= {"type_accuracy", "type_macro_f1", "confusion", "per_type"}
    assert set(bundle.meta.type_rules) <= set(classes)
    assert bundle.meta.type_head_kind == "pixel"  # the default kind, its net saved beside
    assert bundle.type_net is not None and bundle.type_net.classes == len(classes)


def test_a_region_kind_type_head_trains_and_older_checkpoints_load_as_one(
    tmp_path: Path,
) -> None:
    import torch

    from model.checkpoint import save_checkpoint
    from model.errors import CheckpointError

    data = write_unseen_dataset(tmp_path / "train", seed=7, count=40, size=64)
    bundle = load_bundle(_train_tiny(data, tmp_path / "region.pt", epochs=1, type_head="region"))
    assert bundle.meta.type_head_kind == "region" and bundle.type_net is None
    image = np.asarray(Image.open(discover(data)[-1].image_path).convert("RGB"))
    named = {r.name for r in Predictor(bundle).predict(image).regions}
    assert named <= {*bundle.meta.defect_types, UNSPECIFIED}
    # Region heads were written without a "kind" before pixel heads existed.
    older = dataclasses.replace(
        bundle.meta,
        type_head={k: v for k, v in (bundle.meta.type_head or {}).items() if k != "kind"},
    )
    save_checkpoint(tmp_path / "older.pt", dataclasses.replace(bundle, meta=older))
    assert load_bundle(tmp_path / "older.pt").meta.type_head_kind == "region"
    # Pixel-head weights in a checkpoint whose head is not a pixel head: refused.
    stray = dataclasses.replace(bundle, type_net=torch.nn.Linear(2, 2))  # type: ignore[arg-type]
    save_checkpoint(tmp_path / "stray.pt", stray)
    with pytest.raises(CheckpointError, match="without a pixel type head"):
        load_bundle(tmp_path / "stray.pt")
    with pytest.raises(ValueError, match="type head must be one of"):
        train_from_folders(data=[data], out=tmp_path / "x.pt", type_head="blob", progress=False)


def test_a_typed_model_is_fine_tuned_and_its_type_head_refitted_or_dropped(
    typed_model,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    """Retraining starts from the served model, typed or not: its pixel type head's weights
    sit in each checkpoint written during the run and must not be read as the heads'. The
    type head is fitted again from the labels' types; labels that name none leave an
    untyped model (the start's types are not theirs)."""
    checkpoint, _ = typed_model
    start = load_bundle(checkpoint)
    more = write_unseen_dataset(tmp_path / "more", seed=7, count=60, size=64)
    typed = load_samples(discover(more), 64)
    untyped = [  # as the review app stores masks no one typed
        dataclasses.replace(
            it,
            sample=dataclasses.replace(it.sample, defect_type="defect" if it.mask.any() else GOOD),
            types=None,
            type_names={},
        )
        for it in typed
    ]
    config = TrainConfig(epochs=1, batch_size=8, test_time_views=("identity",))
    for items, name in ((typed, "typed"), (untyped, "untyped")):
        out = run_training_task(
            items,
            config,
            start=load_bundle(checkpoint),
            out=tmp_path / f"{name}.pt",
            progress=False,
        ).checkpoint
        tuned = load_bundle(out)
        if name == "typed":
            assert tuned.meta.type_head_kind == "pixel" and tuned.type_net is not None
            assert set(tuned.meta.defect_types) <= set(DEFECT_TYPES)
        else:
            assert tuned.meta.type_head is None and tuned.type_net is None
    assert start.type_net is not None


def test_typed_predictions_name_every_region(typed_model) -> None:  # type: ignore[no-untyped-def]
    checkpoint, test = typed_model
    bundle = load_bundle(checkpoint)
    predictor = Predictor(bundle)
    named = set()
    for sample in discover(test)[:12]:
        image = np.asarray(Image.open(sample.image_path).convert("RGB"))
        pred = predictor.predict(image)
        assert pred.labels is not None and pred.labels.shape == image.shape[:2]
        assert pred.labels.max() == len(pred.regions)
        assert (pred.labels > 0).sum() == pred.mask.sum()
        assert sum(r.area for r in pred.regions) == int(pred.mask.sum())
        named |= {r.name for r in pred.regions}
    assert named <= {*bundle.meta.defect_types, UNSPECIFIED}


def test_evaluation_reports_type_metrics_for_a_typed_model(typed_model) -> None:  # type: ignore[no-untyped-def]
    checkpoint, test = typed_model
    bundle = load_bundle(checkpoint)
    report = evaluate(bundle, load_samples(discover(test), 64), ablation=False)
    types = report["types"]
    labels = types["confusion"]["labels"]
    matrix = np.array(types["confusion"]["matrix"], int).reshape(len(labels), len(labels))
    assert matrix.sum() == types["regions"]
    if types["regions"]:
        assert np.trace(matrix) / matrix.sum() == pytest.approx(types["type_accuracy"])
    native = evaluate_native(bundle, discover(test)[:6])
    assert "types" in native


def test_an_untyped_dataset_trains_an_untyped_model(tmp_path: Path, synth_dir: Path) -> None:
    images = tmp_path / "pairs"
    for sample in discover(synth_dir)[:16]:
        stem = f"{sample.defect_type}-{sample.image_path.stem}"
        _save(
            np.asarray(Image.open(sample.image_path).convert("RGB")),
            images / "images" / f"{stem}.png",
        )
        if sample.mask_path is not None:
            _save(np.asarray(Image.open(sample.mask_path)), images / "masks" / f"{stem}.png")
    bundle = load_bundle(_train_tiny(images, tmp_path / "m.pt", epochs=1))
    assert bundle.meta.type_head is None and bundle.meta.defect_types == ()
    assert "types" not in evaluate(bundle, load_samples(discover(images), 64), ablation=False)


def test_typing_work_counts_passes_only_for_typed_regions(tmp_path: Path) -> None:
    from model.pixel_type_head import EPOCH_COST, EPOCHS
    from model.type_training import typing_work

    data = write_unseen_dataset(tmp_path / "d", seed=2, count=10, size=64)
    items = load_samples(discover(data), 64)
    regions = sum(len(true_regions(it).types) for it in items)
    work = typing_work(items, seed=0, kind="region", tile=64)
    assert regions < work <= 2 * regions + len(items)  # crops, and predicted images again
    defective = sum(it.defective for it in items)  # one tile each: the images are 64 px
    pixel = typing_work(items, seed=0, kind="pixel", tile=64)
    assert pixel == round(defective * (1 + EPOCHS * EPOCH_COST))
    untyped = [
        dataclasses.replace(it, sample=dataclasses.replace(it.sample, defect_type="defect"))
        for it in items
    ]
    for kind in ("region", "pixel"):
        assert typing_work(untyped, seed=0, kind=kind, tile=64) == 0


def test_the_pixel_type_head_learns_types_and_maps_every_pixel(typed_model) -> None:  # type: ignore[no-untyped-def]
    from model.pixel_type_head import (
        classify_regions_by_pixels,
        fit_pixel_head,
        type_probabilities,
    )

    checkpoint, _ = typed_model
    bundle = load_bundle(checkpoint)
    cache = FeatureCache(checkpoint.parent / "cache")
    items = load_samples(discover(checkpoint.parent / "train"), bundle.encoder.input_size)
    head = fit_pixel_head(bundle, items, cache=cache, seed=0)
    assert head is not None and set(head.classes) <= set(DEFECT_TYPES)
    assert len(head.classes) >= 3
    right = total = 0
    for item in items:
        truth = true_regions(item)
        typed = classify_regions_by_pixels(
            bundle, head, item.image, item.mask, sha256=item.sha256, cache=cache
        )
        assert len(typed.types) == len(truth.types)
        for got, want in zip(typed.types, truth.types, strict=True):
            if want in head.classes:
                total += 1
                right += got == want
    assert total > 20 and right / total >= 0.6  # five types: chance is about 0.2
    strip = np.zeros((40, 150, 3), np.uint8)  # not a tile: padded, tiled and stitched
    probs = type_probabilities(bundle, head, strip, sha256=None, cache=None)
    assert probs.shape == (len(head.classes), 40, 150)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-4)


def test_region_weights_give_every_typed_region_the_same_total() -> None:
    from model.pixel_type_head import _region_weights

    target = np.full((20, 20), -1, np.int64)
    target[0:2, 0:2] = 0  # 4 pixels
    target[10:20, 10:20] = 1  # 100 pixels
    w = _region_weights(target)
    assert w[target < 0].sum() == 0
    assert w[0:2, 0:2].sum() == pytest.approx(1.0)
    assert w[10:20, 10:20].sum() == pytest.approx(1.0)
