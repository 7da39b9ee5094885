"""GPU check: train and evaluate the default model on the accelerator, report speed and quality.

Writes a synthetic training set and a separate test set (another seed), trains the default
`effnet_lite0` heads for a short time budget through the command line's own entry point
(`train_from_folders`, device auto), then prints epochs, training throughput, the test
metrics, per-image prediction latency and peak GPU memory: a table, then one JSON line.
Then `heatprompt bench-image`'s rows for 2048² and 4096² images with one view, on the GPU
and on the CPU of the same machine (`webapp.image_benchmark`, an untrained scale-1.0 model
as in `bench_image.py`: speed does not depend on training); skipped without CUDA.
About 8 minutes on a GPU with the defaults; runs on a CPU too (much slower, and says so).
Run with `make gpu-check`.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from model.checkpoint import load_bundle
from model.dataset import discover, load_samples, split
from model.evaluate import evaluate
from model.feature_cache import FeatureCache
from model.inference import resolve_device
from model.pipeline import train_from_folders
from model.predict import Predictor
from model.synth import write_dataset
from model.train import TrainConfig
from model.training_task import DEFAULT_VAL_FRACTION
from tests.benchmarks.bench_image import bench_checkpoint
from webapp.image_benchmark import (
    ImageBenchRow,
    benchmark_images,
    synthetic_images,
    table_header,
    table_line,
)

WARMUP_IMAGES = 5
IMAGE_BENCH_SIZES = ((2048, 2048), (4096, 4096))


def device_summary(device: torch.device) -> dict[str, Any]:
    """Which hardware and software the figures come from."""
    info: dict[str, Any] = {
        "device": str(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
    else:
        info["name"] = platform.processor() or platform.machine()
    return info


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gpu_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def prediction_latency(predictor: Predictor, images: list[Any], device: torch.device) -> dict:
    """Seconds per image for uncached predictions (every test-time view encoded), after
    warm-up; `images` must be distinct so no encoding is reused."""
    for image in images[:WARMUP_IMAGES]:
        predictor.predict(image)
    times = []
    for image in images[WARMUP_IMAGES:]:
        synchronize(device)
        start = time.perf_counter()
        predictor.predict(image)
        synchronize(device)
        times.append(time.perf_counter() - start)
    ordered = sorted(times)
    return {
        "images": len(times),
        "mean_ms": 1000 * statistics.fmean(times),
        "p50_ms": 1000 * statistics.median(times),
        "p95_ms": 1000 * ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
    }


def image_bench(device: torch.device) -> list[ImageBenchRow]:
    """bench-image rows for `IMAGE_BENCH_SIZES` with one view on `device`, then the same on
    this machine's CPU, so the GPU's gain on whole large images is read from one run."""
    rows: list[ImageBenchRow] = []
    with tempfile.TemporaryDirectory(prefix="heatprompt-gpu-check-image-") as tmp:
        checkpoint = bench_checkpoint(Path(tmp))
        for where in (device, torch.device("cpu")):
            bundle = load_bundle(checkpoint, device=where)
            views = bundle.meta.test_time_views[:1]
            rows += benchmark_images(bundle, synthetic_images(IMAGE_BENCH_SIZES), views=views)
            del bundle
            if where.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def print_image_bench(rows: list[ImageBenchRow]) -> None:
    """The rows as `heatprompt bench-image` prints them; GPU rows say their speed-up."""
    cpu = {(r.width, r.height): r.total_s for r in rows if r.device.startswith("cpu")}

    def note(row: ImageBenchRow) -> str:
        base = cpu.get((row.width, row.height))
        if row.device.startswith("cpu") or base is None:
            return ""
        return f"{base / max(row.total_s, 1e-9):.1f}× the CPU"

    print(table_header(note="GPU vs CPU"))
    for row in rows:
        print(table_line(row, note=note(row)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-minutes", type=float, default=3.0, help="training budget")
    parser.add_argument("--train-count", type=int, default=400)
    parser.add_argument("--test-count", type=int, default=100)
    parser.add_argument("--latency-images", type=int, default=50)
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--workdir", type=Path, help="keep data, cache and checkpoint here")
    parser.add_argument(
        "--no-image-bench", action="store_true", help="skip the 2048²/4096² GPU-vs-CPU rows"
    )
    args = parser.parse_args()
    device = resolve_device(args.device)
    info = device_summary(device)
    print(f"device: {info['name']} ({device}); torch {info['torch']}, CUDA {info['cuda']}")
    if device.type != "cuda":
        print("no CUDA device: running on the CPU, much slower; GPU memory is not measured")

    work = args.workdir or Path(tempfile.mkdtemp(prefix="heatprompt-gpu-check-"))
    start = time.monotonic()
    train_dir = write_dataset(
        work / "train", seed=args.seed, size=args.size, count=args.train_count, progress=False
    )
    test_dir = write_dataset(
        work / "test", seed=args.seed + 1, size=args.size, count=args.test_count, progress=False
    )
    data_s = time.monotonic() - start

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.monotonic()
    result = train_from_folders(
        data=[train_dir],
        out=work / "model.pt",
        max_minutes=args.max_minutes,
        epochs=1000,
        seed=args.seed,
        device=args.device,
        input_size=args.size,
        cache_dir=work / "cache",
        progress=False,
    )
    synchronize(device)
    train_s = time.monotonic() - start
    train_peak = peak_gpu_mib(device)
    fit, _ = split(discover(train_dir), val_fraction=DEFAULT_VAL_FRACTION, seed=args.seed)
    last = result.history[-1]
    # Steps times batch size: images through the training loop, including the first
    # sight of each (encoder run) and the per-epoch validation pass in the elapsed time.
    trained_images = min(int(last["step"]) * TrainConfig.batch_size, len(fit) * result.epochs_run)

    bundle = load_bundle(result.checkpoint, device=device)
    items = load_samples(discover(test_dir), bundle.encoder.input_size)
    start = time.monotonic()
    report = evaluate(bundle, items, ablation=False)
    synchronize(device)
    eval_s = time.monotonic() - start

    count = min(len(items), args.latency_images + WARMUP_IMAGES)
    predictor = Predictor(bundle, cache=FeatureCache(None, max_memory_bytes=0))
    latency = prediction_latency(predictor, [it.image for it in items[:count]], device)

    summary = {
        **info,
        "train_images": len(fit),
        "test_images": len(items),
        "data_seconds": round(data_s, 1),
        "train_seconds": round(train_s, 1),
        "max_minutes": args.max_minutes,
        "epochs": result.epochs_run,
        "stopped_by": result.stopped_by,
        "train_images_per_s": round(trained_images / max(last["elapsed_s"], 1e-9), 1),
        "miou": report["miou"],
        "dice": report["dice"],
        "empty_accuracy": report["empty_accuracy"],
        "image_auroc": report["image_auroc"],
        "eval_seconds": round(eval_s, 1),
        "test_time_views": len(bundle.meta.test_time_views),
        "latency_ms_mean": round(latency["mean_ms"], 2),
        "latency_ms_p50": round(latency["p50_ms"], 2),
        "latency_ms_p95": round(latency["p95_ms"], 2),
        "latency_images": latency["images"],
        "peak_gpu_mib_train": None if train_peak is None else round(train_peak, 1),
        "peak_gpu_mib": None if peak_gpu_mib(device) is None else round(peak_gpu_mib(device), 1),
    }
    image_rows: list[ImageBenchRow] = []
    if device.type == "cuda" and not args.no_image_bench:
        image_rows = image_bench(device)
    summary["image_bench"] = [r.as_dict() for r in image_rows]
    print_table(summary)
    if image_rows:
        print_image_bench(image_rows)
    elif device.type != "cuda":
        print("no CUDA device: the GPU-vs-CPU image-size rows are skipped (CPU: make bench)")
    print(json.dumps(summary))


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def _mib(peak: float | None, train_peak: float | None) -> str:
    if peak is None:
        return "n/a (CPU)"
    return f"{peak:.0f} MiB (training {_fmt(train_peak)} MiB)"


def print_table(s: dict[str, Any]) -> None:
    rows = [
        ("device", f"{s['name']} ({s['device']})"),
        ("data", f"{s['train_images']} training / {s['test_images']} test images"),
        ("epochs", f"{s['epochs']} in {s['train_seconds']} s ({s['stopped_by']})"),
        ("training images/s", _fmt(s["train_images_per_s"])),
        ("mIoU", _fmt(s["miou"])),
        ("Dice", _fmt(s["dice"])),
        ("empty accuracy", _fmt(s["empty_accuracy"])),
        ("image AUROC", _fmt(s["image_auroc"])),
        (
            "latency / image",
            f"{_fmt(s['latency_ms_mean'])} ms mean, {_fmt(s['latency_ms_p95'])} ms p95 "
            f"({s['test_time_views']} views, uncached, {s['latency_images']} images)",
        ),
        (
            "peak GPU memory",
            f"{_fmt(s['peak_gpu_mib'])} MiB (training {_fmt(s['peak_gpu_mib_train'])})",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
