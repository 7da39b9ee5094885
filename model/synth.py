"""Synthetic industrial surfaces with exact defect masks, written in the MVTec-AD layout.

Textures: brushed metal, wood grain, woven fabric, concrete. Defects: scratch, crack,
stain, pit, particles. About 20 % of the images are defect-free. Every defect changes
pixels only inside its mask, so the masks are exact. Used by the demo and the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

DEFECT_TYPES = ("scratch", "crack", "stain", "pit", "particles")
GOOD_FRACTION = 0.2

Rng = np.random.Generator


def _noise(rng: Rng, size: int, scale: float) -> np.ndarray:
    """Smooth noise in ~[-1, 1] with features about `scale` pixels wide."""
    n = max(2, int(size / scale))
    small = rng.standard_normal((n, n)).astype(np.float32)
    big = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    return big / (np.abs(big).max() + 1e-6)


def _brushed_metal(rng: Rng, size: int) -> np.ndarray:
    streaks = rng.standard_normal((size, size)).astype(np.float32)
    streaks = cv2.GaussianBlur(streaks, (0, 0), sigmaX=size / 6, sigmaY=0.8)
    base = 0.55 + 0.25 * streaks / (np.abs(streaks).max() + 1e-6) + 0.08 * _noise(rng, size, 64)
    return np.stack([base] * 3, axis=-1) * rng.uniform(0.9, 1.1, 3)


def _wood(rng: Rng, size: int) -> np.ndarray:
    _, x = np.mgrid[0:size, 0:size].astype(np.float32)
    warp = 18 * _noise(rng, size, 80)
    rings = np.sin((x + warp) / rng.uniform(4, 9) + 2 * _noise(rng, size, 120))
    base = 0.5 + 0.15 * rings + 0.05 * _noise(rng, size, 8)
    color = np.array([0.75, 0.52, 0.3]) * rng.uniform(0.8, 1.2)
    return base[..., None] * color * 1.4


def _fabric(rng: Rng, size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    period = rng.uniform(5, 10)
    weave = np.sin(2 * np.pi * x / period) * np.sin(2 * np.pi * y / period)
    base = 0.5 + 0.12 * weave + 0.06 * _noise(rng, size, 16)
    color = rng.uniform(0.3, 1.0, 3)
    return base[..., None] * (0.6 + 0.6 * color)


def _concrete(rng: Rng, size: int) -> np.ndarray:
    speckle = rng.standard_normal((size, size)).astype(np.float32) * 0.06
    base = 0.55 + 0.12 * _noise(rng, size, 40) + 0.06 * _noise(rng, size, 10) + speckle
    return np.stack([base] * 3, axis=-1) * rng.uniform(0.9, 1.05, 3)


TEXTURES: dict[str, Callable[[Rng, int], np.ndarray]] = {
    "metal": _brushed_metal,
    "wood": _wood,
    "fabric": _fabric,
    "concrete": _concrete,
}


def _polyline(rng: Rng, size: int, *, steps: int, turn: float, step_len: float) -> np.ndarray:
    pts = [rng.uniform(0.15 * size, 0.85 * size, 2)]
    angle = rng.uniform(0, 2 * np.pi)
    for _ in range(steps):
        angle += rng.normal(0, turn)
        nxt = pts[-1] + step_len * np.array([np.cos(angle), np.sin(angle)])
        pts.append(np.clip(nxt, 2, size - 3))
    return np.round(np.array(pts)).astype(np.int32)


def _scratch(rng: Rng, size: int) -> tuple[np.ndarray, float]:
    mask = np.zeros((size, size), np.uint8)
    line = _polyline(rng, size, steps=int(rng.integers(3, 6)), turn=0.15, step_len=size / 10)
    cv2.polylines(mask, [line], False, 1, thickness=int(rng.integers(1, 4)))
    return mask.astype(bool), rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.35)


def _crack(rng: Rng, size: int) -> tuple[np.ndarray, float]:
    mask = np.zeros((size, size), np.uint8)
    trunk = _polyline(rng, size, steps=int(rng.integers(10, 20)), turn=0.6, step_len=size / 40)
    cv2.polylines(mask, [trunk], False, 1, thickness=int(rng.integers(1, 3)))
    for _ in range(int(rng.integers(0, 3))):
        start = trunk[int(rng.integers(len(trunk)))]
        branch = _polyline(rng, size, steps=6, turn=0.7, step_len=size / 50)
        branch = branch - branch[0] + start
        cv2.polylines(mask, [np.clip(branch, 0, size - 1)], False, 1, thickness=1)
    return mask.astype(bool), -rng.uniform(0.25, 0.4)


def _stain(rng: Rng, size: int) -> tuple[np.ndarray, float]:
    mask = np.zeros((size, size), np.uint8)
    center = tuple(int(v) for v in rng.uniform(0.25 * size, 0.75 * size, 2))
    axes = tuple(int(v) for v in rng.uniform(0.05 * size, 0.16 * size, 2))
    cv2.ellipse(mask, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    wobble = _noise(rng, size, size / 12) > rng.uniform(0.1, 0.4)
    blob = cv2.dilate(mask, np.ones((3, 3), np.uint8)) & ~(wobble & (mask == 0))
    return blob.astype(bool) & (mask.astype(bool) | ~wobble), rng.choice([-1.0, 1.0]) * 0.18


def _pit(rng: Rng, size: int) -> tuple[np.ndarray, float]:
    mask = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        c = tuple(int(v) for v in rng.uniform(0.1 * size, 0.9 * size, 2))
        cv2.circle(mask, c, int(rng.integers(2, max(3, size // 40))), 1, -1)
    return mask.astype(bool), -rng.uniform(0.3, 0.45)


def _particles(rng: Rng, size: int) -> tuple[np.ndarray, float]:
    mask = np.zeros((size, size), np.uint8)
    center = rng.uniform(0.2 * size, 0.8 * size, 2)
    for _ in range(int(rng.integers(5, 16))):
        c = np.clip(center + rng.normal(0, size / 20, 2), 1, size - 2).astype(int)
        cv2.circle(mask, (int(c[0]), int(c[1])), int(rng.integers(1, 3)), 1, -1)
    return mask.astype(bool), rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 0.45)


DEFECTS: dict[str, Callable[[Rng, int], tuple[np.ndarray, float]]] = {
    "scratch": _scratch,
    "crack": _crack,
    "stain": _stain,
    "pit": _pit,
    "particles": _particles,
}


def make_surface(rng: Rng, size: int, defect_type: str | None) -> tuple[np.ndarray, np.ndarray]:
    """One uint8 RGB surface and its exact boolean defect mask (empty when None)."""
    texture = TEXTURES[str(rng.choice(list(TEXTURES)))](rng, size)
    mask = np.zeros((size, size), dtype=bool)
    if defect_type is not None:
        while not mask.any():
            mask, delta = DEFECTS[defect_type](rng, size)
        shade = 1.0 + 0.15 * _noise(rng, size, 6)
        texture = np.where(mask[..., None], texture + delta * shade[..., None], texture)
    image = np.clip(texture * 255.0, 0, 255).astype(np.uint8)
    return image, mask


def write_dataset(
    out: Path | str, *, seed: int = 0, size: int = 256, count: int = 200, progress: bool = True
) -> Path:
    """Write `count` images in the MVTec-AD layout under `out`; returns `out`."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if size < 32:
        raise ValueError(f"size must be at least 32 px, got {size}")
    out = Path(out)
    rng = np.random.default_rng(seed)
    n_good = round(count * GOOD_FRACTION)
    kinds: list[str | None] = [None] * n_good
    kinds += [DEFECT_TYPES[i % len(DEFECT_TYPES)] for i in range(count - n_good)]
    for i, kind in enumerate(tqdm(kinds, desc="synthesising", unit="img", disable=not progress)):
        image, mask = make_surface(rng, size, kind)
        folder = out / "test" / (kind or "good")
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{i:04d}"
        cv2.imwrite(str(folder / f"{name}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if kind is not None:
            gt = out / "ground_truth" / kind
            gt.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(gt / f"{name}_mask.png"), mask.astype(np.uint8) * 255)
    return out
