"""Defect types of mask regions: naming regions, the type head, per-type rules, metrics."""

from __future__ import annotations

import numpy as np
import pytest

from model.decision import MaskRule
from model.region_features import region_crop, shape_descriptor
from model.region_types import (
    UNSPECIFIED,
    codes_from_regions,
    label_regions,
    majority_codes,
    regions_from_mask,
)
from model.type_head import TypeHead, fit_type_head, trainable_types
from model.type_metrics import TypedRegions, type_report
from model.typed_decision import apply_type_rules
from model.typed_mask import TypedMask


def _two_regions() -> np.ndarray:
    mask = np.zeros((20, 20), bool)
    mask[2:5, 2:5] = True
    mask[10:18, 10:12] = True
    return mask


def test_regions_are_named_by_their_most_common_named_code() -> None:
    mask = _two_regions()
    codes = np.zeros(mask.shape, np.uint8)
    codes[2:5, 2:5] = 3
    codes[10:18, 10:12] = 1  # unspecified ...
    codes[10, 10] = 2  # ... but one pixel names it
    labels, names = regions_from_mask(mask, codes, {1: UNSPECIFIED, 2: "scratch", 3: "dent"})
    assert labels.max() == 2
    assert names == ["dent", "scratch"]
    _, untyped = regions_from_mask(mask, None, {})
    assert untyped == [UNSPECIFIED, UNSPECIFIED]
    _, unknown = regions_from_mask(mask, np.full(mask.shape, 9, np.uint8), {1: "x"})
    assert unknown == [UNSPECIFIED, UNSPECIFIED]  # a code the table lacks names nothing


def test_code_maps_round_trip_through_region_labels() -> None:
    labels, count = label_regions(_two_regions())
    codes = codes_from_regions(labels, [7, 4])
    assert codes.dtype == np.uint8 and set(np.unique(codes)) == {0, 4, 7}
    assert majority_codes(labels, count, codes) == [7, 4]
    assert majority_codes(labels, count, codes, allowed={4}) == [0, 4]


def _clusters(n: int, centres: dict[str, list[float]], seed: int = 0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    x, y = [], []
    for name, centre in centres.items():
        x.append(rng.normal(centre, 0.3, size=(n, len(centre))))
        y += [name] * n
    return np.concatenate(x).astype(np.float32), y


def test_the_type_head_learns_separable_types_and_survives_a_round_trip() -> None:
    centres = {"crack": [0, 0, 3], "dent": [3, 0, 0], "stain": [0, 3, 0]}
    x, y = _clusters(20, centres)
    head = fit_type_head(x, y, seed=0)
    assert head is not None and head.classes == ("crack", "dent", "stain")
    test_x, test_y = _clusters(10, centres, seed=1)
    assert [n for n, _ in head.predict(test_x)] == test_y
    again = TypeHead.from_dict(head.as_dict())
    np.testing.assert_allclose(again.probabilities(test_x), head.probabilities(test_x), atol=1e-6)


def test_two_types_use_the_binary_form_correctly() -> None:
    x, y = _clusters(15, {"a": [0, 2], "b": [2, 0]})
    head = fit_type_head(x, y, seed=0)
    assert head is not None
    assert [n for n, _ in head.predict(np.array([[0, 2], [2, 0]], np.float32))] == ["a", "b"]


def test_types_with_too_few_regions_are_not_classes() -> None:
    names = ["a"] * 6 + ["b"] * 2 + [UNSPECIFIED] * 9
    assert trainable_types(names, 5) == ["a"]
    x = np.random.default_rng(0).normal(size=(len(names), 3)).astype(np.float32)
    head = fit_type_head(x, names, min_regions=5)
    assert head is not None and head.classes == ("a",)
    assert {n for n, _ in head.predict(x)} == {"a"}
    assert fit_type_head(x, [UNSPECIFIED] * len(names)) is None


def test_a_low_confidence_region_stays_unspecified() -> None:
    x, y = _clusters(10, {"a": [0, 2], "b": [2, 0]})
    head = fit_type_head(x, y)
    assert head is not None
    unsure = TypeHead.from_dict(head.as_dict() | {"min_confidence": 0.99})
    middle = np.array([[1.0, 1.0]], np.float32)
    assert unsure.predict(middle)[0][0] == UNSPECIFIED


def _typed(prob: np.ndarray, threshold: float, types: list[str]) -> TypedMask:
    labels, count = label_regions(prob > threshold)
    assert count == len(types)
    return TypedMask(prob > threshold, labels, types, [0.9] * count)


def test_a_type_rule_grows_shrinks_or_drops_only_its_own_regions() -> None:
    prob = np.zeros((30, 30), np.float32)
    prob[5:10, 5:10] = 0.6  # a stain, with a faint rim
    prob[4, 5:10] = 0.35
    prob[20:22, 5:25] = 0.6  # a scratch
    typed = _typed(prob, 0.5, ["stain", "scratch"])
    grown = apply_type_rules(prob, typed, {"stain": MaskRule(0.3, 0)}, 0.5)
    assert grown.mask[4, 5:10].all() and grown.types == ["stain", "scratch"]
    assert (grown.mask[20:22] == typed.mask[20:22]).all()
    dropped = apply_type_rules(prob, typed, {"scratch": MaskRule(0.5, 100)}, 0.5)
    assert dropped.types == ["stain"] and not dropped.mask[20:22].any()
    shrunk = apply_type_rules(prob, typed, {"stain": MaskRule(0.7, 0)}, 0.5)
    assert shrunk.types == ["scratch"]
    assert apply_type_rules(prob, typed, {}, 0.5) is typed


def test_type_metrics_count_matched_regions_and_confusions() -> None:
    labels, _ = label_regions(_two_regions())
    truth = TypedRegions(labels, ["dent", "scratch"])
    right = type_report([truth], [TypedRegions(labels, ["dent", "scratch"])])
    assert right["type_accuracy"] == 1.0 and right["type_macro_f1"] == 1.0
    assert right["per_type"]["dent"]["iou"] == 1.0
    wrong = type_report([truth], [TypedRegions(labels, ["dent", "dent"])])
    assert wrong["type_accuracy"] == 0.5
    assert wrong["confusion"] == {"labels": ["dent", "scratch"], "matrix": [[1, 0], [1, 0]]}
    assert wrong["per_type"]["scratch"]["iou"] == 0.0
    missed = type_report([truth], [TypedRegions(np.zeros_like(labels), [])])
    assert missed["regions"] == 0 and missed["type_accuracy"] is None


def test_shape_descriptors_tell_a_hairline_from_a_blob() -> None:
    image = np.full((64, 64, 3), 128, np.uint8)
    gray = image[..., 0].astype(np.float32)
    line = np.zeros((64, 64), bool)
    line[30, 5:60] = True
    blob = np.zeros((64, 64), bool)
    blob[20:32, 20:32] = True
    dark = image.copy()
    dark[blob] = 40
    d_line = shape_descriptor(gray, image.astype(np.float32), line)
    d_blob = shape_descriptor(dark[..., 0].astype(np.float32), dark.astype(np.float32), blob)
    assert d_line[3] < 0.2 < d_blob[3]  # minor / major axis
    assert d_blob[8] < -1.0 < d_line[8]  # darker than its surroundings


@pytest.mark.parametrize("where", [(0, 0), (60, 60), (30, 30)])
def test_region_crops_are_square_at_the_encoder_size_even_at_image_edges(where) -> None:  # type: ignore[no-untyped-def]
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    region = np.zeros((64, 64), bool)
    y, x = where
    region[y : y + 3, x : x + 3] = True
    crop = region_crop(image, region, 32)
    assert crop.image.shape == (32, 32, 3) and crop.region.any()
    assert not (crop.region & crop.ring).any() and crop.ring.any()


def test_only_the_largest_regions_are_typed_when_a_mask_breaks_into_specks(
    tiny_encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    from model import typed_decision, typed_mask
    from model.checkpoint import new_bundle
    from model.region_features import describe_regions

    bundle = new_bundle(tiny_encoder, label_sigma=2.0)
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[2:12, 2:12] = True  # the largest region
    for k in range(5):
        mask[20 + 3 * k, 40 : 42 + k] = True  # specks, each its own region
    labels, count = label_regions(mask)
    regions = [labels == i for i in range(1, count + 1)]
    descriptors = describe_regions(bundle, image, regions, cache=None)
    head = fit_type_head(descriptors, ["square"] + ["speck"] * 5, min_regions=1)
    assert head is not None
    monkeypatch.setattr(typed_mask, "MAX_TYPED_REGIONS", 2)
    typed = typed_decision.classify_by_descriptors(bundle, head, image, mask, cache=None)
    assert len(typed.types) == count == 6
    assert typed.types[0] != UNSPECIFIED  # the 10 × 10 square is typed
    assert typed.types.count(UNSPECIFIED) == 4  # the largest speck typed, four left out
    assert typed.types[-1] != UNSPECIFIED  # ... the one 6 px wide (labels run row-major)
