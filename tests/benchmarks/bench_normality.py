"""Normality model (PatchCore) quality and speed on the independent synthetic surfaces.

Fits on known-good images and scores a test set of which about a third is defective, both
drawn from `unseen_synth` (textures and defects the project never trained on): image
AUROC, pixel AUROC, fit time (for `--fit-count` and `--large-count` good images) and score
time per image on this machine's CPU. Prints one line per figure, then one JSON line.

    .venv/bin/python -m tests.benchmarks.bench_normality [--size 256] [--no-contrast]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from model.encoders import build_encoder
from model.feature_cache import FeatureCache
from model.hashing import sha256_bytes
from model.normality import AnomalyScorer, fit_normality
from tests.benchmarks.unseen_synth import (
    DEFECT_TYPES,
    MIN_AREA,
    TEXTURES,
    Geometry,
    _defect,
    _finish,
)


def synth_image(
    rng: np.random.Generator, size: int, kind: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """One unseen-style surface (uint8 RGB) and its defect mask (bool; empty when good)."""
    geo = Geometry(h=size, w=size)
    texture = TEXTURES[int(rng.integers(len(TEXTURES)))]
    img = _finish(texture(rng, geo), rng)
    mask = np.zeros((size, size), np.uint8)
    if kind is not None:
        defective, mask = _defect(kind, img, rng, geo)
        while mask.sum() < max(1, min(MIN_AREA, size // 8)):
            defective, mask = _defect(kind, img, rng, geo)
        img = defective
    return (img * 255).round().astype(np.uint8), mask > 0


def synth_set(
    seed: int, size: int, good: int, defective: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    kinds: list[str | None] = [None] * good + [DEFECT_TYPES[i % 5] for i in range(defective)]
    return [synth_image(rng, size, kind) for kind in kinds]


def with_shas(images: list[np.ndarray]) -> list[tuple[str, np.ndarray]]:
    return [(sha256_bytes(im.tobytes()), im) for im in images]


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Run the benchmark, print its figures and return them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="effnet_lite0", help="built-in backbone")
    parser.add_argument("--size", type=int, default=256, help="the encoder's input size")
    parser.add_argument("--image-size", type=int, default=256, help="the images' own size")
    parser.add_argument("--fit-count", type=int, default=20)
    parser.add_argument("--test-count", type=int, default=100)
    parser.add_argument("--large-count", type=int, default=200, help="0 skips the large fit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-contrast", action="store_true")
    parser.add_argument("--projection-dim", type=int, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)

    encoder = build_encoder(args.encoder, input_size=args.size)
    defective = args.test_count // 3
    fit_set = [im for im, _ in synth_set(args.seed + 1000, args.image_size, args.fit_count, 0)]
    test_set = synth_set(args.seed + 2000, args.image_size, args.test_count - defective, defective)
    options = {"contrast": not args.no_contrast, "projection_dim": args.projection_dim}

    start = time.perf_counter()
    model = fit_normality(encoder, with_shas(fit_set), cache=None, seed=args.seed, **options)
    fit_s = time.perf_counter() - start
    scorer = AnomalyScorer(model, encoder, cache=FeatureCache(None))
    scorer.score(test_set[0][0])  # warm-up
    start = time.perf_counter()
    results = [scorer.score(im) for im, _ in test_set]
    score_s = (time.perf_counter() - start) / len(test_set)

    labels = np.array([m.any() for _, m in test_set])
    scores = np.array([r.score for r in results])
    image_auroc = float(roc_auc_score(labels, scores))
    pixel_truth = np.concatenate([m.ravel() for _, m in test_set])
    pixel_score = np.concatenate([r.heatmap.ravel() for r in results])
    pixel_auroc = float(roc_auc_score(pixel_truth, pixel_score))
    good_above = float(np.mean(scores[~labels] > 1.0))
    bad_above = float(np.mean(scores[labels] > 1.0))

    figures: dict[str, object] = {
        "size": args.size,
        "image_size": args.image_size,
        "contrast": not args.no_contrast,
        "projection_dim": args.projection_dim,
        "fit_images": args.fit_count,
        "test_images": len(test_set),
        "test_defective": int(labels.sum()),
        "image_auroc": round(image_auroc, 4),
        "pixel_auroc": round(pixel_auroc, 4),
        "good_score_above_1": round(good_above, 3),
        "defective_score_above_1": round(bad_above, 3),
        "memory_bank": int(model.metrics["memory_bank"]),
        "fit_s": round(fit_s, 2),
        "score_s_per_image": round(score_s, 4),
    }
    if args.large_count:
        large = [im for im, _ in synth_set(args.seed + 3000, args.image_size, args.large_count, 0)]
        start = time.perf_counter()
        big = fit_normality(encoder, with_shas(large), seed=args.seed, **options)
        figures["fit_large_images"] = args.large_count
        figures["fit_large_s"] = round(time.perf_counter() - start, 2)
        figures["fit_large_memory_bank"] = int(big.metrics["memory_bank"])
    for name, value in figures.items():
        print(f"{name}: {value}")
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
