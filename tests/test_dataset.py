"""Dataset discovery (MVTec-AD and pairs layouts), splitting and loading."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.dataset import Sample, discover, load_sample, load_samples, split
from model.errors import DatasetError, ImageError
from model.synth import write_dataset


def _save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _mvtec(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "mvtec", seed=1, size=64, count=10, progress=False)


def _pairs(tmp_path: Path) -> Path:
    root = tmp_path / "pairs"
    _save(root / "images" / "a.png", np.full((20, 30, 3), 90, np.uint8))
    _save(root / "images" / "b.png", np.full((20, 30, 3), 40, np.uint8))
    mask = np.zeros((20, 30), np.uint8)
    mask[5:10, 5:15] = 255
    _save(root / "masks" / "a.png", mask)
    return root


def test_discover_mvtec(tmp_path: Path) -> None:
    """All synthetic images are found with types, masks and a stable order."""
    root = _mvtec(tmp_path)
    samples = discover(root)
    assert len(samples) == 10
    for s in samples:
        assert s.defect_type == s.image_path.parent.name
        if s.defect_type == "good":
            assert s.mask_path is None
        else:
            assert s.mask_path is not None and s.mask_path.is_file()
            assert s.mask_path.parent.name == s.defect_type
    assert discover(root) == samples


def test_discover_mvtec_includes_train_good(tmp_path: Path) -> None:
    """Images under train/good/ join the samples as defect-free."""
    root = _mvtec(tmp_path)
    extra = [
        _save(root / "train" / "good" / f"t{i}.png", np.zeros((64, 64, 3), np.uint8))
        for i in range(3)
    ]
    samples = discover(root)
    assert len(samples) == 13
    by_path = {s.image_path: s for s in samples}
    for path in extra:
        assert by_path[path].defect_type == "good" and by_path[path].mask_path is None


def test_discover_mvtec_missing_mask(tmp_path: Path) -> None:
    """A defect image without its ground-truth mask is named in the error."""
    root = _mvtec(tmp_path)
    victim = next(s for s in discover(root) if s.mask_path is not None)
    assert victim.mask_path is not None
    victim.mask_path.unlink()
    with pytest.raises(DatasetError, match=re.escape(str(victim.image_path))):
        discover(root)


def test_discover_pairs(tmp_path: Path) -> None:
    """An image with a mask is a defect; one without is good."""
    root = _pairs(tmp_path)
    a, b = discover(root)
    assert a == Sample(root / "images" / "a.png", root / "masks" / "a.png", "defect")
    assert b == Sample(root / "images" / "b.png", None, "good")


def test_discover_bad_folders(tmp_path: Path) -> None:
    """Empty, unknown, missing and image-less folders raise DatasetError."""
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="unknown layout"):
        discover(empty)
    loose = tmp_path / "loose"
    _save(loose / "x.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DatasetError, match="unknown layout"):
        discover(loose)
    with pytest.raises(DatasetError, match="not a folder"):
        discover(tmp_path / "missing")
    (tmp_path / "noimg" / "images").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images found"):
        discover(tmp_path / "noimg")


def _fake_samples() -> list[Sample]:
    types = ["good"] * 16 + ["scratch"] * 10 + ["pit"] * 8 + ["stain"] * 4 + ["crack"] * 2
    return [Sample(Path(f"img/{i:03d}.png"), None, t) for i, t in enumerate(types)]


def test_split_deterministic_and_seeded() -> None:
    """Same seed gives the same split; another seed gives another."""
    samples = _fake_samples()
    assert split(samples, val_fraction=0.25, seed=0) == split(samples, val_fraction=0.25, seed=0)
    val0 = split(samples, val_fraction=0.25, seed=0)[1]
    val1 = split(samples, val_fraction=0.25, seed=1)[1]
    assert set(val0) != set(val1)


def test_split_disjoint_complete_stratified() -> None:
    """Train and val partition the samples, and every type with ≥2 images is in val."""
    samples = _fake_samples()
    train, val = split(samples, val_fraction=0.1, seed=3)
    assert not set(train) & set(val)
    assert len(train) + len(val) == len(samples)
    assert set(train) | set(val) == set(samples)
    assert {s.defect_type for s in val} == {"good", "scratch", "pit", "stain", "crack"}


def test_split_zero_and_invalid_fraction() -> None:
    """Fraction 0 keeps everything in train; 1.0 and negatives are refused."""
    samples = _fake_samples()
    train, val = split(samples, val_fraction=0.0, seed=0)
    assert val == [] and len(train) == len(samples)
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError):
            split(samples, val_fraction=bad, seed=0)


def test_load_sample_resizes_and_hashes(tmp_path: Path) -> None:
    """Image and mask come back at the requested size; sha256 is of the file bytes."""
    root = _pairs(tmp_path)
    a, b = discover(root)
    loaded = load_sample(a, 16)
    assert loaded.image.shape == (16, 16, 3) and loaded.image.dtype == np.uint8
    assert loaded.mask.shape == (16, 16) and loaded.mask.dtype == bool
    assert loaded.defective and loaded.defect_type == "defect"
    assert loaded.sha256 == hashlib.sha256(a.image_path.read_bytes()).hexdigest()
    assert not load_sample(b, 16).defective


def test_load_samples_on_synth(tmp_path: Path) -> None:
    """Every synthetic defect image loads with a non-empty mask, good ones with none."""
    loaded = load_samples(discover(_mvtec(tmp_path)), 64)
    assert len(loaded) == 10
    for item in loaded:
        assert item.image.shape == (64, 64, 3)
        assert item.defective == (item.defect_type != "good")


def test_load_sample_mask_size_mismatch(tmp_path: Path) -> None:
    """A mask whose size differs from its image names the mask file."""
    root = _pairs(tmp_path)
    _save(root / "masks" / "a.png", np.zeros((10, 10), np.uint8))
    a = discover(root)[0]
    with pytest.raises(ImageError, match=re.escape(str(root / "masks" / "a.png"))):
        load_sample(a, 16)
