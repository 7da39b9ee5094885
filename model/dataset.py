"""Datasets on disk: the MVTec-AD layout and a plain images/ + masks/ pairs layout.

MVTec-AD: `train/good/*`, `test/<type>/*`, `ground_truth/<type>/<stem>_mask.png`.
Pairs: `images/<stem>.<ext>` and `masks/<stem>.<ext>`; an image with no mask is defect-free.
A pairs mask in `masks/<type>/` has that type; `types/<stem>.png` (uint8 codes) with
`types.json` ({code: {"name": …}}) types each region of a mask separately, as the app's
export writes them.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from model.errors import DatasetError
from model.geometry import Geometry
from model.hashing import sha256_bytes
from model.images import IMAGE_EXTENSIONS, decode_image, read_codes, read_mask

GOOD = "good"
TYPES_DIR = "types"  # pairs layout: uint8 type-code maps beside masks/
TYPES_JSON = "types.json"  # and the names of their codes


@dataclass(frozen=True)
class Sample:
    """One image on disk, its mask file (None = defect-free) and its defect type (the
    folder it sits in; "defect" when the layout names none)."""

    image_path: Path
    mask_path: Path | None
    defect_type: str
    # A pairs dataset's type-code map (`types/<stem>.png`) and its `types.json` names.
    types_path: Path | None = None
    type_names: Mapping[int, str] = field(default_factory=dict, hash=False)


@dataclass
class LoadedSample:
    """A sample read into memory in the model's space (`model.geometry`): squashed to the
    input size for a fit model, else at the model's pixel scale (any size)."""

    sample: Sample
    sha256: str
    image: np.ndarray  # uint8 (H, W, 3)
    mask: np.ndarray  # bool (H, W)
    # Defect types (`model.region_types`): uint8 codes beside the mask and their names;
    # None: every region has the sample's own type (its folder), or none for "defect".
    types: np.ndarray | None = None
    type_names: Mapping[int, str] = field(default_factory=dict)

    @property
    def defect_type(self) -> str:
        return self.sample.defect_type

    @property
    def defective(self) -> bool:
        return bool(self.mask.any())


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def _discover_mvtec(root: Path) -> list[Sample]:
    samples: list[Sample] = []
    good_train = root / "train" / GOOD
    if good_train.is_dir():
        samples += [Sample(p, None, GOOD) for p in _images_in(good_train)]
    test = root / "test"
    if test.is_dir():
        for type_dir in sorted(d for d in test.iterdir() if d.is_dir()):
            for image in _images_in(type_dir):
                if type_dir.name == GOOD:
                    samples.append(Sample(image, None, GOOD))
                    continue
                mask = root / "ground_truth" / type_dir.name / f"{image.stem}_mask.png"
                if not mask.is_file():
                    raise DatasetError(f"{image}: its mask {mask} is missing")
                samples.append(Sample(image, mask, type_dir.name))
    return samples


def _pair_masks(masks_dir: Path) -> dict[str, tuple[Path, str]]:
    """stem → (mask file, type): `masks/<stem>` is untyped ("defect"), `masks/<type>/<stem>`
    names its type by the folder, as MVTec's `ground_truth/<type>/` does."""
    if not masks_dir.is_dir():
        return {}
    found: dict[str, tuple[Path, str]] = {p.stem: (p, "defect") for p in _images_in(masks_dir)}
    for type_dir in sorted(d for d in masks_dir.iterdir() if d.is_dir()):
        for mask in _images_in(type_dir):
            if mask.stem in found:
                raise DatasetError(f"{mask}: a second mask for image {mask.stem!r}")
            found[mask.stem] = (mask, type_dir.name)
    return found


def _type_names(root: Path) -> dict[int, str]:
    """{code: name} of a pairs dataset's `types.json` ({code: {"name": …}}), {} if none."""
    path = root / TYPES_JSON
    if not path.is_file():
        return {}
    try:
        table = json.loads(path.read_text())
        return {int(code): str(entry["name"]) for code, entry in table.items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path}: not a table of type codes ({exc})") from exc


def _discover_pairs(root: Path) -> list[Sample]:
    masks = _pair_masks(root / "masks")
    names = _type_names(root)
    typed = {p.stem: p for p in _images_in(root / TYPES_DIR)} if names else {}
    samples = []
    for image in _images_in(root / "images"):
        mask, kind = masks.get(image.stem, (None, GOOD))
        types = typed.get(image.stem) if mask is not None else None
        samples.append(Sample(image, mask, kind, types, names if types else {}))
    return samples


def discover(root: Path | str) -> list[Sample]:
    """All samples under `root`, in a stable order; DatasetError if none or no known layout."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    if (root / "images").is_dir():
        samples = _discover_pairs(root)
    elif (root / "test").is_dir() or (root / "train").is_dir():
        samples = _discover_mvtec(root)
    else:
        raise DatasetError(
            f"{root}: unknown layout (expected MVTec-AD test/<type>/ + ground_truth/, "
            "or images/ + masks/)"
        )
    if not samples:
        raise DatasetError(f"{root}: no images found")
    return samples


SplitItem = TypeVar("SplitItem", Sample, LoadedSample)


def _split_key(item: Sample | LoadedSample) -> str:
    return str((item.sample if isinstance(item, LoadedSample) else item).image_path)


def check_val_fraction(val_fraction: float) -> None:
    """Refuse a validation share outside [0, 1) before any image is read."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val fraction must be in [0, 1), got {val_fraction}")


def split(
    items: Sequence[SplitItem], *, val_fraction: float, seed: int
) -> tuple[list[SplitItem], list[SplitItem]]:
    """Deterministic split stratified by defect type; every type with ≥2 images gets a val one.

    Samples and the same samples once loaded split alike (same key, same type), so every
    training run draws the same validation set from the same items and seed.
    """
    check_val_fraction(val_fraction)
    by_type: dict[str, list[SplitItem]] = defaultdict(list)
    for item in items:
        by_type[item.defect_type].append(item)
    rng = random.Random(seed)
    train: list[SplitItem] = []
    val: list[SplitItem] = []
    for defect_type in sorted(by_type):
        group = sorted(by_type[defect_type], key=_split_key)
        rng.shuffle(group)
        n_val = round(len(group) * val_fraction)
        if val_fraction > 0 and n_val == 0 and len(group) >= 2:
            n_val = 1
        val += group[:n_val]
        train += group[n_val:]
    return train, val


def load_sample(sample: Sample, space: Geometry | int) -> LoadedSample:
    """Read, validate and bring one sample into model space (a bare input size means fit);
    the mask is checked against the image's own size first."""
    data = sample.image_path.read_bytes()
    image = decode_image(data, name=str(sample.image_path))
    if sample.mask_path is not None:
        mask = read_mask(sample.mask_path, shape=image.shape[:2])
    else:
        mask = np.zeros(image.shape[:2], dtype=bool)
    geometry = Geometry.of(space)
    types = None
    if sample.types_path is not None:
        codes = read_codes(sample.types_path, shape=image.shape[:2])
        types = geometry.codes_to_model(codes)
    return LoadedSample(
        sample=sample,
        sha256=sha256_bytes(data),
        image=geometry.image_to_model(image),
        mask=geometry.mask_to_model(mask),
        types=types,
        type_names=dict(sample.type_names),
    )


def load_samples(
    samples: Iterable[Sample], space: Geometry | int, *, progress: bool = False
) -> list[LoadedSample]:
    """Load many samples into model space with an optional progress bar."""
    items = list(samples)
    loaded = []
    with tqdm(total=len(items), desc="loading images", unit="img", disable=not progress) as bar:
        for s in items:
            loaded.append(load_sample(s, space))
            bar.update(1)
    return loaded


def image_shapes(samples: Iterable[Sample]) -> list[tuple[int, int]]:
    """(H, W) of each sample's image from its header, without decoding the pixels (what
    the "auto" scale is chosen from)."""
    shapes = []
    for s in samples:
        try:
            with Image.open(s.image_path) as img:
                shapes.append((img.height, img.width))
        except (UnidentifiedImageError, OSError) as exc:
            raise DatasetError(f"{s.image_path}: not a readable image ({exc})") from exc
    return shapes
