"""Defect types in exports: which type each region of a label carries, the image's type,
the index mask written beside the binary one, and folder names safe on every file system.

An export must be readable without the database, so it carries the type table itself
(`types.json`) and names folders after types; the region rule is the product's one
(`model.region_types`: a region's type is its most common named code), so an exported
region has the type that training and review give it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from model.dataset import GOOD
from model.region_types import UNSPECIFIED, label_regions, region_type_names


class TypeRow(Protocol):
    """What an export reads of a `defect_types` row."""

    id: int
    name: str
    color: str


@dataclass(frozen=True)
class ExportType:
    """One defect type as the export writes it."""

    id: int
    name: str
    color: str


@dataclass(frozen=True)
class TypeTable:
    """The project's defect types, read once per export so every item sees the same table."""

    types: tuple[ExportType, ...]
    unspecified_id: int

    @classmethod
    def of(cls, rows: Iterable[TypeRow], unspecified_id: int) -> TypeTable:
        types = tuple(ExportType(int(r.id), str(r.name), str(r.color)) for r in rows)
        if not any(t.id == unspecified_id for t in types):  # the table always has it; be sure
            types = (ExportType(unspecified_id, UNSPECIFIED, "#ffcc00"), *types)
        return cls(tuple(sorted(types, key=lambda t: t.id)), unspecified_id)

    @property
    def names(self) -> dict[int, str]:
        return {t.id: t.name for t in self.types}

    def as_json(self) -> dict[str, dict[str, str]]:
        """`types.json`: {id: {name, color}}, ids as strings (JSON keys)."""
        return {str(t.id): {"name": t.name, "color": t.color} for t in self.types}


@dataclass(frozen=True)
class TypedRegions:
    """A label's 8-connected regions (label i + 1) and the type id of each (index i)."""

    labels: np.ndarray
    type_ids: list[int]

    def index_mask(self) -> np.ndarray:
        """uint8 index mask: every pixel of a region holds its type id, background 0."""
        lut = np.zeros(len(self.type_ids) + 1, dtype=np.uint8)
        lut[1:] = np.asarray(self.type_ids, dtype=np.uint8)
        return lut[self.labels]

    def region_mask(self, index: int) -> np.ndarray:
        return self.labels == index + 1

    def dominant(self, unspecified_id: int) -> int | None:
        """The image's type: the named type covering the most pixels (ties: the lower id);
        unspecified only when no region is named; None for a defect-free label."""
        if not self.type_ids:
            return None
        areas = np.bincount(self.labels.ravel(), minlength=len(self.type_ids) + 1)[1:]
        by_type: Counter[int] = Counter()
        for type_id, area in zip(self.type_ids, areas, strict=True):
            by_type[type_id] += int(area)
        named = {t: a for t, a in by_type.items() if t != unspecified_id}
        if not named:
            return unspecified_id
        return min(named, key=lambda t: (-named[t], t))


def typed_regions(mask: np.ndarray, codes: np.ndarray | None, table: TypeTable) -> TypedRegions:
    """The regions of `mask` and their types from the type mask `codes` (None: untyped, every
    region unspecified); ValueError when the type mask is not the mask's size."""
    if codes is not None and codes.shape != mask.shape:
        raise ValueError(f"type mask is {codes.shape} but the mask is {mask.shape}")
    labels, count = label_regions(mask)
    names = table.names
    ids = {name: type_id for type_id, name in names.items()}
    region_names = region_type_names(labels, count, codes, names)
    return TypedRegions(labels, [ids.get(n, table.unspecified_id) for n in region_names])


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul"} | {
    f"{p}{i}" for p in ("com", "lpt") for i in range(10)
}


def _safe(name: str) -> str:
    safe = _UNSAFE.sub("_", name.strip()).strip("._-")[:50] or "type"
    return f"{safe}_" if safe.lower() in _WINDOWS_RESERVED else safe


def folder_names(types: Mapping[int, str]) -> dict[int, str]:
    """{type id: folder name}: names reduced to letters, digits, '.', '_' and '-', unique
    even on case-insensitive file systems (a later id that would collide gets its id
    appended), never "good" (the MVTec layout's folder of defect-free images)."""
    taken = {GOOD.casefold()}
    folders: dict[int, str] = {}
    for type_id in sorted(types):
        base = _safe(types[type_id])
        candidate, n = base, 0
        while candidate.casefold() in taken:
            n += 1
            candidate = f"{base}-{type_id}" if n == 1 else f"{base}-{type_id}-{n}"
        taken.add(candidate.casefold())
        folders[type_id] = candidate
    return folders
