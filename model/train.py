"""Training the heads from labelled samples, on cached frozen features.

AdamW with warm-up and cosine decay (driven by steps or, with a time budget, by elapsed
time; the budget also pays for the final calibration over the test-time views),
deterministic seeds, early stopping on the validation review score, a tqdm bar, mixed
precision (float16 on CUDA, bfloat16 on CPUs that have it). Two regularisers serve
the product: prompt dropout (the heatmap prompt is replaced by SAM's "no mask" embedding
for a share of samples, so the `no_prompt` ablation is meaningful for the same weights)
and simulated clicks (so click-to-refine has trained point embeddings when the decoder is
trainable).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from model.augment import TRANSFORMS, apply_transform, fixed_views
from model.checkpoint import ModelBundle, save_checkpoint
from model.dataset import LoadedSample
from model.decision import rule_grid
from model.distributed import (
    DistContext,
    any_rank,
    barrier,
    from_main,
    shard,
    step_module,
)
from model.evaluate import best_rule, predict_probs
from model.feature_cache import FeatureCache
from model.geometry import Geometry
from model.inference import encode_images
from model.labels import skeleton_heatmap
from model.losses import LossWeights, heatprompt_loss
from model.metrics import review_score, segmentation_report
from model.precision import reduced_dtype
from model.tiling import TilePlan
from model.type_training import TYPE_HEAD_KINDS, fit_region_types, typing_work

THRESHOLD_GRID = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
DEFAULT_LR = 3e-3  # peak AdamW rate: 1e-3 → 2e-3 → 3e-3 each learned faster in a budget
AREA_GRID_256 = (0, 10, 20, 30, 50, 80)  # min defect areas tried, in pixels at 256 × 256


def area_grid(input_size: int) -> list[int]:
    """`AREA_GRID_256` scaled to another input size (areas scale with the square)."""
    return [round(a * (input_size / 256) ** 2) for a in AREA_GRID_256]


@dataclass
class TrainConfig:
    """Knobs of one training run (stored in the checkpoint)."""

    epochs: int = 40
    max_minutes: float | None = None
    # The learning rate follows the time budget as well as the steps, so a run bound by its
    # minutes decays in time. False: the steps alone (a run whose work is its epochs, the
    # minutes only a bound); a run slowed by other work on its cores then learns exactly
    # as one that was not, where a schedule in seconds would have warmed up and decayed in
    # fewer steps.
    lr_by_time: bool = True
    batch_size: int = 4
    lr: float = DEFAULT_LR
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    patience: int = 15
    seed: int = 0
    augment: bool = True
    views_per_image: int = 2  # identity + fixed random transforms: bounds encoder runs
    # Crops per training image larger than a tile (drawn once per run, defect-biased).
    tiles_per_image: int = 6
    # Predictions average these flips/rotations; the mask rule is calibrated on them.
    test_time_views: tuple[str, ...] = TRANSFORMS
    # Validation images (a seeded sample) the final calibration over those views uses,
    # at most as many as make `calibration_tiles` tile passes over all the views.
    calibration_images: int = 160
    calibration_tiles: int = 1000
    # Whole validation images (a seeded sample) ranking the epochs: at most this many tiles.
    validation_tiles: int = 512
    prompt_dropout: float = 0.2
    click_prob: float = 0.2
    mixed_precision: bool = True  # float16 on CUDA, bfloat16 on CPUs that support it
    loss: LossWeights = field(default_factory=LossWeights)
    type_head: str = "pixel"  # the defect-type head's kind (`model.type_training`)

    def __post_init__(self) -> None:
        if self.type_head not in TYPE_HEAD_KINDS:
            raise ValueError(
                f"type head must be one of {', '.join(TYPE_HEAD_KINDS)}, got {self.type_head!r}"
            )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """What a run produced."""

    checkpoint: Path
    best_score: float
    epochs_run: int
    stopped_by: str
    history: list[dict[str, float]]
    val_report: dict[str, Any] | None


def loop_budget_s(budget_s: float, first_val_s: float, views: int, share: float = 1.0) -> float:
    """Seconds of `budget_s` the training loop may use when the final calibration makes
    `views` passes over a `share` of the validation set, the first cached and each other
    costing about `first_val_s` (the first validation pass, which encoded the whole set)
    times `share`; at least half."""
    return max(0.5 * budget_s, budget_s - first_val_s * share * (views - 1))


def calibration_sample(items: Sequence[LoadedSample], size: int, seed: int) -> list[LoadedSample]:
    """A seeded sample of `size` validation items, in their order (all when fewer), with
    defect-free and defective items in the proportion of the whole set."""
    if size >= len(items):
        return list(items)
    rng = random.Random(seed)
    good = [i for i, it in enumerate(items) if not it.defective]
    bad = [i for i, it in enumerate(items) if it.defective]
    n_good = round(size * len(good) / len(items))
    chosen = rng.sample(good, n_good) + rng.sample(bad, size - n_good)
    return [items[i] for i in sorted(chosen)]


def tiles_in(items: Sequence[LoadedSample], geometry: Geometry) -> int:
    """Tiles prediction cuts `items` into (one per image of a fit model)."""
    return sum(len(TilePlan(it.image.shape[:2], geometry.tile, geometry.overlap)) for it in items)


def capped_sample(
    items: Sequence[LoadedSample], geometry: Geometry, *, images: int, tiles: int, seed: int
) -> list[LoadedSample]:
    """`calibration_sample` of at most `images` items and, at their mean tile count, at
    most `tiles` tiles: validating stitched large images costs per tile, not per image."""
    if not items:
        return []
    mean_tiles = tiles_in(items, geometry) / len(items)
    return calibration_sample(items, max(1, min(images, int(tiles / mean_tiles))), seed)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch for a reproducible run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _click_points(
    masks: torch.Tensor, chosen: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """One simulated click per chosen sample: positive inside the defect, else negative."""
    if not bool(chosen.any()):
        return None
    b = masks.shape[0]
    coords = torch.zeros((b, 1, 2))
    labels = torch.full((b, 1), -1.0)
    for i in torch.nonzero(chosen).flatten().tolist():
        m = masks[i, 0] > 0.5
        positive = bool(m.any())
        ys, xs = torch.nonzero(m if positive else ~m, as_tuple=True)
        k = int(torch.randint(len(ys), (1,), generator=gen))
        coords[i, 0] = torch.tensor([xs[k] + 0.5, ys[k] + 0.5])
        labels[i, 0] = 1.0 if positive else 0.0
    return coords, labels


class _Labels:
    """Mask and heatmap label tensors per (item, transform), built once."""

    def __init__(self, items: Sequence[LoadedSample], sigma: float) -> None:
        self.items = items
        self.sigma = sigma
        self._heat = [skeleton_heatmap(it.mask, sigma=sigma) for it in items]
        self._cache: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, index: int, transform: str) -> tuple[torch.Tensor, torch.Tensor]:
        key = (index, transform)
        if key not in self._cache:
            mask = apply_transform(self.items[index].mask, transform).astype(np.float32)
            heat = apply_transform(self._heat[index], transform)
            self._cache[key] = (torch.from_numpy(mask)[None], torch.from_numpy(heat.copy())[None])
        return self._cache[key]


def train(
    bundle: ModelBundle,
    train_items: Sequence[LoadedSample],
    val_items: Sequence[LoadedSample],
    config: TrainConfig,
    *,
    out: Path | str,
    cache: FeatureCache | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    type_items: Sequence[LoadedSample] = (),
) -> TrainResult:
    """Train `bundle.heads` in place; the best checkpoint is written atomically to `out`.

    `type_items` (whole training images, model space) teach the defect-type head after
    the heads are trained (`model.type_training`); none or untyped: an untyped model.

    Only the steps use mixed precision (`config.mixed_precision`). The encoder passes
    and validation of a run are float32, as every model before bfloat16 prediction was
    trained: the one 15-minute quality run with bfloat16 encoder passes came out lower
    (mIoU 0.594 against 0.643), and one run cannot tell noise from cause. Afterwards the
    bundle predicts in its own precision again.
    """
    served = bundle.mixed_precision
    bundle.mixed_precision = False
    try:
        return _train(
            bundle,
            train_items,
            val_items,
            config,
            out=Path(out),
            cache=cache,
            progress=progress,
            on_epoch=on_epoch,
            type_items=type_items,
        )
    finally:
        bundle.mixed_precision = served


def _train(
    bundle: ModelBundle,
    train_items: Sequence[LoadedSample],
    val_items: Sequence[LoadedSample],
    config: TrainConfig,
    *,
    out: Path,
    cache: FeatureCache | None,
    progress: bool,
    on_epoch: Callable[[dict[str, float]], None] | None,
    type_items: Sequence[LoadedSample],
) -> TrainResult:
    if not train_items:
        raise ValueError("no training images")
    test_views = tuple(config.test_time_views)
    if not test_views or set(test_views) - set(TRANSFORMS):
        raise ValueError(f"test-time views must be some of {TRANSFORMS}, got {test_views}")
    seed_everything(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    rng = random.Random(config.seed)
    cache = cache if cache is not None else FeatureCache(None)
    device = bundle.device
    heads = bundle.heads
    params = [p for p in heads.parameters() if p.requires_grad]
    # The fused kernel steps the ~4.5 M decoder weights about 4x faster than the loop.
    optimizer = torch.optim.AdamW(
        params,
        lr=config.lr,
        weight_decay=config.weight_decay,
        fused=device.type in ("cpu", "cuda"),
    )
    amp_dtype = reduced_dtype(device, config.mixed_precision)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    labels = _Labels(train_items, bundle.meta.label_sigma)
    geometry = bundle.geometry
    epoch_val = capped_sample(
        val_items, geometry, images=len(val_items), tiles=config.validation_tiles, seed=config.seed
    )
    calib = capped_sample(
        val_items,
        geometry,
        images=config.calibration_images,
        tiles=config.calibration_tiles // len(test_views),
        seed=config.seed,
    )
    transforms = TRANSFORMS if config.augment else ("identity",)
    views = fixed_views(len(train_items), transforms, config.views_per_image, rng)
    steps_per_epoch = math.ceil(len(train_items) / config.batch_size)
    total_steps = max(1, steps_per_epoch * config.epochs)
    budget = config.max_minutes * 60 if config.max_minutes else None
    # The loop's share of the budget: the final calibration over the test-time views is
    # paid from the same budget once the first validation pass has shown its cost.
    loop_budget = budget
    start = time.monotonic()
    # -inf: with no validation images the score is minus the loss, which may be below -1.
    best, best_report, stale, step, stopped_by = -float("inf"), None, 0, 0, "epochs"
    first_val_s = 0.0
    history: list[dict[str, float]] = []
    bundle.meta.train_config = config.as_dict()
    ctx = DistContext.current()
    step_fn = step_module(heads, ctx)
    if ctx.active:
        total_steps = max(
            1, math.ceil(len(train_items) / ctx.world_size / config.batch_size) * config.epochs
        )
    # With a time budget the bar counts seconds of the budget, otherwise steps.
    bar = tqdm(
        total=round(budget) if budget else total_steps,
        desc="training",
        unit="s" if budget else "step",
        bar_format=(
            "{l_bar}{bar}| {n_fmt}/{total_fmt} s [{elapsed}<{remaining}{postfix}]"
            if budget
            else None
        ),
        disable=not progress or not ctx.is_main,
    )

    def lr_at(step: int) -> float:
        done = step / total_steps
        if loop_budget and config.lr_by_time:
            done = max(done, (time.monotonic() - start) / loop_budget)
        if done < config.warmup_fraction:
            return config.lr * max(done / config.warmup_fraction, 0.02)
        frac = (done - config.warmup_fraction) / max(1e-9, 1 - config.warmup_fraction)
        return config.lr * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))

    epoch = 0
    for epoch in range(1, config.epochs + 1):
        heads.train()
        order = [(i, rng.choice(views[i])) for i in range(len(train_items))]
        rng.shuffle(order)
        order = shard(order, ctx)  # every rank shuffles alike, then takes its own share
        losses: list[float] = []
        for b0 in range(0, len(order), config.batch_size):
            batch = order[b0 : b0 + config.batch_size]
            images = [apply_transform(train_items[i].image, t) for i, t in batch]
            frozen = encode_images(
                bundle,
                images,
                shas=[train_items[i].sha256 for i, _ in batch],
                transforms=[t for _, t in batch],
                cache=cache,
                batch_size=config.batch_size,
            )
            masks = torch.stack([labels.get(i, t)[0] for i, t in batch])
            heats = torch.stack([labels.get(i, t)[1] for i, t in batch])
            keep = torch.rand(len(batch), generator=gen) >= config.prompt_dropout
            clicks = torch.rand(len(batch), generator=gen) < config.click_prob
            points = _click_points(masks, clicks, gen)
            if points is not None:
                points = (points[0].to(device), points[1].to(device))
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                heat_logits, mask_logits, decoder_logits = step_fn(
                    frozen, use_prompt=keep.to(device), points=points
                )
            terms = heatprompt_loss(
                heat_logits,
                mask_logits,
                heats.to(device),
                masks.to(device),
                config.loss,
                decoder_logits=decoder_logits,
            )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(terms["total"]).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.append(float(terms["total"].detach()))
            step += 1
            bar.update(min(round(time.monotonic() - start), bar.total) - bar.n if budget else 1)
            bar.set_postfix(epoch=epoch, loss=f"{losses[-1]:.4f}")
            if any_rank(bool(loop_budget) and time.monotonic() - start > loop_budget, ctx):
                stopped_by = "time"
                break
        record: dict[str, float] = {
            "epoch": epoch,
            "step": step,
            "loss": float(np.mean(losses)),
            "elapsed_s": time.monotonic() - start,
        }
        report = None
        if epoch_val and ctx.is_main:
            val_start = time.monotonic()  # one upright pass: cheap, enough to rank epochs
            probs = predict_probs(
                bundle, epoch_val, cache=cache, batch_size=config.batch_size, views=["identity"]
            )
            if epoch == 1:
                first_val_s = time.monotonic() - val_start
            report = segmentation_report(
                probs,
                [it.mask for it in epoch_val],
                [it.defect_type for it in epoch_val],
                threshold=bundle.meta.mask_threshold,
                with_auroc=False,  # the score needs none; the final report has them
            )
            score = review_score(report)
            record.update(val_score=score, val_miou=report["miou"] or 0.0)
        else:
            score = -float(np.mean(losses))
        score = from_main(score, ctx)  # every rank follows rank 0's early-stopping decision
        if epoch == 1 and budget and epoch_val:
            first_val_s = from_main(first_val_s, ctx)
            share = tiles_in(calib, geometry) / max(1, tiles_in(epoch_val, geometry))
            loop_budget = loop_budget_s(budget, first_val_s, len(test_views), share)
            # Teaching the type head costs tile passes too: paid from the budget as well.
            per_tile = first_val_s / max(1, tiles_in(epoch_val, geometry))
            work = typing_work(type_items, config.seed, kind=config.type_head, tile=geometry.tile)
            typing_s = per_tile * work
            loop_budget = max(0.5 * budget, loop_budget - typing_s)
        history.append(record)
        if on_epoch:
            on_epoch(record)
        if score > best:
            best, best_report, stale = score, report, 0
            bundle.meta.metrics = {"val": report, "history": history}
            if ctx.is_main:
                save_checkpoint(out, bundle)
        else:
            stale += 1
        if stopped_by == "time":
            break
        if stale >= config.patience:
            stopped_by = "early_stopping"
            break
    bar.close()
    barrier(ctx)
    # Reload the best weights, calibrate the mask rule on a validation sample over the
    # test-time views, save again (the final validation report is that sample's).
    from model.checkpoint import read_checkpoint, split_state

    _, state = read_checkpoint(out)
    heads.load_trainable_state_dict(split_state(state)[0])  # a typed start keeps its type net
    bundle.meta.test_time_views = list(test_views)
    if calib and ctx.is_main:
        probs = predict_probs(
            bundle, calib, cache=cache, batch_size=config.batch_size, progress=progress
        )
        grid = rule_grid(THRESHOLD_GRID, area_grid(bundle.encoder.input_size))
        rule = best_rule(probs, calib, grid)
        bundle.meta.mask_threshold = float(rule.threshold)
        bundle.meta.min_defect_area = int(rule.min_area)
        best_report = segmentation_report(
            probs,
            [it.mask for it in calib],
            [it.defect_type for it in calib],
            threshold=rule.threshold,
            min_area=rule.min_area,
        )
    if ctx.is_main:
        probs_for_types = probs if calib else []
        types = fit_region_types(
            bundle,
            type_items,
            calib,
            probs_for_types,
            cache=cache,
            seed=config.seed,
            kind=config.type_head,
            progress=progress,
        )
        if types is not None and best_report is not None:
            best_report["types"] = types
    bundle.meta.metrics = {"val": best_report, "history": history, "stopped_by": stopped_by}
    if ctx.is_main:
        save_checkpoint(out, bundle)
    barrier(ctx)
    heads.eval()
    return TrainResult(out, best, epoch, stopped_by, history, best_report)
