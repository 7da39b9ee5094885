"""Zero-label normality model: how far each patch of an image is from known-good patches.

PatchCore (Roth et al., CVPR 2022) needs no labels and no training run, only known-good
images: their locally aware patch features (`patch_features.py`) are thinned to a greedy
k-center coreset (`coreset.py`), and an image's anomaly map is each patch's distance to its
nearest coreset patch (faiss), upsampled to the input size and blurred (sigma 4, as in
PatchCore). It is what a deployment serves before its first supervised model.

Each map is then measured against the image's own baseline: its lower-quartile value is
subtracted (`baseline_quantile`). A good surface whose texture differs a little from every
known-good image reads uniformly far from the memory bank; a defect stands out from the rest
of its own image. On the unseen surfaces (`bench_normality`, 20 good images, three seeds)
this raised image AUROC from 0.895 / 0.909 / 0.951 to 0.941 / 0.952 / 0.955 and pixel AUROC
0.940 -> 0.950 on the first; the median as baseline gave 0.934 / 0.949 / 0.953, the mean
0.938 / 0.950 / 0.955. Models saved without the key keep the plain map.

Calibration: the good images are scored leave-one-out (against the coreset without their
own patches, so they are not judged by themselves). Their mean map, smoothed, is the
`position_scale` every map is divided by (borders read high on every image). Then, on the
baseline-subtracted maps, `pixel_threshold` is the 99th percentile of their pixel scores and
`image_threshold` the highest of their image scores (the max of the map). The served
heatmap is `clip(map / (2 * pixel_threshold), 0, 1)`: in [0, 1] like the supervised
heatmap, 0.5 where a pixel is as unusual as the rarest 1 % of good pixels. The served
score is `max(map) / image_threshold`: above 1.0 an image is stranger than any good image
was.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import faiss
import numpy as np
import torch

from model.coreset import k_center_greedy, random_projection
from model.durable import write_atomically
from model.encoders.base import FrozenEncoder
from model.errors import CheckpointError
from model.feature_cache import FeatureCache
from model.hashing import sha256_bytes
from model.images import resize_to
from model.patch_features import encode_cached, patch_embedding, pick_levels

FORMAT = "heatprompt-normality"
FORMAT_VERSION = 1  # one scale; 2 (several scales) is `normality_ensemble`'s
KNOWN_VERSIONS = (1, 2)
# Divide maps by the good images' typical map at each position (smoothed): edges and
# corners read higher on every image (the encoder pads there). On the unseen surfaces this
# lifts pixel AUROC 0.919 -> 0.940 and the defective images scored above 1.0 from 21 % to
# 61 % (image AUROC 0.898 -> 0.895, within noise).
POSITION_NORMALISED = True
POSITION_SIGMA = 8.0
BLUR_SIGMA = 4.0
PIXEL_QUANTILE = 0.99
BASELINE_QUANTILE = 0.25  # of an image's own map, subtracted from it
CALIBRATION_IMAGES = 32  # leave-one-out scoring of at most this many good images
# A fit reads at most this many good images (a seeded sample): every patch of every image
# is held before the coreset, 200 x 4,096 x 360 float32 = 1.2 GB at 512 px input.
MAX_FIT_IMAGES = 200
BATCH = 8


@dataclass(frozen=True)
class AnomalyResult:
    """Anomaly map and score of one image."""

    heatmap: np.ndarray  # (H, W) float32 in [0, 1] at the image's own size
    score: float  # image anomaly score, normalised: > 1.0 means above the good images' range


@dataclass
class NormalityModel:
    """The fitted model: memory bank, calibration and the encoder it belongs to."""

    encoder_id: str
    cache_id: str
    input_size: int
    levels: tuple[int, int]
    contrast: bool
    memory_bank: np.ndarray  # (M, D) float32, values exactly representable in float16
    projection: np.ndarray | None  # (C, D) float32 applied to patch features, or None
    pixel_threshold: float
    image_threshold: float
    good_images: int
    metrics: dict[str, float] = field(default_factory=dict)
    # (S, S) float32: the good images' typical anomaly map at each position (None: flat).
    position_scale: np.ndarray | None = None
    # Quantile of each map subtracted from it (None: the plain map, as models saved before).
    baseline_quantile: float | None = None

    def payload(self, prefix: str = "") -> tuple[dict[str, object], dict[str, np.ndarray]]:
        """The metadata and arrays that describe this model; array names start `prefix`."""
        meta: dict[str, object] = {
            "encoder_id": self.encoder_id,
            "cache_id": self.cache_id,
            "input_size": self.input_size,
            "levels": list(self.levels),
            "contrast": self.contrast,
            "pixel_threshold": self.pixel_threshold,
            "image_threshold": self.image_threshold,
            "good_images": self.good_images,
            "metrics": self.metrics,
            "baseline_quantile": self.baseline_quantile,
        }
        arrays = {f"{prefix}bank": self.memory_bank.astype(np.float16)}
        if self.projection is not None:
            arrays[f"{prefix}projection"] = self.projection
        if self.position_scale is not None:
            arrays[f"{prefix}position"] = self.position_scale.astype(np.float32)
        return meta, arrays

    @classmethod
    def from_payload(
        cls, meta: dict[str, object], arrays: Mapping[str, np.ndarray], path: Path, prefix: str = ""
    ) -> NormalityModel:
        """The model `payload` described; CheckpointError naming `path` when it is bad."""
        try:
            bank = np.asarray(arrays[f"{prefix}bank"]).astype(np.float32)
        except KeyError as exc:
            raise CheckpointError(f"{path}: normality model has no memory bank") from exc
        projection = arrays.get(f"{prefix}projection")
        position = arrays.get(f"{prefix}position")
        dim = bank.shape[1] if bank.ndim == 2 else -1
        if (
            bank.ndim != 2
            or len(bank) == 0
            or (projection is not None and projection.shape[1] != dim)
        ):
            raise CheckpointError(f"{path}: memory bank of shape {bank.shape} is damaged")
        try:
            levels = meta["levels"]
            return cls(
                encoder_id=str(meta["encoder_id"]),
                cache_id=str(meta["cache_id"]),
                input_size=int(meta["input_size"]),  # type: ignore[call-overload]
                levels=(int(levels[0]), int(levels[1])),  # type: ignore[index]
                contrast=bool(meta["contrast"]),
                memory_bank=bank,
                projection=None if projection is None else projection.astype(np.float32),
                pixel_threshold=float(meta["pixel_threshold"]),  # type: ignore[arg-type]
                image_threshold=float(meta["image_threshold"]),  # type: ignore[arg-type]
                good_images=int(meta["good_images"]),  # type: ignore[call-overload]
                metrics={k: float(v) for k, v in meta["metrics"].items()},  # type: ignore[attr-defined]
                position_scale=None if position is None else position.astype(np.float32),
                baseline_quantile=_optional_float(meta.get("baseline_quantile")),
            )
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise CheckpointError(f"{path}: normality model metadata incomplete ({exc})") from exc

    def save(self, path: Path) -> Path:
        """Write one `.npz` file atomically (temp file, fsync, rename); returns `path`."""
        meta, arrays = self.payload()
        return write_normality_file(path, {"version": FORMAT_VERSION, **meta}, arrays)

    @classmethod
    def load(cls, path: Path) -> NormalityModel:
        """Read a file written by `save`; CheckpointError naming the file when it is bad."""
        path = Path(path)
        meta, arrays = read_normality_file(path)
        if meta.get("version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{path}: normality model format {meta.get('version')} is not a single-scale "
                f"model (NormalityEnsemble.load reads both)"
            )
        return cls.from_payload(meta, arrays, path)


def write_normality_file(
    path: Path, header: dict[str, object], arrays: Mapping[str, np.ndarray]
) -> Path:
    """Write `header` (with the format name) and `arrays` as one `.npz` file atomically
    (temp file, fsync, rename); returns `path`."""
    payload = {"meta": np.array(json.dumps({"format": FORMAT, **header})), **arrays}
    return write_atomically(Path(path), lambda fh: np.savez(fh, **payload))


def read_normality_file(path: Path) -> tuple[dict[str, object], dict[str, np.ndarray]]:
    """The metadata and arrays of a normality model file, its format checked."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            arrays = {name: data[name] for name in data.files if name != "meta"}
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: no such normality model file") from exc
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: not a readable normality model ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a normality model file")
    if meta.get("version") not in KNOWN_VERSIONS:
        raise CheckpointError(f"{path}: normality model format {meta.get('version')} unknown")
    return meta, arrays


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _above_baseline(amap: np.ndarray, quantile: float | None) -> np.ndarray:
    """The map less its own `quantile` value, floored at 0 (the plain map when None)."""
    if quantile is None:
        return amap
    return np.maximum(amap - np.float32(np.quantile(amap, quantile)), 0.0)


def _patches(
    encoder: FrozenEncoder,
    images: Sequence[np.ndarray],
    shas: Sequence[str],
    cache: FeatureCache | None,
    *,
    levels: tuple[int, int],
    contrast: bool,
    projection: np.ndarray | None,
) -> np.ndarray:
    """(B, h, w, D) float32 patch features, encoded through the cache."""
    frozen = encode_cached(encoder, images, shas, cache, batch_size=BATCH)
    emb = patch_embedding(frozen.features, levels, contrast=contrast).permute(0, 2, 3, 1)
    out = emb.numpy()
    return out @ projection if projection is not None else np.ascontiguousarray(out)


def _to_map(patch_dist: np.ndarray, input_size: int) -> np.ndarray:
    """(h, w) patch distances → (S, S) blurred anomaly map at input size."""
    up = cv2.resize(
        patch_dist.astype(np.float32), (input_size, input_size), interpolation=cv2.INTER_LINEAR
    )
    return cv2.GaussianBlur(up, (0, 0), BLUR_SIGMA, borderType=cv2.BORDER_REFLECT)


def _build_index(bank: np.ndarray) -> faiss.IndexFlatL2:
    index = faiss.IndexFlatL2(bank.shape[1])
    index.add(np.ascontiguousarray(bank, dtype=np.float32))
    return index


def fit_sample(count: int, *, max_images: int = MAX_FIT_IMAGES, seed: int = 0) -> np.ndarray:
    """Indices (sorted) of the good images a fit reads out of `count`: all of them, or a
    seeded sample of `max_images`. Callers that decode images apply it first, so images
    the fit would drop are never decoded."""
    if count <= max_images:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, max_images, replace=False))


def fit_normality(
    encoder: FrozenEncoder,
    images: Sequence[tuple[str, np.ndarray]],
    *,
    cache: FeatureCache | None = None,
    coreset_ratio: float = 0.1,
    max_patches: int = 20000,
    seed: int = 0,
    contrast: bool = True,
    projection_dim: int | None = None,
    max_images: int = MAX_FIT_IMAGES,
) -> NormalityModel:
    """Fit on known-good `(sha256, RGB uint8 HxWx3)` images: coreset bank + calibration.

    More than `max_images` images are thinned to a seeded sample of that many.
    `projection_dim` optionally shrinks patch features with a seeded random projection.
    """
    if len(images) < 2:
        raise ValueError(f"a normality model needs at least 2 known-good images, got {len(images)}")
    offered = len(images)
    images = [images[i] for i in fit_sample(offered, max_images=max_images, seed=seed)]
    if not 0.0 < coreset_ratio <= 1.0:
        raise ValueError(f"coreset_ratio must be in (0, 1], got {coreset_ratio}")
    levels = pick_levels(encoder.feature_strides, encoder.feature_channels)
    dim = encoder.feature_channels[levels[0]] + encoder.feature_channels[levels[1]]
    projection = None
    if projection_dim is not None and projection_dim < dim:
        projection = random_projection(dim, projection_dim, seed=seed + 1)
    feats = []
    for start in range(0, len(images), BATCH):
        chunk = images[start : start + BATCH]
        feats.append(
            _patches(
                encoder,
                [im for _, im in chunk],
                [sha for sha, _ in chunk],
                cache,
                levels=levels,
                contrast=contrast,
                projection=projection,
            )
        )
    grid = np.concatenate(feats)  # (N, h, w, D)
    n, h, w, d = grid.shape
    flat = grid.reshape(-1, d)
    k = max(1, min(max_patches, round(coreset_ratio * len(flat))))
    chosen = k_center_greedy(flat, k, seed=seed)
    bank = flat[chosen].astype(np.float16).astype(np.float32)  # stored as float16
    owner = chosen // (h * w)
    pixel_t, image_t, position = _calibrate(
        grid, bank, owner, encoder.input_size, seed=seed, baseline=BASELINE_QUANTILE
    )
    return NormalityModel(
        encoder_id=encoder.encoder_id,
        cache_id=encoder.cache_id,
        input_size=encoder.input_size,
        levels=levels,
        contrast=contrast,
        memory_bank=bank,
        projection=projection,
        pixel_threshold=pixel_t,
        image_threshold=image_t,
        good_images=n,
        position_scale=position,
        baseline_quantile=BASELINE_QUANTILE,
        metrics={
            "offered_images": float(offered),
            "patches": float(len(flat)),
            "memory_bank": float(len(bank)),
            "feature_dim": float(d),
            "pixel_threshold": pixel_t,
            "image_threshold": image_t,
        },
    )


def _calibrate(
    grid: np.ndarray,
    bank: np.ndarray,
    owner: np.ndarray,
    input_size: int,
    *,
    seed: int,
    baseline: float | None,
) -> tuple[float, float, np.ndarray | None]:
    """Leave-one-out pixel threshold, image threshold and position scale on a seeded sample
    of good images."""
    n, h, w, d = grid.shape
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.permutation(n)[:CALIBRATION_IMAGES])
    bank_t = torch.from_numpy(bank)
    bank_sq = (bank_t * bank_t).sum(dim=1)
    maps = []
    for i in sample:
        q = torch.from_numpy(grid[i].reshape(-1, d))
        d2 = (q * q).sum(dim=1, keepdim=True) - 2.0 * (q @ bank_t.T) + bank_sq
        d2[:, torch.from_numpy(owner == i)] = float("inf")  # not judged by its own patches
        nearest = d2.min(dim=1).values.clamp_min(0).sqrt().numpy()
        maps.append(_to_map(nearest.reshape(h, w), input_size))
    position = None
    if POSITION_NORMALISED:
        typical = cv2.GaussianBlur(np.mean(maps, axis=0), (0, 0), POSITION_SIGMA)
        position = (typical / typical.mean()).astype(np.float32)
        maps = [m / position for m in maps]
    maps = [_above_baseline(m, baseline) for m in maps]
    pixel_t = float(np.quantile(np.concatenate([m.ravel() for m in maps]), PIXEL_QUANTILE))
    image_t = max(float(m.max()) for m in maps)
    return max(pixel_t, 1e-6), max(image_t, 1e-6), position


class AnomalyScorer:
    """Scores images with a fitted normality model, sharing the feature cache.

    Thread-safe for concurrent `score` calls (the faiss flat index is read-only).
    """

    def __init__(
        self, model: NormalityModel, encoder: FrozenEncoder, *, cache: FeatureCache | None = None
    ) -> None:
        if encoder.cache_id != model.cache_id or encoder.input_size != model.input_size:
            raise CheckpointError(
                f"normality model was fitted with {model.cache_id} at {model.input_size}px, "
                f"not {encoder.cache_id} at {encoder.input_size}px"
            )
        self.model = model
        self.encoder = encoder
        self.cache = cache
        self._index = _build_index(model.memory_bank)

    def anomaly_map(self, image: np.ndarray, *, sha256: str | None = None) -> np.ndarray:
        """(S, S) anomaly map at the encoder's input size, in distance units: position
        normalised and less the image's own baseline, as calibrated."""
        sha = sha256 or sha256_bytes(np.ascontiguousarray(image).tobytes())
        m = self.model
        grid = _patches(
            self.encoder,
            [image],
            [sha],
            self.cache,
            levels=m.levels,
            contrast=m.contrast,
            projection=m.projection,
        )[0]
        h, w, d = grid.shape
        dist, _ = self._index.search(np.ascontiguousarray(grid.reshape(-1, d)), 1)
        amap = _to_map(np.sqrt(np.maximum(dist[:, 0], 0.0)).reshape(h, w), m.input_size)
        if m.position_scale is not None:
            amap = amap / m.position_scale
        return _above_baseline(amap, m.baseline_quantile)

    def score(self, image: np.ndarray, *, sha256: str | None = None) -> AnomalyResult:
        """Heatmap at the image's own size and the normalised image score."""
        amap = self.anomaly_map(image, sha256=sha256)
        heat = np.clip(amap / (2.0 * self.model.pixel_threshold), 0.0, 1.0)
        heat = np.clip(resize_to(heat, image.shape[:2]), 0.0, 1.0).astype(np.float32)
        return AnomalyResult(heatmap=heat, score=float(amap.max()) / self.model.image_threshold)
