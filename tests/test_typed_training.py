"""Typed datasets and typed models: types read from folders and code maps, a type head
trained after the segmentation heads, typed predictions and type metrics."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.checkpoint import load_bundle
from model.dataset import discover, load_samples
from model.evaluate import evaluate, evaluate_native
from model.labelled_regions import has_types, true_regions
from model.pipeline import train_from_folders
from model.predict import Predictor
from model.region_types import UNSPECIFIED
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


@pytest.fixture(scope="module")
def typed_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny model trained on the independent generator's five typed folders."""
    work = tmp_path_factory.mktemp("typed")
    data = write_unseen_dataset(work / "train", seed=5, count=60, size=64)
    result = train_from_folders(
        data=[data],
        out=work / "model.pt",
        encoder="sam_tiny",
        input_size=64,
        scale="fit",
        epochs=2,
        batch_size=8,
        test_time_views=1,
        cache_dir=work / "cache",
        progress=False,
    )
    test = write_unseen_dataset(work / "test", seed=6, count=20, size=64)
    return result.checkpoint, test


def test_a_typed_dataset_trains_a_type_head_with_its_folder_names(typed_model) -> None:  # type: ignore[no-untyped-def]
    checkpoint, _ = typed_model
    bundle = load_bundle(checkpoint)
    classes = bundle.meta.defect_types
    assert classes and set(classes) <= set(DEFECT_TYPES)
    val_types = bundle.meta.metrics["val"]["types"]
    assert set(val_types) >= {"type_accuracy", "type_macro_f1", "confusion", "per_type"}
    assert set(bundle.meta.type_rules) <= set(classes)


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
    result = train_from_folders(
        data=[images],
        out=tmp_path / "m.pt",
        encoder="sam_tiny",
        input_size=64,
        scale="fit",
        epochs=1,
        test_time_views=1,
        progress=False,
    )
    bundle = load_bundle(result.checkpoint)
    assert bundle.meta.type_head is None and bundle.meta.defect_types == ()
    assert "types" not in evaluate(bundle, load_samples(discover(images), 64), ablation=False)


def test_typing_work_counts_crops_only_for_typed_regions(tmp_path: Path) -> None:
    from model.type_training import typing_work

    data = write_unseen_dataset(tmp_path / "d", seed=2, count=10, size=64)
    items = load_samples(discover(data), 64)
    regions = sum(len(true_regions(it).types) for it in items)
    work = typing_work(items, seed=0)
    assert regions < work <= 2 * regions + len(items)  # crops, and predicted images again
    untyped = [
        dataclasses.replace(it, sample=dataclasses.replace(it.sample, defect_type="defect"))
        for it in items
    ]
    assert typing_work(untyped, seed=0) == 0
