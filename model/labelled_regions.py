"""The labelled regions of a training or test sample, each with its defect type.

A sample's types come from its type-code map (region by region) when it has one, else
from the folder it sits in (MVTec's `test/<type>/`, pairs' `masks/<type>/`); a sample
whose folder names no type ("defect", or defect-free "good") has unspecified regions.
"""

from __future__ import annotations

from collections.abc import Sequence

from model.dataset import GOOD, LoadedSample
from model.region_types import UNSPECIFIED, label_regions, regions_from_mask
from model.type_metrics import TypedRegions

UNTYPED = (GOOD, "defect")  # sample types that name no defect type


def true_regions(item: LoadedSample) -> TypedRegions:
    """The item's labelled regions and their types (model space)."""
    if item.types is not None:
        labels, names = regions_from_mask(item.mask, item.types, item.type_names)
        return TypedRegions(labels, names)
    labels, count = label_regions(item.mask)
    name = UNSPECIFIED if item.defect_type in UNTYPED else item.defect_type
    return TypedRegions(labels, [name] * count)


def has_types(items: Sequence[LoadedSample]) -> bool:
    """Whether any item names a defect type (else a model is trained untyped)."""
    return any(t != UNSPECIFIED for it in items for t in true_regions(it).types)
