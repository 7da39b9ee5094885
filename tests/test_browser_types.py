"""Defect types on the review page in headless Chromium: a click on the Regions picture
selects the region under it, the type's shortcut key retypes it, and Save correction stores
the new type in the correction's type mask."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.test_browser import (  # noqa: F401  (`review`: the browser fixture)
    CHROMIUM,
    SIZE,
    WAIT_MS,
    Review,
    review,
    wait_for_image,
)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")

REGION_A = (slice(20, 40), slice(10, 60))
REGION_B = (slice(80, 100), slice(70, 120))


def _types(page_app: Review) -> dict[str, int]:
    services = page_app.services
    have = {t["name"] for t in services.defect_types()}
    for name, key in (("scratch", "1"), ("dent", "2")):
        if name not in have:
            services.add_defect_type(services.user("admin"), name, key=key)
    return {t["name"]: t["id"] for t in services.defect_types()}


def _predict_two_regions(page_app: Review, image_id: int, scratch: int, dent: int) -> None:
    """Store a newest prediction of the image: region A a scratch, region B a dent."""
    mask = np.zeros((SIZE, SIZE), bool)
    codes = np.zeros((SIZE, SIZE), np.uint8)
    mask[REGION_A] = mask[REGION_B] = True
    codes[REGION_A], codes[REGION_B] = scratch, dent
    page_app.services.repo.images.add_prediction(
        image_id,
        mask=mask,
        heatmap=mask.astype(np.float32),
        defect_score=0.9,
        uncertainty=0.5,
        model_version_id=None,
        types=codes,
        regions=[(scratch, 1000, 0.8), (dent, 1000, 0.6)],
    )


def _click_picture(page: Any, elem_id: str, point: tuple[int, int]) -> None:
    """Click image pixel `point` of a picture shown as Gradio shows it (scaled down to fit
    its box, never up, centred)."""
    x, y, scale = page.evaluate(
        """id => { const img = document.querySelector(`#${id} img`);
        const box = img.getBoundingClientRect();
        const s = Math.min(box.width / img.naturalWidth, box.height / img.naturalHeight, 1);
        return [box.x + (box.width - img.naturalWidth * s) / 2,
                box.y + (box.height - img.naturalHeight * s) / 2, s]; }""",
        elem_id,
    )
    page.mouse.click(x + (point[0] + 0.5) * scale, y + (point[1] + 0.5) * scale)


def _wait_status(page: Any, text: str) -> None:
    page.wait_for_function(
        "t => (document.querySelector('#review-status')?.innerText || '').includes(t)",
        arg=text,
        timeout=WAIT_MS,
    )


def test_a_clicked_region_takes_the_pressed_types_key_and_is_saved_with_it(
    review: Review,  # noqa: F811  (the imported fixture)
) -> None:
    ids = _types(review)
    scratch, dent = ids["scratch"], ids["dent"]
    image_id = review.ingest()
    _predict_two_regions(review, image_id, scratch, dent)
    page = review.open(image_id)
    page.wait_for_function(
        "() => (document.querySelector('#region-list')?.innerText || '').includes('dent')",
        timeout=WAIT_MS,
    )
    before = {c.id for c in review.stored(image_id)}

    _click_picture(page, "regions", (95, 90))  # inside region B, the dent
    _wait_status(page, "Region 2 selected (dent)")
    page.wait_for_function(
        "() => (document.querySelector('#region-list .selected')?.innerText || '').includes('2')",
        timeout=WAIT_MS,
    )
    page.keyboard.press("1")  # scratch's key
    _wait_status(page, "Region 2 is now scratch")
    assert page.locator(f'#type-picker input[value="{scratch}"]').is_checked()
    page.keyboard.press("s")
    correction = review.wait_new_correction(image_id, before)
    page.close()

    assert correction.action.value == "corrected" and correction.types_sha256 is not None
    codes = review.services.type_mask(image_id, "correction")
    assert (codes[REGION_B] == scratch).all(), np.unique(codes[REGION_B])
    assert (codes[REGION_A] == scratch).all()  # kept its predicted type
    assert not codes[~review.saved_mask(correction)].any()


def test_a_type_first_named_by_a_prediction_joins_the_picker_when_its_image_is_shown(
    review: Review,  # noqa: F811  (the imported fixture)
) -> None:
    ids = _types(review)
    first = review.ingest()
    _predict_two_regions(review, first, ids["scratch"], ids["dent"])
    page = review.open(first)
    assert page.locator("#type-picker").inner_text().count("pit") == 0
    # A model's first prediction naming "pit" adds the type while the page is open.
    pit = review.services.repo.types.ensure(["pit"])["pit"]
    later = review.ingest()
    _predict_two_regions(review, later, pit, ids["dent"])
    page.keyboard.press("d")  # defect-free: the first image is done, the next one shows
    wait_for_image(page, later)
    page.wait_for_function(
        "() => (document.querySelector('#type-picker')?.innerText || '').includes('pit')",
        timeout=WAIT_MS,
    )
    page.close()
