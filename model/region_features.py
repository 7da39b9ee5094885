"""Region descriptors for the defect-type head: what a region looks like, in numbers.

Two parts, both from things that never train with the segmentation heads, so typing
regions cannot change the masks:
- shape and contrast (scikit-image `regionprops`): size, elongation, solidity, how much
  darker or brighter than its surroundings the region is and how its colour differs;
- the frozen encoder's features pooled over the region: a square context crop around the
  region (padded by reflection at image edges) is encoded at the encoder's input size and
  its deeper feature maps are averaged inside the region and in a ring around it
  (inside, and inside minus ring, per channel).
Crops go through the feature cache keyed by their content hash, as tiles do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from skimage.measure import regionprops
from tqdm import tqdm

from model.checkpoint import ModelBundle
from model.feature_cache import FeatureCache
from model.inference import encode_images
from model.tiled_prediction import tile_key

POOLED_LEVELS = 3  # the last three feature maps (effnet_lite0: 40, 112, 320 channels)
CONTEXT = 1.6  # crop side as a multiple of the region's longer bounding-box side
MIN_CROP = 32  # pixels: a 2-pixel particle still gets some surroundings
RING = 0.15  # ring width around the region, as a share of the crop side
SHAPE_FEATURES = 14
ENCODE_BATCH = 16  # crops per encoder call
CHUNK = 64  # crops in memory at once


@dataclass(frozen=True)
class RegionCrop:
    """One region's context crop: the crop (uint8, S × S × 3) and the region and ring
    inside it (bool, S × S)."""

    image: np.ndarray
    region: np.ndarray
    ring: np.ndarray


def shape_descriptor(gray: np.ndarray, rgb: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Size, form and contrast of one region (bool map over the whole model-space image),
    measured in a window around it so the cost follows the region, not the image."""
    ys, xs = np.nonzero(region)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    pad = max(3, round(0.5 * max(y1 - y0, x1 - x0)))
    window = (slice(max(0, y0 - pad), y1 + pad), slice(max(0, x0 - pad), x1 + pad))
    local = region[window]
    props = regionprops(local.astype(np.uint8))[0]
    area = float(props.area)
    major = float(props.axis_major_length) + 1.0
    minor = float(props.axis_minor_length) + 1.0
    perimeter = float(props.perimeter) + 1.0
    around = ~local
    g, c = gray[window], rgb[window]
    inside_g = g[local]
    outside_g = g[around] if around.any() else g.ravel()
    outside_c = c[around] if around.any() else c.reshape(-1, 3)
    spread = float(outside_g.std()) + 1.0
    colour = c[local].mean(axis=0) - outside_c.mean(axis=0)
    return np.array(
        [
            np.log(area),
            np.log(major),
            np.log(minor),
            minor / major,
            float(props.eccentricity),
            float(props.solidity),
            float(props.extent),
            perimeter**2 / (4 * np.pi * area),
            (float(inside_g.mean()) - float(outside_g.mean())) / spread,
            float(inside_g.std()) / spread,
            *(colour / 255.0),
            float(props.euler_number),
        ],
        dtype=np.float32,
    )


def region_crop(image: np.ndarray, region: np.ndarray, size: int) -> RegionCrop:
    """The square context crop of `region`, resized to `size` (the encoder's input)."""
    ys, xs = np.nonzero(region)
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    side = max(MIN_CROP, round(CONTEXT * (max(np.ptp(ys), np.ptp(xs)) + 1)))
    y0, x0 = round(cy - side / 2), round(cx - side / 2)
    h, w = region.shape
    pad = max(0, -y0, -x0, y0 + side - h, x0 + side - w)
    img = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    reg = np.pad(region, pad)
    crop = img[y0 + pad : y0 + pad + side, x0 + pad : x0 + pad + side]
    crop_region = reg[y0 + pad : y0 + pad + side, x0 + pad : x0 + pad + side]
    crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_LINEAR)
    resized = cv2.resize(crop_region.astype(np.uint8), (size, size), cv2.INTER_NEAREST) > 0
    if not resized.any():  # thinner than a pixel after resizing: keep its footprint
        resized = cv2.resize(crop_region.astype(np.float32), (size, size)) > 0
    width = max(1, round(RING * size))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    ring = cv2.dilate(resized.astype(np.uint8), kernel) > 0
    return RegionCrop(np.ascontiguousarray(crop), resized, ring & ~resized)


def _pool(feature: torch.Tensor, where: np.ndarray) -> torch.Tensor:
    """Mean of a (C, h, w) feature map over a bool map given at crop size."""
    h, w = feature.shape[-2:]
    weight = F.adaptive_avg_pool2d(torch.from_numpy(where.astype(np.float32))[None], (h, w))[0]
    weight = weight.to(feature.device)
    return (feature * weight).sum(dim=(1, 2)) / weight.sum().clamp_min(1e-6)


@torch.no_grad()
def deep_descriptors(
    bundle: ModelBundle, crops: Sequence[RegionCrop], *, cache: FeatureCache | None
) -> np.ndarray:
    """(N, D) pooled encoder features of the crops, D = 2 × channels of the pooled levels."""
    rows = []
    for start in range(0, len(crops), ENCODE_BATCH):
        chunk = crops[start : start + ENCODE_BATCH]
        images = [c.image for c in chunk]
        out = encode_images(
            bundle,
            images,
            shas=[tile_key(im) for im in images],
            cache=cache,
            batch_size=ENCODE_BATCH,
        )
        levels = out.features[-POOLED_LEVELS:]
        for i, crop in enumerate(chunk):
            parts = []
            for level in levels:
                inside = _pool(level[i], crop.region)
                ring = _pool(level[i], crop.ring) if crop.ring.any() else inside
                parts += [inside, inside - ring]
            rows.append(torch.cat(parts).float().cpu().numpy())
    return np.stack(rows)


def describe_many(
    bundle: ModelBundle,
    jobs: Sequence[tuple[np.ndarray, Sequence[np.ndarray]]],
    *,
    cache: FeatureCache | None,
    progress: bool = False,
) -> np.ndarray:
    """(N, SHAPE_FEATURES + D) descriptors of every region of every (model-space uint8
    RGB image, its regions as bool maps) job, in job order; crops of several images share
    encoder batches, a bounded number of them in memory at once."""
    flat = [(k, r) for k, (_, regions) in enumerate(jobs) for r in regions]
    if not flat:
        return np.zeros((0, 0), np.float32)
    size = bundle.encoder.input_size
    grays: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    rows = []
    with tqdm(
        total=len(flat), desc="describing regions", unit="region", disable=not progress
    ) as bar:
        for start in range(0, len(flat), CHUNK):
            chunk = flat[start : start + CHUNK]
            shapes = []
            for k, region in chunk:
                if k not in grays:
                    grays.clear()  # jobs come in order: one image's planes at a time
                    image = jobs[k][0]
                    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
                    grays[k] = (gray, image.astype(np.float32))
                shapes.append(shape_descriptor(*grays[k], region))
            crops = [region_crop(jobs[k][0], region, size) for k, region in chunk]
            deep = deep_descriptors(bundle, crops, cache=cache)
            rows.append(np.concatenate([np.stack(shapes), deep], axis=1))
            bar.update(len(chunk))
    return np.concatenate(rows).astype(np.float32)


def describe_regions(
    bundle: ModelBundle,
    image: np.ndarray,
    regions: Sequence[np.ndarray],
    *,
    cache: FeatureCache | None,
) -> np.ndarray:
    """(N, SHAPE_FEATURES + D) descriptors of the regions (bool maps) of one model-space
    uint8 RGB image."""
    return describe_many(bundle, [(image, regions)], cache=cache)
