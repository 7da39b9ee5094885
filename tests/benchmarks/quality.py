"""Quality check on data the project was never tuned on.

Writes a training set and a separate test set with the independent generator in
`unseen_synth.py` (other textures, other defect shapes than `model.synth`), trains
`effnet_lite0` on CPU within a time budget, and prints the evaluation of the test set,
with the heatmap prompt and without it (the ablation). Run with `make quality`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from model.checkpoint import load_bundle
from model.dataset import discover, load_samples
from model.evaluate import evaluate
from model.heatprompt_sam import HeadsConfig
from model.losses import LossWeights
from model.pipeline import train_from_folders
from model.train import DEFAULT_LR
from tests.benchmarks.unseen_synth import write_unseen_dataset
from webapp.cli import format_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-minutes", type=float, default=15.0)
    parser.add_argument("--train-count", type=int, default=2000)
    parser.add_argument("--test-count", type=int, default=150)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="keep data and checkpoint here")
    parser.add_argument("--json", type=Path, help="also write the report to this file")
    parser.add_argument("--patience", type=int, default=15, help="early-stopping patience")
    parser.add_argument("--lr", type=float, default=DEFAULT_LR, help="peak learning rate")
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
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="heatprompt-quality-"))
    train_dir = write_unseen_dataset(
        work / "train", seed=1000 + args.seed, count=args.train_count, size=args.size
    )
    test_dir = write_unseen_dataset(
        work / "test", seed=2000 + args.seed, count=args.test_count, size=args.size
    )
    start = time.monotonic()
    result = train_from_folders(
        data=[train_dir],
        out=work / "model.pt",
        max_minutes=args.max_minutes,
        epochs=1000,
        seed=args.seed,
        device="auto",
        input_size=args.size,
        cache_dir=work / "cache",
        lr=args.lr,
        heads=HeadsConfig(high_res=not args.no_high_res, fusion_scale=args.fusion_scale),
        loss=LossWeights(decoder=args.decoder_weight),
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


if __name__ == "__main__":
    main()
