"""Synthetic dataset generation and the exact flip/rotation transforms."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.augment import TRANSFORMS, apply_transform, fixed_views
from model.synth import DEFECT_TYPES, make_surface, write_dataset


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


@pytest.mark.parametrize("count", [10, 12, 23])
def test_counts_and_types(tmp_path: Path, count: int) -> None:
    """`count` images, round(count*0.2) good ones, every defect type present."""
    root = write_dataset(tmp_path, seed=0, size=48, count=count, progress=False)
    images = sorted((root / "test").glob("*/*.png"))
    assert len(images) == count
    good = [p for p in images if p.parent.name == "good"]
    assert len(good) == round(count * 0.2)
    assert {p.parent.name for p in images} - {"good"} == set(DEFECT_TYPES)


def test_masks_are_binary_nonempty_and_sized(tmp_path: Path) -> None:
    """Each defect image has a 0/255 mask of its size with some defect pixels."""
    root = write_dataset(tmp_path, seed=2, size=48, count=15, progress=False)
    for image_path in (root / "test").glob("*/*.png"):
        kind = image_path.parent.name
        mask_path = root / "ground_truth" / kind / f"{image_path.stem}_mask.png"
        if kind == "good":
            assert not mask_path.exists()
            continue
        with Image.open(mask_path) as m, Image.open(image_path) as im:
            mask = np.asarray(m)
            assert mask.shape == im.size[::-1]
        assert set(np.unique(mask).tolist()) == {0, 255}


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    """The same seed writes byte-identical files; another seed differs."""
    a = _files(write_dataset(tmp_path / "a", seed=5, size=32, count=10, progress=False))
    b = _files(write_dataset(tmp_path / "b", seed=5, size=32, count=10, progress=False))
    c = _files(write_dataset(tmp_path / "c", seed=6, size=32, count=10, progress=False))
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a if k.startswith("test"))


def test_clean_surface() -> None:
    """A defect-free surface is uint8 RGB with an empty boolean mask."""
    image, mask = make_surface(np.random.default_rng(0), 40, None)
    assert image.shape == (40, 40, 3) and image.dtype == np.uint8
    assert mask.shape == (40, 40) and mask.dtype == bool
    assert not mask.any()


@pytest.mark.parametrize("kind", DEFECT_TYPES)
def test_defect_changes_pixels_only_inside_mask(kind: str) -> None:
    """With the same seed the texture matches the clean one outside the mask."""
    clean, _ = make_surface(np.random.default_rng(9), 64, None)
    image, mask = make_surface(np.random.default_rng(9), 64, kind)
    assert mask.any() and mask.dtype == bool
    np.testing.assert_array_equal(image[~mask], clean[~mask])
    assert (image[mask] != clean[mask]).any()


@pytest.mark.parametrize(("count", "size"), [(0, 64), (5, 16)])
def test_invalid_arguments(tmp_path: Path, count: int, size: int) -> None:
    """count < 1 or size < 32 raise ValueError and write nothing."""
    with pytest.raises(ValueError):
        write_dataset(tmp_path / "out", count=count, size=size, progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", TRANSFORMS)
@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 3)])
def test_transforms_are_involutions(name: str, shape: tuple[int, ...]) -> None:
    """Applying any transform twice gives back the original array."""
    arr = np.arange(np.prod(shape)).reshape(shape)
    once = apply_transform(arr, name)
    swapped = name in ("transpose", "transverse")
    assert once.shape == ((shape[1], shape[0], *shape[2:]) if swapped else arr.shape)
    np.testing.assert_array_equal(apply_transform(once, name), arr)


def test_transform_directions() -> None:
    """hflip reverses columns, vflip rows, rot180 both; transpose swaps the axes and
    transverse mirrors across the other diagonal."""
    arr = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(apply_transform(arr, "hflip")[:, 0], arr[:, 3])
    np.testing.assert_array_equal(apply_transform(arr, "hflip")[0], [3, 2, 1, 0])
    np.testing.assert_array_equal(apply_transform(arr, "vflip")[0], arr[2])
    assert apply_transform(arr, "rot180")[0, 0] == arr[2, 3]
    assert not np.array_equal(apply_transform(arr, "hflip"), arr)
    np.testing.assert_array_equal(apply_transform(arr, "transpose"), arr.T)
    assert apply_transform(arr, "transverse")[0, 0] == arr[2, 3]
    assert apply_transform(arr, "transverse")[3, 0] == arr[2, 0]


def test_unknown_transform() -> None:
    """An unknown transform name raises ValueError naming it."""
    with pytest.raises(ValueError, match="spin"):
        apply_transform(np.zeros((2, 2)), "spin")


@pytest.mark.parametrize("views", [1, 2, 3])
def test_fixed_views_keep_identity_and_cover_every_transform(views: int) -> None:
    chosen = fixed_views(300, TRANSFORMS, views, random.Random(0))
    assert all(v[0] == "identity" and len(set(v)) == len(v) == views for v in chosen)
    if views > 1:
        assert {t for v in chosen for t in v} == set(TRANSFORMS)
    assert chosen == fixed_views(300, TRANSFORMS, views, random.Random(0))
    assert fixed_views(2, ("identity",), 3, random.Random(0)) == [("identity",)] * 2
