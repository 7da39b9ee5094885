"""The independent benchmark generator: rectangular images and absolute-pixel defects.

The large-image quality benchmark only means something if a hairline on a 1024 × 1024
image is as thin as a camera would see it (so squashing the image loses it), so these
tests pin the geometry of the drawn masks, not just that files appear.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage.morphology import skeletonize

from tests.benchmarks.unseen_synth import DEFECT_TYPES, write_unseen_dataset


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def _mask(root: Path, kind: str, index: int = 0) -> np.ndarray:
    with Image.open(root / "ground_truth" / kind / f"{index:04d}_mask.png") as m:
        return np.asarray(m) > 0


@pytest.fixture(scope="module")
def absolute_1024(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One good image and one of each defect type at 1024 × 1024, absolute pixels."""
    return write_unseen_dataset(
        tmp_path_factory.mktemp("abs1024"), seed=0, count=6, size=1024, absolute=True
    )


@pytest.mark.parametrize("absolute", [False, True])
def test_rectangular_shape(tmp_path: Path, absolute: bool) -> None:
    """Images are `size` high and `width` wide; masks match and are binary and non-empty."""
    root = write_unseen_dataset(tmp_path, seed=1, count=10, size=64, width=160, absolute=absolute)
    images = sorted((root / "test").glob("*/*.png"))
    assert len(images) == 10
    assert sum(p.parent.name == "good" for p in images) == 2  # the 20 % defect-free share
    assert {p.parent.name for p in images} - {"good"} == set(DEFECT_TYPES)
    for path in images:
        with Image.open(path) as im:
            assert im.size == (160, 64) and im.mode == "RGB"
        if path.parent.name != "good":
            mask = _mask(root, path.parent.name, int(path.stem))
            assert mask.shape == (64, 160) and mask.any()


def test_absolute_hairline_is_thin(absolute_1024: Path) -> None:
    """On a 1024² image a hairline is 1–2 px wide, not a fraction of the image."""
    mask = _mask(absolute_1024, "hairline")
    # Distance to the background: 1 for a 1 px line, ≤ √2 for 2 px, 2 for OpenCV's 3 px.
    depth = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    assert depth.max() <= 1.5
    skeleton_px = int(skeletonize(mask).sum())
    assert skeleton_px >= 30  # a scratch, not a speck
    assert mask.sum() / skeleton_px <= 2.5  # mean width along the scratch


def test_absolute_particles_are_small(absolute_1024: Path) -> None:
    """Contamination is specks and short fibres of a few pixels, spread over tens of pixels."""
    mask = _mask(absolute_1024, "contamination").astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    assert n - 1 >= 2  # several particles
    areas = stats[1:, cv2.CC_STAT_AREA]
    extents = np.maximum(stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT])
    assert np.median(areas) <= 30
    assert extents.max() <= 30


def test_absolute_blobs_keep_their_pixel_size(absolute_1024: Path) -> None:
    """Dents, blobs and chips stay a few tens of pixels across on a large image."""
    for kind in ("dent", "blob", "chip"):
        ys, xs = np.nonzero(_mask(absolute_1024, kind))
        extent = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
        assert 6 <= extent <= 90, (kind, extent)


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    """Absolute rectangular output is deterministic per seed; another seed differs."""
    kwargs = {"count": 5, "size": 48, "width": 96, "absolute": True}
    a = _files(write_unseen_dataset(tmp_path / "a", seed=4, **kwargs))
    b = _files(write_unseen_dataset(tmp_path / "b", seed=4, **kwargs))
    c = _files(write_unseen_dataset(tmp_path / "c", seed=5, **kwargs))
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a if k.startswith("test"))


def test_default_is_square_relative(tmp_path: Path) -> None:
    """Leaving out `width` and `absolute` is the same as a square, relative-scale call."""
    default = _files(write_unseen_dataset(tmp_path / "d", seed=0, count=10, size=64))
    explicit = _files(
        write_unseen_dataset(tmp_path / "e", seed=0, count=10, size=64, width=64, absolute=False)
    )
    assert default == explicit
