"""Independent synthetic surface-defect dataset for generalisation checks.

Textures (anodised, sand-blasted cells, tiled circuit, pored rubber, carbon twill) and
defects (dent, hairline, blob, chip, contamination) are deliberately unlike the training
generator. Output follows the MVTec-AD layout: `test/<type>/NNNN.png` and
`ground_truth/<type>/NNNN_mask.png` (uint8 0/255). Only numpy, OpenCV and PIL are used.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

DEFECT_TYPES = ("dent", "hairline", "blob", "chip", "contamination")
MIN_AREA = 30  # pixels at size >= 240 (scaled down for small images); smaller masks are redrawn
Rng = np.random.Generator
Img = np.ndarray  # float32 (S, S, 3) in [0, 1]


def _smooth_noise(rng: Rng, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a small random grid upsampled bicubically."""
    small = rng.random((cells, cells)).astype(np.float32)
    big = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    return (big - big.min()) / max(float(big.max() - big.min()), 1e-6)


def _tint(gray: np.ndarray, rng: Rng, spread: float = 0.25) -> Img:
    """Colour a grey map with a random base colour."""
    colour = rng.uniform(0.5 - spread, 0.5 + spread, 3).astype(np.float32)
    return np.clip(gray[..., None] * colour * 2.0, 0.0, 1.0)


def _anodised(rng: Rng, s: int) -> Img:
    grad = _smooth_noise(rng, s, 3) * 0.3 + 0.35
    grain = cv2.GaussianBlur(rng.normal(0, 1, (s, s)).astype(np.float32), (0, 0), 0.8)
    return _tint(grad + 0.05 * grain, rng, 0.3)


def _sandblasted(rng: Rng, s: int) -> Img:
    seeds = np.ones((s, s), np.uint8)
    n = int(rng.integers(20, 80))
    seeds[rng.integers(0, s, n), rng.integers(0, s, n)] = 0
    dist, labels = cv2.distanceTransformWithLabels(seeds, cv2.DIST_L2, 5)
    shades = rng.uniform(0.4, 0.6, labels.max() + 1).astype(np.float32)
    cells = shades[labels] - 0.004 * np.sqrt(dist)
    salt = (rng.random((s, s)) < 0.08).astype(np.float32)
    salt = cv2.GaussianBlur(salt, (0, 0), 1.2)
    return _tint(cells + 0.4 * salt, rng, 0.1)


def _tiled(rng: Rng, s: int) -> Img:
    pitch = int(rng.integers(16, 40))
    base, pad = float(rng.uniform(0.2, 0.35)), float(rng.uniform(0.55, 0.75))
    img = np.full((s, s), base, np.float32)
    for y in range(0, s, pitch):
        for x in range(0, s, pitch):
            jx, jy = rng.integers(-2, 3, 2)
            w, h = rng.integers(pitch // 3, pitch - 4, 2)
            cv2.rectangle(img, (x + jx + 2, y + jy + 2), (x + jx + w, y + jy + h), pad, -1)
    for _ in range(int(rng.integers(3, 8))):
        p = int(rng.integers(0, s))
        pt1, pt2 = ((0, p), (s, p)) if rng.random() < 0.5 else ((p, 0), (p, s))
        cv2.line(img, pt1, pt2, float(rng.uniform(0.4, 0.6)), int(rng.integers(1, 3)))
    return _tint(cv2.GaussianBlur(img, (0, 0), 0.7), rng, 0.2)


def _rubber(rng: Rng, s: int) -> Img:
    noise = cv2.GaussianBlur(rng.random((s, s)).astype(np.float32), (0, 0), rng.uniform(1.5, 3))
    thr = np.quantile(noise, rng.uniform(0.8, 0.9))
    pores = cv2.GaussianBlur((noise > thr).astype(np.float32), (0, 0), 0.8)
    return _tint(0.45 - 0.2 * pores + 0.08 * _smooth_noise(rng, s, 6), rng, 0.15)


def _carbon(rng: Rng, s: int) -> Img:
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    omega, block = 2 * np.pi / rng.uniform(3.5, 6), int(rng.integers(6, 12))
    checker = ((xx // block + yy // block) % 2).astype(bool)  # twill: tows alternate direction
    wave = np.where(checker, np.sin((xx + yy) * omega), np.sin((xx - yy) * omega))
    img = 0.3 + 0.1 * wave + 0.05 * checker + 0.05 * _smooth_noise(rng, s, 4)
    return _tint(img.astype(np.float32), rng, 0.08)


TEXTURES: tuple[Callable[[Rng, int], Img], ...] = (
    _anodised,
    _sandblasted,
    _tiled,
    _rubber,
    _carbon,
)


def _finish(img: Img, rng: Rng) -> Img:
    """Global illumination gradient and mild sensor noise."""
    s = img.shape[0]
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    a = rng.uniform(0, 2 * np.pi)
    ramp = 1.0 + rng.uniform(0.05, 0.3) * ((np.cos(a) * xx + np.sin(a) * yy) - 0.5)
    noise = rng.normal(0, rng.uniform(0.005, 0.02), img.shape).astype(np.float32)
    return np.clip(img * ramp[..., None] + noise, 0.0, 1.0)


def _contrast(rng: Rng) -> float:
    """Intensity change, 15-40 % of the range; a quarter of defects at half strength."""
    amp = float(rng.uniform(0.15, 0.4))
    return amp * (0.5 if rng.random() < 0.25 else 1.0) * (1 if rng.random() < 0.5 else -1)


def _star_polygon(rng: Rng, cx: float, cy: float, r: float, n: int) -> np.ndarray:
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = r * rng.uniform(0.45, 1.0, n)
    pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
    return pts.round().astype(np.int32)


def _defect(kind: str, img: Img, rng: Rng) -> tuple[Img, np.ndarray]:
    """Draw one defect of `kind`; returns the altered image and its uint8 0/1 mask."""
    s = img.shape[0]
    mask = np.zeros((s, s), np.uint8)
    amp = _contrast(rng)
    cx, cy = rng.uniform(0.2 * s, 0.8 * s, 2)
    delta: float | np.ndarray = amp
    if kind == "dent":
        axes = (int(rng.uniform(0.05, 0.12) * s), int(rng.uniform(0.03, 0.07) * s))
        cv2.ellipse(mask, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
        a = rng.uniform(0, 2 * np.pi)
        side = ((xx - cx) * np.cos(a) + (yy - cy) * np.sin(a)) / max(axes)
        delta = 1.2 * abs(amp) * np.clip(side, -1, 1)[..., None]  # lit from one side
    elif kind == "hairline":
        length = rng.uniform(0.3, 0.7) * s
        a, t = rng.uniform(0, np.pi), np.linspace(-0.5, 0.5, 80)
        bend = rng.uniform(0.02, 0.08) * s * np.sin(np.pi * (t + 0.5) * rng.uniform(0.5, 2))
        x = cx + t * length * np.cos(a) - bend * np.sin(a)
        y = cy + t * length * np.sin(a) + bend * np.cos(a)
        pts = np.stack([x, y], 1).round().astype(np.int32)
        cv2.polylines(mask, [pts], False, 1, int(rng.integers(1, 3)))
    elif kind == "blob":
        poly = _star_polygon(rng, cx, cy, rng.uniform(0.05, 0.13) * s, int(rng.integers(8, 15)))
        cv2.fillPoly(mask, [poly], 1)
        shift = rng.normal(0, 1, 3).astype(np.float32)
        delta = amp + 0.3 * abs(amp) * shift / np.linalg.norm(shift)  # colour shift
    elif kind == "chip":
        ex, ey = rng.uniform(0.1 * s, 0.9 * s, 2)
        if rng.random() < 0.4:  # corner
            ex, ey = rng.choice([0, s - 1], 2)
        elif rng.random() < 0.5:
            ex = float(rng.choice([0, s - 1]))
        else:
            ey = float(rng.choice([0, s - 1]))
        poly = _star_polygon(rng, ex, ey, rng.uniform(0.08, 0.16) * s, int(rng.integers(4, 7)))
        cv2.fillPoly(mask, [poly], 1)
    else:  # contamination
        spread = rng.uniform(0.06, 0.15) * s
        for _ in range(int(rng.integers(3, 9))):
            px, py = rng.normal([cx, cy], spread)
            if rng.random() < 0.6:
                a, n = rng.uniform(0, 2 * np.pi), int(rng.integers(4, 8))
                turns = np.cumsum(rng.normal(0, 0.4, n)) + a
                steps = rng.uniform(2, 5, n)
                xs = px + np.cumsum(steps * np.cos(turns))
                ys = py + np.cumsum(steps * np.sin(turns))
                pts = np.stack([xs, ys], 1).round().astype(np.int32)
                cv2.polylines(mask, [pts], False, 1, int(rng.integers(1, 3)))
            else:
                cv2.circle(mask, (int(px), int(py)), int(rng.integers(1, 4)), 1, -1)
        delta = -abs(amp)  # dirt darkens
    out = np.where(mask[..., None] > 0, np.clip(img + delta, 0, 1), img)
    return out.astype(np.float32), mask


def _save(array: np.ndarray, path: Path, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode).save(path)


def write_unseen_dataset(out: Path, *, seed: int, count: int, size: int = 256) -> Path:
    """Write `count` images (20 % defect-free) in MVTec-AD layout under `out`; return `out`."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    n_good = round(0.2 * count)
    kinds = ["good"] * n_good + [DEFECT_TYPES[i % 5] for i in range(count - n_good)]
    counters: dict[str, int] = {}
    for kind in kinds:
        texture = TEXTURES[int(rng.integers(len(TEXTURES)))]
        img = _finish(texture(rng, size), rng)
        min_area = max(1, min(MIN_AREA, size // 8))
        name = f"{counters.setdefault(kind, 0):04d}"
        counters[kind] += 1
        if kind != "good":
            defective, mask = _defect(kind, img, rng)
            while mask.sum() < min_area:  # retry until the mask is clearly non-empty
                defective, mask = _defect(kind, img, rng)
            img = defective
            _save(mask * 255, out / "ground_truth" / kind / f"{name}_mask.png", "L")
        _save((img * 255).round(), out / "test" / kind / f"{name}.png", "RGB")
    return out


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    print(write_unseen_dataset(args.out, seed=args.seed, count=args.count, size=args.size))


if __name__ == "__main__":
    main()
