"""Quality check on data the project was never tuned on.

Writes a training set and a separate test set with the independent generator in
`unseen_synth.py` (other textures, other defect shapes than `model.synth`), trains
`effnet_lite0` on CPU within a time budget, and prints the evaluation of the test set,
with the heatmap prompt and without it (the ablation). Run with `make quality`.

`--large` asks the question the tiling was built for: on large images whose defects are a
few pixels across (the generator's absolute mode: 1–2 px hairlines, specks of 1–3 px), what
does squashing the whole image into one 256 px tile lose against tiles at native pixels?
It writes 1024 × 1024 images and 512 × 2048 strips (train 240 + test 60 of each by
default: 120 test images in all), trains two models on the same training images for the
same budget, `scale=None` (squash) and `scale=1.0` (native tiles), and evaluates both at
each image's own resolution (`evaluate_native`), the native one also with a single
test-time view, then prints them side by side.

`--typed` measures defect types (`typed_quality.py`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from model.checkpoint import load_bundle
from model.dataset import discover, load_samples
from model.evaluate import evaluate, evaluate_native
from model.heatprompt_sam import HeadsConfig
from model.inference import resolve_device
from model.losses import LossWeights
from model.metrics import review_score
from model.pipeline import train_from_folders
from model.train import DEFAULT_LR
from tests.benchmarks.typed_quality import run_typed
from tests.benchmarks.unseen_synth import write_unseen_dataset
from webapp.cli import format_report

SMALL_COUNTS = (2000, 150)  # train, test images in the default (small) mode
LARGE_COUNTS = (240, 60)  # train, test images per geometry in --large mode
# --large geometries: name → (height, width); both in absolute-pixel mode.
LARGE_GEOMETRIES: dict[str, tuple[int, int]] = {"square": (1024, 1024), "strip": (512, 2048)}
LARGE_TILE = 256  # the encoder's input side: native tiles and the squash target alike
# The arms compared in --large mode: label → (training scale, test-time views override).
ARMS: dict[str, tuple[float | None, tuple[str, ...] | None]] = {
    "squashed": (None, None),
    "native": (1.0, None),
    "native_1view": (1.0, ("identity",)),
}
TYPE_LABELS = {"contamination": "particles"}  # how the issue names them
TABLE_TYPES = ("hairline", "contamination", "dent", "blob", "chip")  # thinnest first


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-minutes", type=float, default=15.0, help="per trained model")
    parser.add_argument(
        "--large",
        action="store_true",
        help="squash vs native tiles on 1024² images and 512×2048 strips (absolute pixels)",
    )
    parser.add_argument(
        "--typed",
        action="store_true",
        help="defect types: one model, its regions typed vs the same weights untyped",
    )
    parser.add_argument(
        "--train-count",
        type=int,
        help=f"training images (default {SMALL_COUNTS[0]}; "
        f"--large: per geometry, default {LARGE_COUNTS[0]})",
    )
    parser.add_argument(
        "--test-count",
        type=int,
        help=f"test images (default {SMALL_COUNTS[1]}; "
        f"--large: per geometry, default {LARGE_COUNTS[1]})",
    )
    parser.add_argument("--size", type=int, default=256, help="image side (small mode)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="keep data and checkpoints here")
    parser.add_argument("--json", type=Path, help="also write the report to this file")
    parser.add_argument("--patience", type=int, default=15, help="early-stopping patience")
    parser.add_argument(
        "--test-time-views",
        type=int,
        help="views the models average and are calibrated on (default 6; 1 is 6× faster "
        "to evaluate, and --large then skips its separate one-view arm)",
    )
    parser.add_argument(
        "--tiles-per-image", type=int, default=6, help="training crops per large image"
    )
    parser.add_argument("--lr", type=float, default=DEFAULT_LR, help="peak learning rate")
    parser.add_argument(
        "--arms",
        nargs="+",
        choices=list(ARMS),
        default=list(ARMS),
        help="--large: the arms to train and evaluate (default all)",
    )
    parser.add_argument(
        "--no-high-res",
        action="store_true",
        help="ablation: no early high-resolution features in the mask path",
    )
    parser.add_argument(
        "--fusion-scale",
        type=int,
        default=HeadsConfig.fusion_scale,
        help="fused features at this many times the embedding grid (1: the old heatmap)",
    )
    parser.add_argument(
        "--decoder-weight",
        type=float,
        default=LossWeights.decoder,
        help="weight of the loss on the SAM decoder's own mask (0: off)",
    )
    return parser


def _train_options(args: argparse.Namespace) -> dict[str, Any]:
    """Training settings shared by every model a run trains, so arms differ in scale only."""
    return {
        "max_minutes": args.max_minutes,
        "epochs": 1000,
        "seed": args.seed,
        "device": "auto",
        "lr": args.lr,
        "patience": args.patience,
        "tiles_per_image": args.tiles_per_image,
        "test_time_views": args.test_time_views,
        "heads": HeadsConfig(high_res=not args.no_high_res, fusion_scale=args.fusion_scale),
        "loss": LossWeights(decoder=args.decoder_weight),
    }


def run_small(args: argparse.Namespace, work: Path) -> None:
    """The original benchmark: squares of `--size`, one model, prompt vs no prompt."""
    train_count = args.train_count or SMALL_COUNTS[0]
    test_count = args.test_count or SMALL_COUNTS[1]
    train_dir = write_unseen_dataset(
        work / "train", seed=1000 + args.seed, count=train_count, size=args.size
    )
    test_dir = write_unseen_dataset(
        work / "test", seed=2000 + args.seed, count=test_count, size=args.size
    )
    start = time.monotonic()
    result = train_from_folders(
        data=[train_dir],
        out=work / "model.pt",
        input_size=args.size,
        cache_dir=work / "cache",
        **_train_options(args),
    )
    train_s = time.monotonic() - start
    bundle = load_bundle(result.checkpoint)
    items = load_samples(discover(test_dir), bundle.encoder.input_size)
    report = evaluate(bundle, items)
    report["train_seconds"] = train_s
    report["epochs"] = result.epochs_run
    report["device"] = str(bundle.device)
    report["threads"] = torch.get_num_threads()
    print(
        f"trained {result.epochs_run} epochs in {train_s / 60:.1f} min ({result.stopped_by}); "
        f"test set: {len(items)} unseen images"
    )
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


def _dataset(out: Path, *, seed: int, count: int, height: int, width: int) -> Path:
    """Write an absolute-pixel dataset, or reuse the one a previous run left in `out`.

    Large images take ~0.3 s each to draw; a rerun with the same `--workdir` (another
    budget, another learning rate) should not pay minutes for identical bytes again.
    """
    params = {"seed": seed, "count": count, "size": height, "width": width, "absolute": True}
    stamp = out / "params.json"
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        return out
    write_unseen_dataset(out, seed=seed, count=count, size=height, width=width, absolute=True)
    stamp.write_text(json.dumps(params))
    return out


def _weighted(values: Sequence[tuple[float | None, int]]) -> float | None:
    """Mean of per-part means weighted by how many items each averaged (None parts skipped)."""
    parts = [(v, n) for v, n in values if v is not None and n > 0]
    total = sum(n for _, n in parts)
    return sum(v * n for v, n in parts) / total if total else None


def merge_reports(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One `evaluate_native` report over disjoint test sets, from the report of each.

    The same numbers as evaluating the union at once (every metric is a per-image mean), so
    the geometries are evaluated once each and the overall row costs nothing more.
    """
    defective = [r["defective"] for r in reports]
    clean = [r["count"] - r["defective"] for r in reports]
    counts = [r["count"] for r in reports]
    merged: dict[str, Any] = {
        "miou": _weighted([(r["miou"], n) for r, n in zip(reports, defective, strict=True)]),
        "dice": _weighted([(r["dice"], n) for r, n in zip(reports, defective, strict=True)]),
        "empty_accuracy": _weighted(
            [(r["empty_accuracy"], n) for r, n in zip(reports, clean, strict=True)]
        ),
        "count": sum(counts),
        "defective": sum(defective),
        "seconds_per_image": _weighted(
            [(r["seconds_per_image"], n) for r, n in zip(reports, counts, strict=True)]
        ),
        "views": reports[0]["views"],
    }
    per_type: dict[str, dict[str, Any]] = {}
    for kind in sorted({k for r in reports for k in r["per_type"]}):
        parts = [r["per_type"][kind] for r in reports if kind in r["per_type"]]
        keys = sorted({k for p in parts for k in p} - {"count"})
        per_type[kind] = {k: _weighted([(p.get(k), p["count"]) for p in parts]) for k in keys}
        per_type[kind]["count"] = sum(p["count"] for p in parts)
    merged["per_type"] = per_type
    merged["score"] = review_score(merged)
    return merged


def _cell(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_large(results: dict[str, dict[str, Any]]) -> str:
    """The side-by-side table: one column per arm, overall metrics then per-type IoU."""
    arms = list(results)
    rows: list[tuple[str, list[str]]] = []

    def add(label: str, pick: Any, digits: int = 3) -> None:
        rows.append((label, [_cell(pick(results[a]), digits) for a in arms]))

    add("mIoU", lambda r: r["eval"]["all"]["miou"])
    add("Dice", lambda r: r["eval"]["all"]["dice"])
    add("empty accuracy", lambda r: r["eval"]["all"]["empty_accuracy"])
    add("score", lambda r: r["eval"]["all"]["score"])
    for kind in TABLE_TYPES:
        add(
            f"IoU {TYPE_LABELS.get(kind, kind)}",
            lambda r, k=kind: r["eval"]["all"]["per_type"].get(k, {}).get("iou"),
        )
    for name, (h, w) in LARGE_GEOMETRIES.items():
        add(f"mIoU {h}×{w}", lambda r, g=name: r["eval"][g]["miou"])
    add("s / image", lambda r: r["eval"]["all"]["seconds_per_image"], 2)
    add("train min", lambda r: r["train"]["seconds"] / 60, 1)
    rows.append(("epochs", [str(results[a]["train"]["epochs"]) for a in arms]))
    rows.append(("test views", [str(len(results[a]["eval"]["all"]["views"])) for a in arms]))
    width = max(12, *(len(a) for a in arms)) + 2
    lines = [f"{'':16}" + "".join(f"{a:>{width}}" for a in arms)]
    lines += [f"{label:16}" + "".join(f"{c:>{width}}" for c in cells) for label, cells in rows]
    return "\n".join(lines)


def run_large(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Squash vs native tiles on large absolute-pixel images; returns the whole report."""
    train_count = args.train_count or LARGE_COUNTS[0]
    test_count = args.test_count or LARGE_COUNTS[1]
    train_dirs, test_dirs = [], {}
    for i, (name, (h, w)) in enumerate(LARGE_GEOMETRIES.items()):
        print(f"writing {name} {h}×{w}: {train_count} train, {test_count} test", flush=True)
        seed_offset = args.seed + 500 * i  # geometries draw independent image sequences
        train_dirs.append(
            _dataset(
                work / "train" / name,
                seed=1000 + seed_offset,
                count=train_count,
                height=h,
                width=w,
            )
        )
        test_dirs[name] = _dataset(
            work / "test" / name, seed=2000 + seed_offset, count=test_count, height=h, width=w
        )
    device = resolve_device("auto")
    bundles: dict[float | None, tuple[Path, dict[str, Any]]] = {}
    results: dict[str, dict[str, Any]] = {}
    for label, (scale, views) in ARMS.items():
        if label not in args.arms:
            continue
        if views is not None and args.test_time_views == len(views):
            continue  # the model itself is evaluated with that many views already
        if scale not in bundles:
            tag = "fit" if scale is None else f"scale{scale:g}"
            print(f"training {tag} for up to {args.max_minutes:g} min", flush=True)
            start = time.monotonic()
            result = train_from_folders(
                data=train_dirs,
                out=work / f"model-{tag}.pt",
                encoder="effnet_lite0",
                input_size=LARGE_TILE,
                scale=scale,
                cache_dir=work / f"cache-{tag}",
                **_train_options(args),
            )
            train = {
                "seconds": time.monotonic() - start,
                "epochs": result.epochs_run,
                "stopped_by": result.stopped_by,
                "best_val_score": result.best_score,
                "checkpoint": str(result.checkpoint),
                "scale": scale,
            }
            bundles[scale] = (result.checkpoint, train)
        checkpoint, train = bundles[scale]
        bundle = load_bundle(checkpoint, device=device)
        print(f"evaluating {label} at native resolution", flush=True)
        per_geometry = {
            name: evaluate_native(bundle, discover(folder), views=views)
            for name, folder in test_dirs.items()
        }
        evaluation = {**per_geometry, "all": merge_reports(list(per_geometry.values()))}
        results[label] = {"train": train, "eval": evaluation}
    return {
        "config": {
            "train_per_geometry": train_count,
            "test_per_geometry": test_count,
            "geometries": {k: list(v) for k, v in LARGE_GEOMETRIES.items()},
            "tile": LARGE_TILE,
            "max_minutes": args.max_minutes,
            "seed": args.seed,
            "device": str(device),
            "threads": torch.get_num_threads(),
        },
        "results": results,
    }


def main() -> None:
    """Command-line entry point."""
    args = _parser().parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="heatprompt-quality-"))
    if args.typed:
        run_typed(args, work, _train_options(args))
        return
    if not args.large:
        run_small(args, work)
        return
    report = run_large(args, work)
    config = report["config"]
    print(
        f"test set: {config['test_per_geometry']} images per geometry "
        f"({', '.join(f'{h}×{w}' for h, w in LARGE_GEOMETRIES.values())}), "
        f"device {config['device']}"
    )
    print(format_large(report["results"]))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
