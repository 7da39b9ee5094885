"""The per-pixel alternative to the region type head: a class map beside the mask.

A small conv net reads, for every tile, the features the mask itself is made from (the
trained fusion network's output, the high-resolution path's, and the frozen encoder's
deeper levels with their texture contrast, all on the fused grid) and gives every pixel a
distribution over the defect types; a region's type is the argmax of its pixels' mean
distribution. It needs no encoder pass beyond the one the mask already made (the region
head encodes a context crop per region). It learns after the segmentation heads, from the
typed pixels only (cross-entropy, each region weighted equally whatever its area; the
background is ignored, since it only ever names pixels the mask already calls defective),
so the segmentation weights never see a type. `tests/benchmarks/quality.py --typed`
measures it against the region head on the same weights.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from model.checkpoint import ModelBundle
from model.dataset import LoadedSample
from model.feature_cache import FeatureCache
from model.fusion import Contrasted, texture_contrast
from model.high_res import split_levels
from model.inference import encode_images
from model.labelled_regions import true_regions
from model.pixel_type_net import PixelTypeNet
from model.region_types import UNSPECIFIED, label_regions
from model.tiled_prediction import crop_key
from model.tiling import Stitcher, TilePlan
from model.type_head import MIN_REGIONS, trainable_types
from model.type_metrics import TypedRegions
from model.typed_mask import TypedMask, largest_regions

DEEP_LEVELS = 3  # the encoder's deepest context levels the net also reads
MAX_TILES = 1200  # typed training tiles (a seeded sample)
EPOCHS = 15
BATCH = 32
LR = 2e-3
LOSS_STRIDE = 4
# A training step on one tile, in tile passes (encoder + heads) of a validation epoch
# (a 15-minute CPU run with 0.1 overran its budget by 0.6 minutes).
EPOCH_COST = 0.15


@dataclass
class PixelTypeHead:
    """The trained net and the type names of its output channels."""

    classes: tuple[str, ...]
    net: PixelTypeNet

    def as_dict(self) -> dict[str, Any]:
        """The checkpoint's `type_head` entry (the weights go in its state)."""
        return {
            "kind": "pixel",
            "classes": list(self.classes),
            "in_channels": self.net.in_channels,
            "hidden": self.net.hidden,
        }

    @classmethod
    def of(cls, bundle: ModelBundle) -> PixelTypeHead:
        """The pixel head a loaded bundle carries."""
        if bundle.meta.type_head_kind != "pixel" or bundle.type_net is None:
            raise ValueError("this model has no pixel type head")
        return cls(tuple((bundle.meta.type_head or {})["classes"]), bundle.type_net)


@torch.no_grad()
def head_inputs(
    bundle: ModelBundle,
    crops: Sequence[np.ndarray],
    *,
    keys: Sequence[str],
    cache: FeatureCache | None,
) -> torch.Tensor:
    """(B, D, h, w) float32 inputs of the net for tile-sized uint8 crops, on the fused
    grid: trained fusion features, high-resolution features (when the model has them)
    and the deepest context levels' texture contrast. Frozen: computed once per tile."""
    heads = bundle.heads
    heads.eval()
    frozen = encode_images(bundle, list(crops), shas=list(keys), cache=cache)
    levels = Contrasted(frozen.features)
    fused = heads.fusion(levels)
    size = fused.shape[-2:]
    parts = [fused]
    if heads.high_res is not None:
        parts.append(F.adaptive_avg_pool2d(heads.high_res(levels), size))
    context, _ = split_levels(bundle.encoder.feature_strides)
    for i in context[-DEEP_LEVELS:]:
        level = texture_contrast(frozen.features[i].float())
        parts.append(F.interpolate(level, size=size, mode="bilinear", align_corners=False))
    return torch.cat([p.float() for p in parts], dim=1)


def _tile_targets(
    items: Sequence[LoadedSample],
    truths: Sequence[TypedRegions],
    classes: Sequence[str],
    tile: int,
    seed: int,
) -> list[tuple[np.ndarray, str, np.ndarray]]:
    """(crop, cache key, target) of the tiles holding typed pixels, at most `MAX_TILES`
    (a seeded sample): target is int16 (tile, tile), the class index of each typed pixel,
    -1 elsewhere (`truths`: each item's `true_regions`). Tiles and keys are those
    prediction uses (an image of exactly one tile is keyed by its hash), so the features
    come from the cache training filled."""
    index = {n: k for k, n in enumerate(classes)}
    out = []
    for item, truth in zip(items, truths, strict=True):
        if not any(t in index for t in truth.types):
            continue
        lut = np.zeros(len(truth.types) + 1, np.int16)  # class index + 1; 0 ignored
        lut[1:] = [index.get(t, -1) + 1 for t in truth.types]
        plan = TilePlan(item.image.shape[:2], tile, 0)
        whole = item.image.shape[:2] == (tile, tile)
        for crop, code in zip(plan.crops(item.image), plan.crops(lut[truth.labels]), strict=True):
            if code.any():
                out.append((crop, crop_key(crop, item.sha256, whole), code - 1))
    rng = random.Random(seed)
    return out if len(out) <= MAX_TILES else rng.sample(out, MAX_TILES)


def pixel_typing_work(items: Sequence[LoadedSample], tile: int, seed: int) -> int:
    """About how many tile passes `fit_pixel_head` costs on `items`: one per typed tile
    for its inputs, and its training epochs over them (`EPOCH_COST` passes per tile)."""
    truths = [true_regions(it) for it in items]
    names = sorted({t for truth in truths for t in truth.types if t != UNSPECIFIED})
    tiles = len(_tile_targets(items, truths, names, tile, seed))
    return round(tiles * (1 + EPOCHS * EPOCH_COST))


def _region_weights(target: np.ndarray) -> np.ndarray:
    """Per-pixel loss weights giving each typed region of a tile the same total weight."""
    labels, count = label_regions(target >= 0)
    if count == 0:
        return np.zeros(target.shape, np.float32)
    areas = np.bincount(labels.ravel(), minlength=count + 1).astype(np.float32)
    inv = np.zeros_like(areas)
    inv[1:] = 1.0 / areas[1:]
    return inv[labels]


def pooled_targets(
    targets: torch.Tensor, weights: torch.Tensor, classes: int, stride: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, S, S) class targets (-1: ignored) and pixel weights → the same on a grid
    `stride` times coarser: each cell takes the class with the most weight inside it and
    the sum of its weights, so a 1-pixel hairline keeps its cells and each region its
    total weight."""
    one_hot = F.one_hot(targets.clamp_min(0), classes).permute(0, 3, 1, 2).float()
    mass = one_hot * (weights * (targets >= 0)).unsqueeze(1)
    pooled = F.avg_pool2d(mass, stride) * stride**2  # (B, C, S/stride, S/stride) sums
    total = pooled.sum(dim=1)
    small = torch.where(total > 0, pooled.argmax(dim=1), torch.full_like(total, -1).long())
    return small, total


def fit_pixel_head(
    bundle: ModelBundle,
    items: Sequence[LoadedSample],
    *,
    cache: FeatureCache | None,
    seed: int,
    min_regions: int = MIN_REGIONS,
    epochs: int = EPOCHS,
    progress: bool = False,
) -> PixelTypeHead | None:
    """Train the per-pixel head on the items' typed regions (types with at least
    `min_regions` regions are classes); None when no type has enough."""
    truths = [true_regions(it) for it in items]  # labelling is the costly part: once
    classes = trainable_types([t for truth in truths for t in truth.types], min_regions)
    if not classes:
        return None
    tile = bundle.encoder.input_size
    tiles = _tile_targets(items, truths, classes, tile, seed)
    inputs, targets, weights = [], [], []
    for start in range(0, len(tiles), BATCH):
        chunk = tiles[start : start + BATCH]
        crops = [c for c, _, _ in chunk]
        x = head_inputs(bundle, crops, keys=[k for _, k, _ in chunk], cache=cache)
        inputs.append(x.half().cpu())  # frozen: half the memory, trained in float32
        t = np.stack([t for _, _, t in chunk])
        w = np.stack([_region_weights(t) for _, _, t in chunk])
        # The loss is taken on a grid LOSS_STRIDE times coarser than the pixels (16× fewer
        # terms; the class map is smooth there anyway: it is read as a mean over regions).
        y_small, w_small = pooled_targets(
            torch.from_numpy(t).long(), torch.from_numpy(w), len(classes), LOSS_STRIDE
        )
        targets.append(y_small)
        weights.append(w_small)
    x_all, y_all, w_all = torch.cat(inputs), torch.cat(targets), torch.cat(weights)
    device = bundle.device
    torch.manual_seed(seed)
    net = PixelTypeNet(x_all.shape[1], len(classes)).to(device)
    optim = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=1e-4)
    steps = epochs * max(1, -(-len(x_all) // BATCH))
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=LR, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for _ in tqdm(range(epochs), desc="pixel type head", unit="epoch", disable=not progress):
        order = torch.randperm(len(x_all), generator=gen)
        for start in range(0, len(order), BATCH):
            idx = order[start : start + BATCH]
            logits = _upsampled(net(x_all[idx].to(device).float()), tile // LOSS_STRIDE)
            y, w = y_all[idx].to(device), w_all[idx].to(device)
            loss = F.cross_entropy(logits, y.clamp_min(0), reduction="none")
            loss = (loss * w).sum() / w.sum().clamp_min(1e-6)
            optim.zero_grad()
            loss.backward()
            optim.step()
            sched.step()
    net.eval()
    return PixelTypeHead(tuple(classes), net)


def _upsampled(logits: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)


@torch.no_grad()
def type_probabilities(
    bundle: ModelBundle,
    head: PixelTypeHead,
    image: np.ndarray,
    *,
    sha256: str | None,
    cache: FeatureCache | None,
) -> np.ndarray:
    """(C, H, W) per-pixel type probabilities of a model-space uint8 image, tiled and
    stitched as the mask is (same tiles, same cache keys)."""
    tile = bundle.encoder.input_size
    plan = TilePlan(image.shape[:2], tile, bundle.geometry.overlap)
    crops = list(plan.crops(image))
    whole = image.shape[:2] == (tile, tile)
    keys = [crop_key(c, sha256 or None, whole) for c in crops]
    stitcher = Stitcher(plan, len(head.classes))
    for start in range(0, len(crops), BATCH):
        x = head_inputs(
            bundle, crops[start : start + BATCH], keys=keys[start : start + BATCH], cache=cache
        )
        probs = torch.softmax(_upsampled(head.net(x), tile), dim=1).cpu().numpy()
        for t, p in zip(plan.tiles[start : start + BATCH], probs, strict=True):
            stitcher.add(t, list(p))
    return stitcher.result()


def classify_regions_by_pixels(
    bundle: ModelBundle,
    head: PixelTypeHead,
    image: np.ndarray,
    mask: np.ndarray,
    *,
    sha256: str | None,
    cache: FeatureCache | None,
) -> TypedMask:
    """Type every region of a model-space mask by its pixels' mean type distribution
    (the `MAX_TYPED_REGIONS` largest, as the region head does: the rest stay unspecified)."""
    labels, count = label_regions(mask)
    types, confidences = [UNSPECIFIED] * count, [0.0] * count
    if count == 0:
        return TypedMask(mask, labels, types, confidences)
    probs = type_probabilities(bundle, head, image, sha256=sha256, cache=cache)
    flat = labels.ravel()
    areas = np.bincount(flat, minlength=count + 1)[1:]
    sums = np.stack([np.bincount(flat, weights=p.ravel(), minlength=count + 1) for p in probs])
    means = sums[:, 1:] / np.maximum(areas, 1)
    for i in largest_regions(labels, count):
        best = int(means[:, i].argmax())
        types[i], confidences[i] = head.classes[best], float(means[best, i])
    return TypedMask(mask, labels, types, confidences)
