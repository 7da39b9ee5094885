"""Independent synthetic surface-defect dataset for generalisation checks.

Textures (anodised, sand-blasted cells, tiled circuit, pored rubber, carbon twill) and
defects (dent, hairline, blob, chip, contamination) are deliberately unlike the training
generator. Output follows the MVTec-AD layout: `test/<type>/NNNN.png` and
`ground_truth/<type>/NNNN_mask.png` (uint8 0/255). Only numpy, OpenCV and PIL are used.

Two scales. The default (relative) draws every defect as a fraction of the image height, so
a dataset looks the same at any size: the old benchmark, whose output stays byte-identical.
`absolute=True` draws defects and textures in absolute pixels, as a camera of fixed
resolution would see them whatever the field of view: a hairline is 1–2 px wide on a
1024 × 1024 image just as on a 256 × 256 one. That is the data on which squashing a large
image to the model's input loses the defect and tiling at native pixels does not.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

DEFECT_TYPES = ("dent", "hairline", "blob", "chip", "contamination")
MIN_AREA = 30  # pixels at size >= 240 (scaled down for small images); smaller masks are redrawn
TEXTURE_REF = 256  # absolute mode: textures keep the pixel character they have at 256 × 256
Rng = np.random.Generator
Img = np.ndarray  # float32 (H, W, 3) in [0, 1]


@dataclass(frozen=True)
class Geometry:
    """Image shape and the length that texture and defect sizes are measured against.

    `unit` multiplies every defect range below: the image height in relative mode (ranges
    are fractions), 1 in absolute mode (ranges are pixels). `ref` is the length over which a
    texture draws its nominal number of features (noise cells, sand grains): the height in
    relative mode, `TEXTURE_REF` pixels in absolute mode, so feature counts grow with the
    image and their wavelength in pixels stays put.
    """

    h: int
    w: int
    absolute: bool = False

    @property
    def unit(self) -> float:
        return 1.0 if self.absolute else float(self.h)

    @property
    def ref(self) -> int:
        return TEXTURE_REF if self.absolute else self.h

    def cells(self, n: int) -> tuple[int, int]:
        """Noise-grid cells (rows, columns) with `n` cells per `ref` pixels, at least 2."""
        if not self.absolute and self.h == self.w:
            return n, n  # the original square grid, unchanged
        return (
            max(2, round(n * self.h / self.ref)),
            max(2, round(n * self.w / self.ref)),
        )

    @property
    def area_factor(self) -> float:
        """Image area in units of `ref`², for counts that go with area (sand grains)."""
        return self.h * self.w / self.ref**2

    @property
    def length_factor(self) -> float:
        """Mean side in units of `ref`, for counts that go with length (circuit traces)."""
        return (self.h + self.w) / (2 * self.ref)


# Defect size ranges, multiplied by `Geometry.unit`: fractions of the height in relative mode,
# pixels in absolute mode (a camera's view: dents, blobs and chips of about 12–60 px).
RELATIVE_RANGES: dict[str, tuple[float, float]] = {
    "dent_major": (0.05, 0.12),
    "dent_minor": (0.03, 0.07),
    "hair_length": (0.3, 0.7),
    "blob_radius": (0.05, 0.13),
    "chip_radius": (0.08, 0.16),
    "dirt_spread": (0.06, 0.15),
}
ABSOLUTE_RANGES: dict[str, tuple[float, float]] = {
    "dent_major": (8.0, 30.0),  # semi-axes: 16–60 px across
    "dent_minor": (5.0, 16.0),
    "hair_length": (60.0, 400.0),
    "blob_radius": (7.0, 30.0),  # star-polygon radius: up to 60 px across
    "chip_radius": (12.0, 40.0),  # centred on the border: about half of it shows
    "dirt_spread": (20.0, 60.0),
}


def _size(rng: Rng, geo: Geometry, name: str) -> float:
    """One defect dimension: a uniform draw from the mode's range, times the unit."""
    lo, hi = (ABSOLUTE_RANGES if geo.absolute else RELATIVE_RANGES)[name]
    return float(rng.uniform(lo, hi)) * geo.unit


def _smooth_noise(rng: Rng, geo: Geometry, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a small random grid upsampled bicubically."""
    small = rng.random(geo.cells(cells)).astype(np.float32)
    big = cv2.resize(small, (geo.w, geo.h), interpolation=cv2.INTER_CUBIC)
    return (big - big.min()) / max(float(big.max() - big.min()), 1e-6)


def _tint(gray: np.ndarray, rng: Rng, spread: float = 0.25) -> Img:
    """Colour a grey map with a random base colour."""
    colour = rng.uniform(0.5 - spread, 0.5 + spread, 3).astype(np.float32)
    return np.clip(gray[..., None] * colour * 2.0, 0.0, 1.0)


def _anodised(rng: Rng, geo: Geometry) -> Img:
    grad = _smooth_noise(rng, geo, 3) * 0.3 + 0.35
    grain = cv2.GaussianBlur(rng.normal(0, 1, (geo.h, geo.w)).astype(np.float32), (0, 0), 0.8)
    return _tint(grad + 0.05 * grain, rng, 0.3)


def _sandblasted(rng: Rng, geo: Geometry) -> Img:
    h, w = geo.h, geo.w
    seeds = np.ones((h, w), np.uint8)
    n = int(int(rng.integers(20, 80)) * geo.area_factor)  # grains keep their size in pixels
    seeds[rng.integers(0, h, n), rng.integers(0, w, n)] = 0
    dist, labels = cv2.distanceTransformWithLabels(seeds, cv2.DIST_L2, 5)
    shades = rng.uniform(0.4, 0.6, labels.max() + 1).astype(np.float32)
    cells = shades[labels] - 0.004 * np.sqrt(dist)
    salt = (rng.random((h, w)) < 0.08).astype(np.float32)
    salt = cv2.GaussianBlur(salt, (0, 0), 1.2)
    return _tint(cells + 0.4 * salt, rng, 0.1)


def _tiled(rng: Rng, geo: Geometry) -> Img:
    h, w = geo.h, geo.w
    pitch = int(rng.integers(16, 40))
    base, pad = float(rng.uniform(0.2, 0.35)), float(rng.uniform(0.55, 0.75))
    img = np.full((h, w), base, np.float32)
    for y in range(0, h, pitch):
        for x in range(0, w, pitch):
            jx, jy = rng.integers(-2, 3, 2)
            pw, ph = rng.integers(pitch // 3, pitch - 4, 2)
            cv2.rectangle(img, (x + jx + 2, y + jy + 2), (x + jx + pw, y + jy + ph), pad, -1)
    for _ in range(int(int(rng.integers(3, 8)) * geo.length_factor)):
        p = int(rng.integers(0, h))
        if rng.random() < 0.5:
            pt1, pt2 = (0, p), (w, p)
        else:
            x = p if w == h else p * w // h  # same draw, stretched over the width
            pt1, pt2 = (x, 0), (x, h)
        cv2.line(img, pt1, pt2, float(rng.uniform(0.4, 0.6)), int(rng.integers(1, 3)))
    return _tint(cv2.GaussianBlur(img, (0, 0), 0.7), rng, 0.2)


def _rubber(rng: Rng, geo: Geometry) -> Img:
    noise = cv2.GaussianBlur(
        rng.random((geo.h, geo.w)).astype(np.float32), (0, 0), rng.uniform(1.5, 3)
    )
    thr = np.quantile(noise, rng.uniform(0.8, 0.9))
    pores = cv2.GaussianBlur((noise > thr).astype(np.float32), (0, 0), 0.8)
    return _tint(0.45 - 0.2 * pores + 0.08 * _smooth_noise(rng, geo, 6), rng, 0.15)


def _carbon(rng: Rng, geo: Geometry) -> Img:
    yy, xx = np.mgrid[0 : geo.h, 0 : geo.w].astype(np.float32)
    omega, block = 2 * np.pi / rng.uniform(3.5, 6), int(rng.integers(6, 12))
    checker = ((xx // block + yy // block) % 2).astype(bool)  # twill: tows alternate direction
    wave = np.where(checker, np.sin((xx + yy) * omega), np.sin((xx - yy) * omega))
    img = 0.3 + 0.1 * wave + 0.05 * checker + 0.05 * _smooth_noise(rng, geo, 4)
    return _tint(img.astype(np.float32), rng, 0.08)


TEXTURES: tuple[Callable[[Rng, Geometry], Img], ...] = (
    _anodised,
    _sandblasted,
    _tiled,
    _rubber,
    _carbon,
)


def _finish(img: Img, rng: Rng) -> Img:
    """Global illumination gradient across the field of view and mild sensor noise."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = yy / h, xx / w
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


def _centre(rng: Rng, geo: Geometry, lo: float, hi: float) -> tuple[np.float64, np.float64]:
    """A point between fractions `lo` and `hi` of the width (x) and the height (y).

    NumPy scalars on purpose: a float64 scalar promotes the dent's float32 grid to float64,
    as the original draw did, which keeps the default output byte-identical.
    """
    if geo.h == geo.w:
        cx, cy = rng.uniform(lo * geo.h, hi * geo.h, 2)  # the original draw, unchanged
        return cx, cy
    return np.float64(rng.uniform(lo * geo.w, hi * geo.w)), np.float64(
        rng.uniform(lo * geo.h, hi * geo.h)
    )


def _hairline(mask: np.ndarray, rng: Rng, geo: Geometry, cx: float, cy: float) -> None:
    """A thin, gently bent scratch: 1 or 2 px wide in absolute mode; relative mode keeps the
    original OpenCV thickness 1 or 2, which draws 1 or 3 px."""
    length = _size(rng, geo, "hair_length")
    a = rng.uniform(0, np.pi)
    # Relative mode keeps its 80 vertices; long absolute scratches get one every ~4 px.
    t = np.linspace(-0.5, 0.5, 80 if not geo.absolute else max(80, int(length / 4)))
    if geo.absolute:  # bend in proportion to the length: long scratches are not straighter
        amplitude = length * rng.uniform(0.04, 0.16)
    else:
        amplitude = rng.uniform(0.02, 0.08) * geo.unit
    bend = amplitude * np.sin(np.pi * (t + 0.5) * rng.uniform(0.5, 2))
    x = cx + t * length * np.cos(a) - bend * np.sin(a)
    y = cy + t * length * np.sin(a) + bend * np.cos(a)
    pts = np.stack([x, y], 1).round().astype(np.int32)
    thickness = int(rng.integers(1, 3))
    if not geo.absolute:
        cv2.polylines(mask, [pts], False, 1, thickness)  # OpenCV's thickness 2 is 3 px wide
        return
    cv2.polylines(mask, [pts], False, 1, 1)
    if thickness == 2:  # a true 2 px width: the 1 px line grown by one pixel right and down
        mask[:] = cv2.dilate(mask, np.ones((2, 2), np.uint8), anchor=(0, 0))


def _contamination(mask: np.ndarray, rng: Rng, geo: Geometry, cx: float, cy: float) -> None:
    """A cluster of dust specks and short fibres around (cx, cy)."""
    spread = _size(rng, geo, "dirt_spread")
    # Absolute mode: more, smaller specks (fibres of 1 px, 2–15 px long) as a camera sees dust.
    count = rng.integers(3, 9) if not geo.absolute else rng.integers(6, 16)
    for _ in range(int(count)):
        px, py = rng.normal([cx, cy], spread)
        if rng.random() < 0.6:
            a, n = rng.uniform(0, 2 * np.pi), int(rng.integers(4, 8))
            turns = np.cumsum(rng.normal(0, 0.4, n)) + a
            steps = rng.uniform(2, 5, n) if not geo.absolute else rng.uniform(0.5, 2, n)
            xs = px + np.cumsum(steps * np.cos(turns))
            ys = py + np.cumsum(steps * np.sin(turns))
            pts = np.stack([xs, ys], 1).round().astype(np.int32)
            thickness = int(rng.integers(1, 3)) if not geo.absolute else 1
            cv2.polylines(mask, [pts], False, 1, thickness)
        else:
            cv2.circle(mask, (int(px), int(py)), int(rng.integers(1, 4)), 1, -1)


def _defect(kind: str, img: Img, rng: Rng, geo: Geometry) -> tuple[Img, np.ndarray]:
    """Draw one defect of `kind`; returns the altered image and its uint8 0/1 mask."""
    h, w = geo.h, geo.w
    mask = np.zeros((h, w), np.uint8)
    amp = _contrast(rng)
    # Relative mode keeps defects in the central 60 %; absolute mode lets them anywhere
    # away from the border (on a large image the central 60 % would be a give-away).
    cx, cy = _centre(rng, geo, 0.2, 0.8) if not geo.absolute else _centre(rng, geo, 0.05, 0.95)
    delta: float | np.ndarray = amp
    if kind == "dent":
        axes = (int(_size(rng, geo, "dent_major")), int(_size(rng, geo, "dent_minor")))
        cv2.ellipse(mask, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        a = rng.uniform(0, 2 * np.pi)
        side = ((xx - cx) * np.cos(a) + (yy - cy) * np.sin(a)) / max(axes)
        delta = 1.2 * abs(amp) * np.clip(side, -1, 1)[..., None]  # lit from one side
    elif kind == "hairline":
        _hairline(mask, rng, geo, cx, cy)
    elif kind == "blob":
        poly = _star_polygon(rng, cx, cy, _size(rng, geo, "blob_radius"), int(rng.integers(8, 15)))
        cv2.fillPoly(mask, [poly], 1)
        shift = rng.normal(0, 1, 3).astype(np.float32)
        delta = amp + 0.3 * abs(amp) * shift / np.linalg.norm(shift)  # colour shift
    elif kind == "chip":
        ex, ey = _centre(rng, geo, 0.1, 0.9)
        if rng.random() < 0.4:  # corner
            ex, ey = rng.choice([0, 1], 2) * np.array([w - 1, h - 1])
        elif rng.random() < 0.5:
            ex = float(rng.choice([0, w - 1]))
        else:
            ey = float(rng.choice([0, h - 1]))
        radius = _size(rng, geo, "chip_radius")
        poly = _star_polygon(rng, ex, ey, radius, int(rng.integers(4, 7)))
        cv2.fillPoly(mask, [poly], 1)
    else:  # contamination
        _contamination(mask, rng, geo, cx, cy)
        delta = -abs(amp)  # dirt darkens
    out = np.where(mask[..., None] > 0, np.clip(img + delta, 0, 1), img)
    return out.astype(np.float32), mask


def _save(array: np.ndarray, path: Path, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode).save(path)


def write_unseen_dataset(
    out: Path,
    *,
    seed: int,
    count: int,
    size: int = 256,
    width: int | None = None,
    absolute: bool = False,
) -> Path:
    """Write `count` images (20 % defect-free) in MVTec-AD layout under `out`; return `out`.

    Images are `size` high and `width or size` wide. `absolute=True` sizes defects and
    textures in pixels instead of fractions of the height (see the module docstring).
    """
    out = Path(out)
    geo = Geometry(h=size, w=width or size, absolute=absolute)
    rng = np.random.default_rng(seed)
    n_good = round(0.2 * count)
    kinds = ["good"] * n_good + [DEFECT_TYPES[i % 5] for i in range(count - n_good)]
    counters: dict[str, int] = {}
    min_area = max(1, min(MIN_AREA, min(geo.h, geo.w) // 8))
    for kind in kinds:
        texture = TEXTURES[int(rng.integers(len(TEXTURES)))]
        img = _finish(texture(rng, geo), rng)
        name = f"{counters.setdefault(kind, 0):04d}"
        counters[kind] += 1
        if kind != "good":
            defective, mask = _defect(kind, img, rng, geo)
            while mask.sum() < min_area:  # retry until the mask is clearly non-empty
                defective, mask = _defect(kind, img, rng, geo)
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
    parser.add_argument("--size", type=int, default=256, help="image height in pixels")
    parser.add_argument("--width", type=int, help="image width in pixels (default: --size)")
    parser.add_argument(
        "--absolute",
        action="store_true",
        help="defects and textures in absolute pixels instead of fractions of the height",
    )
    args = parser.parse_args()
    path = write_unseen_dataset(
        args.out,
        seed=args.seed,
        count=args.count,
        size=args.size,
        width=args.width,
        absolute=args.absolute,
    )
    print(path)


if __name__ == "__main__":
    main()
