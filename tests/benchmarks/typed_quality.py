"""Defect types on data the project was never tuned on (`quality.py --typed`).

Trains `effnet_lite0` once on the independent generator's five typed folders (its type
head learns after the segmentation heads, from the same images) and evaluates the 150
unseen test images twice with the same weights: typed (regions named, per-type mask rules)
and untyped (the type head and its rules taken out: what the same training gives without
types). Prints region type accuracy, macro-F1, the confusion matrix, per-type IoU and the
binary mIoU of both decisions.

It then compares the two kinds of type head on the same weights and the same masks (the
global rule), both fitted here on the training split the model learned from: the
per-pixel class map (`model.pixel_type_head`) and the region classifier (`model.type_head`,
descriptors of a context crop per region), with the fitting time and the typing time per
image of each.
A rerun with the same `--workdir` reuses the data and the trained model.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from model.checkpoint import ModelBundle, load_bundle
from model.dataset import LoadedSample, discover, load_samples, split
from model.evaluate import evaluate, predict_probs
from model.feature_cache import FeatureCache
from model.labelled_regions import true_regions
from model.pipeline import train_from_folders
from model.pixel_type_head import classify_regions_by_pixels, fit_pixel_head
from model.training_task import DEFAULT_VAL_FRACTION
from model.type_metrics import TypedRegions, type_report
from model.type_training import fit_head
from model.typed_decision import classify_by_descriptors
from model.typed_mask import TypedMask
from tests.benchmarks.unseen_synth import write_unseen_dataset
from webapp.cli import format_confusion

SEGMENTATION_KEYS = ("miou", "dice", "empty_accuracy", "image_auroc", "pixel_auroc")


def untyped(bundle: ModelBundle) -> ModelBundle:
    """The same weights with no type head and no per-type rules."""
    meta = copy.deepcopy(bundle.meta)
    meta.type_head, meta.type_rules = None, {}
    return ModelBundle(bundle.encoder, bundle.heads, meta)


def format_typed(report: dict[str, Any]) -> str:
    """The side-by-side table, the type metrics and the confusion matrix."""

    def f(v: float | None) -> str:
        return "   n/a" if v is None else f"{v:6.3f}"

    typed, plain = report["typed"], report["untyped"]
    lines = [f"{'':16}{'typed':>8}{'untyped':>9}"]
    lines += [f"{k:16}{f(typed[k]):>8}{f(plain[k]):>9}" for k in SEGMENTATION_KEYS]
    types = typed["types"]
    lines.append(
        f"regions matched {types['regions']}: type accuracy {f(types['type_accuracy'])}, "
        f"macro-F1 {f(types['type_macro_f1'])}"
    )
    lines.append("per type (pixels of the type): IoU / Dice; mask IoU of images of the type")
    for name, stats in types["per_type"].items():
        image_iou = typed["per_type"].get(name, {}).get("iou")
        lines.append(
            f"  {name:14} {f(stats['iou'])} / {f(stats['dice'])}   image IoU {f(image_iou)}"
        )
    lines += format_confusion(types["confusion"])
    lines.append(f"per-type rules: {json.dumps(report['type_rules'])}")
    return "\n".join(lines)


def compare_heads(
    bundle: ModelBundle,
    train_items: list[LoadedSample],
    test_items: list[LoadedSample],
    *,
    cache: FeatureCache,
    seed: int,
) -> dict[str, Any]:
    """Region head vs per-pixel head on the same masks: type metrics and seconds per image
    (the pixel head's training seconds too; the region head was trained with the model)."""
    rule = bundle.meta.mask_rule
    probs = predict_probs(bundle, test_items, cache=cache)
    masks = [rule.binarize(p) for p in probs]
    truth = [true_regions(it) for it in test_items]
    start = time.monotonic()
    pixel_head = fit_pixel_head(bundle, train_items, cache=cache, seed=seed, progress=True)
    pixel_fit_s = time.monotonic() - start
    start = time.monotonic()
    region_head = fit_head(bundle, train_items, cache=cache, seed=seed, progress=True)
    region_fit_s = time.monotonic() - start
    assert pixel_head is not None and region_head is not None
    typers: dict[str, tuple[float, Callable[[LoadedSample, np.ndarray], TypedMask]]] = {
        "pixel head": (
            pixel_fit_s,
            lambda it, m: classify_regions_by_pixels(
                bundle, pixel_head, it.image, m, sha256=it.sha256, cache=cache
            ),
        ),
        "region head": (
            region_fit_s,
            lambda it, m: classify_by_descriptors(bundle, region_head, it.image, m, cache=cache),
        ),
    }
    out: dict[str, Any] = {}
    for name, (fit_s, typer) in typers.items():
        start = time.monotonic()
        typed = [typer(it, m) for it, m in zip(test_items, masks, strict=True)]
        seconds = (time.monotonic() - start) / max(1, len(test_items))
        report = type_report(truth, [TypedRegions(t.labels, t.types) for t in typed])
        out[name] = {"types": report, "seconds_per_image": seconds, "fit_seconds": fit_s}
    return out


def format_heads(comparison: dict[str, Any]) -> str:
    """One line per head: type accuracy, macro-F1, typing time."""
    lines = ["region typing on the same masks (global rule):"]
    for name, result in comparison.items():
        t = result["types"]
        extra = f", fitted in {result['fit_seconds']:.0f} s"
        lines.append(
            f"  {name:12} accuracy {t['type_accuracy']:.3f}  macro-F1 {t['type_macro_f1']:.3f}  "
            f"{1000 * result['seconds_per_image']:6.0f} ms/image{extra}"
        )
    return "\n".join(lines)


def run_typed(args: argparse.Namespace, work: Path, train_options: dict[str, Any]) -> None:
    """Write the data, train once, evaluate typed and untyped, print and save the report."""
    train_dir = write_unseen_dataset(
        work / "train", seed=1000 + args.seed, count=args.train_count or 2000, size=args.size
    )
    test_dir = write_unseen_dataset(
        work / "test", seed=2000 + args.seed, count=args.test_count or 150, size=args.size
    )
    start = time.monotonic()
    checkpoint = work / "model.pt"
    epochs, stopped_by = "?", "reused"
    if not checkpoint.exists():
        result = train_from_folders(
            data=[train_dir],
            out=checkpoint,
            input_size=args.size,
            scale="fit",
            cache_dir=work / "cache",
            **train_options,
        )
        epochs, stopped_by = str(result.epochs_run), result.stopped_by
    train_s = time.monotonic() - start
    bundle = load_bundle(checkpoint)
    items = load_samples(discover(test_dir), bundle.encoder.input_size)
    report = {
        "typed": evaluate(bundle, items, ablation=False),
        "untyped": evaluate(untyped(bundle), items, ablation=False),
        "type_rules": bundle.meta.type_rules,
        "classes": list(bundle.meta.defect_types),
        "train_seconds": train_s,
        "epochs": epochs,
        "test_images": len(items),
    }
    print(
        f"trained {epochs} epochs in {train_s / 60:.1f} min ({stopped_by}); "
        f"test set: {len(items)} unseen images; classes {', '.join(report['classes'])}"
    )
    print(format_typed(report), flush=True)
    train_items = load_samples(discover(train_dir), bundle.encoder.input_size)
    fit, _ = split(train_items, val_fraction=DEFAULT_VAL_FRACTION, seed=args.seed)
    report["heads"] = compare_heads(
        bundle, fit, items, cache=FeatureCache(work / "cache"), seed=args.seed
    )
    print(format_heads(report["heads"]))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
