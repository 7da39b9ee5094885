"""Defect types on data the project was never tuned on (`quality.py --typed`).

Trains `effnet_lite0` once on the independent generator's five typed folders (its type
head learns after the segmentation heads, from the same images) and evaluates the 150
unseen test images twice with the same weights: typed (regions named, per-type mask rules)
and untyped (the type head and its rules taken out: what the same training gives without
types). Prints region type accuracy, macro-F1, the confusion matrix, per-type IoU and the
binary mIoU of both decisions.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

from model.checkpoint import ModelBundle, load_bundle
from model.dataset import discover, load_samples
from model.evaluate import evaluate
from model.pipeline import train_from_folders
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


def run_typed(args: argparse.Namespace, work: Path, train_options: dict[str, Any]) -> None:
    """Write the data, train once, evaluate typed and untyped, print and save the report."""
    train_dir = write_unseen_dataset(
        work / "train", seed=1000 + args.seed, count=args.train_count or 2000, size=args.size
    )
    test_dir = write_unseen_dataset(
        work / "test", seed=2000 + args.seed, count=args.test_count or 150, size=args.size
    )
    start = time.monotonic()
    result = train_from_folders(
        data=[train_dir],
        out=work / "model.pt",
        input_size=args.size,
        scale="fit",
        cache_dir=work / "cache",
        **train_options,
    )
    train_s = time.monotonic() - start
    bundle = load_bundle(result.checkpoint)
    items = load_samples(discover(test_dir), bundle.encoder.input_size)
    report = {
        "typed": evaluate(bundle, items, ablation=False),
        "untyped": evaluate(untyped(bundle), items, ablation=False),
        "type_rules": bundle.meta.type_rules,
        "classes": list(bundle.meta.defect_types),
        "train_seconds": train_s,
        "epochs": result.epochs_run,
        "test_images": len(items),
    }
    print(
        f"trained {result.epochs_run} epochs in {train_s / 60:.1f} min ({result.stopped_by}); "
        f"test set: {len(items)} unseen images; classes {', '.join(report['classes'])}"
    )
    print(format_typed(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
