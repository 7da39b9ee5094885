"""The review page in headless Chromium (Debian's package, driven by Playwright): one app and
one signed-in browser for the module. Painting keeps the predicted mask, the review
shortcuts, the deep link, click-to-refine and the history panel; what the page stores is
checked in the database."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from storage.masks import decode_mask
from tests.waiting import wait_for
from tests.webapp_fixtures import PASSWORD, RunningApp

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT = Path(__file__).resolve().parents[1] / "build" / "e2e-review.png"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
WAIT_MS = 60_000  # a guard against a hung page, not a measurement
SIZE = 128
COVERAGE = (0.25, 0.55)  # share of the image the calibrated prediction marks as defect
UNDO_ENABLED = '#mask-editor button[aria-label="Undo"]:not([disabled])'

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (apt-get install chromium); .ci/run installs it",
)


def _image(variant: int = 0, size: tuple[int, int] = (SIZE, SIZE)) -> bytes:
    """The same textured surface with a dark scratch; `variant` changes one corner pixel, so
    every variant is a new image with (nearly) the same prediction."""
    rng = np.random.default_rng(7)
    img = rng.integers(100, 150, (SIZE, SIZE, 3), dtype=np.uint8)
    img[60:64, 10:120] = 20
    img[0, 0] = (variant % 256, variant // 256 % 256, 99)
    pil = Image.fromarray(img)
    if size != (SIZE, SIZE):
        pil = pil.resize(size)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def _png_mask(mask: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class Review:
    """The app with a served model calibrated to mark part of each test image, and a
    browser context signed in as the inspector."""

    app: RunningApp
    context: Any  # playwright BrowserContext
    browser: Any
    counter: list[int]

    @property
    def services(self):  # type: ignore[no-untyped-def]
        return self.app.app.services

    def ingest(self, size: tuple[int, int] = (SIZE, SIZE)) -> int:
        self.counter[0] += 1
        image_id = self.services.ingest(_image(self.counter[0], size), "e2e.png", source="test").id
        self.services.wait_for_predictions()
        return int(image_id)

    def prediction(self, image_id: int) -> np.ndarray:
        return self.services.mask(image_id, "prediction")

    def stored(self, image_id: int) -> list[Any]:
        return list(self.services.repo.reviews.corrections_for(image_id))

    def saved_mask(self, correction: Any) -> np.ndarray:
        return decode_mask(self.services.repo.blobs.get(correction.mask_sha256))

    def wait_new_correction(self, image_id: int, before: set[int]) -> Any:
        new = wait_for(
            lambda: [c for c in self.stored(image_id) if c.id not in before],
            f"a new correction of image {image_id}",
        )
        assert len(new) == 1, new
        return new[0]

    def leased_to_inspector(self) -> int:
        """Lease the inspector's next queue image through the REST API; its id."""
        with self.app.client("inspector") as client:
            response = client.get("/api/queue/next?order=arrival")
        assert response.status_code == 200, response.text
        return int(response.json()["id"])

    def open(self, image_id: int):  # type: ignore[no-untyped-def]
        page = self.context.new_page()
        page.goto(f"{self.app.url}/?image={image_id}")
        wait_for_image(page, image_id)
        return page


def wait_for_image(page: Any, image_id: int) -> None:
    """Until the review panel shows `image_id` with its overlay and editor canvas."""
    page.wait_for_function(
        "id => { const info = document.querySelector('#image-info');"
        " return info && info.innerText.includes(`Image ${id} `); }",
        arg=image_id,
        timeout=WAIT_MS,
    )
    page.wait_for_selector("#overlay img", timeout=WAIT_MS)
    page.wait_for_selector("#mask-editor canvas", timeout=WAIT_MS)
    # The editor zooms to fit once it has loaded the image: test images (at most 128 px) are
    # then shown above 100 %.
    page.wait_for_function(
        "() => parseInt(document.querySelector('#mask-editor .zoom-number')?.innerText) > 100",
        timeout=WAIT_MS,
    )


def shown_image(page: Any) -> int | None:
    text = page.inner_text("#image-info")
    if "Image " not in text:
        return None
    return int(text.split("Image ", 1)[1].split()[0])


def sign_in(page: Any) -> None:
    page.wait_for_selector("input[type=password]", timeout=WAIT_MS)
    page.fill("input[type=text]", "inspector")
    page.fill("input[type=password]", PASSWORD)
    page.keyboard.press("Enter")


def _calibrate(app: RunningApp) -> None:
    """Set the served (untrained) model's mask threshold so that its prediction marks part
    of the test image: a real, non-empty and not full mask."""
    served = app.app.services.models.current
    assert served is not None
    meta = served.predictor.bundle.meta
    meta.min_defect_area = 0
    rgb = np.asarray(Image.open(io.BytesIO(_image(0))).convert("RGB"))
    low, high = 0.0, 1.0
    for _ in range(24):
        meta.mask_threshold = (low + high) / 2
        share = float(served.predictor.predict(rgb).mask.mean())
        if COVERAGE[0] <= share <= COVERAGE[1]:
            return
        low, high = (
            (meta.mask_threshold, high) if share > COVERAGE[1] else (low, meta.mask_threshold)
        )
    raise AssertionError(f"no threshold gives a partial mask (last share {share:.3f})")


@pytest.fixture(scope="module")
def review(running_app: RunningApp) -> Iterator[Review]:
    from playwright.sync_api import sync_playwright

    _calibrate(running_app)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.goto(f"{running_app.url}/")
        sign_in(page)
        page.wait_for_selector("#image-info", timeout=WAIT_MS)
        page.close()
        yield Review(running_app, context, browser, [0])
        context.close()
        browser.close()


def paint_stroke(page: Any) -> None:
    """A horizontal brush stroke across the middle of the editor canvas, where the image is;
    returns once the editor has recorded it (its Undo button becomes available)."""
    assert page.locator(UNDO_ENABLED).count() == 0
    canvas = page.locator("#mask-editor canvas").first
    box = canvas.bounding_box()
    assert box is not None
    y = box["y"] + box["height"] * 0.25
    page.mouse.move(box["x"] + box["width"] * 0.45, y)
    page.mouse.down()
    for i in range(1, 5):  # the editor draws the segments between the moves
        page.mouse.move(box["x"] + box["width"] * (0.45 + 0.0245 * i), y)
    page.mouse.up()
    page.wait_for_selector(UNDO_ENABLED, timeout=WAIT_MS)


def test_painting_keeps_the_predicted_mask(review: Review) -> None:
    image_id = review.ingest()
    predicted = review.prediction(image_id)
    assert COVERAGE[0] / 2 < predicted.mean() < min(1.0, COVERAGE[1] * 1.5), predicted.mean()
    page = review.open(image_id)
    before = {c.id for c in review.stored(image_id)}
    paint_stroke(page)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)  # heatmap + predicted mask + stroke
    page.keyboard.press("s")  # the Save-correction shortcut
    correction = review.wait_new_correction(image_id, before)
    page.close()
    assert correction.author == "inspector" and correction.action.value == "corrected"
    saved = review.saved_mask(correction)
    assert saved.shape == predicted.shape
    lost = int((predicted & ~saved).sum())
    assert lost == 0, f"{lost} of {int(predicted.sum())} predicted pixels were dropped on save"
    assert (saved & ~predicted).sum() > 0, "the painted stroke is not in the saved mask"
    assert SCREENSHOT.is_file()


@pytest.mark.parametrize(
    ("key", "action"),
    [("a", "accepted"), ("d", "defect_free"), ("k", "skipped"), ("n", None)],
    ids=["accept", "defect-free", "skip", "next"],
)
def test_review_shortcuts_store_their_action_and_move_on(
    review: Review, key: str, action: str | None
) -> None:
    review.ingest()  # the queue is never empty here
    held = review.leased_to_inspector()  # the image the queue gives the inspector next
    image_id = review.ingest()
    assert image_id != held
    predicted = review.prediction(image_id)
    page = review.open(image_id)
    before = {c.id for c in review.stored(image_id)}
    page.keyboard.press(key)
    page.wait_for_function(
        "id => { const info = document.querySelector('#image-info');"
        " return info && info.innerText.includes(`Image ${id} `); }",
        arg=held,
        timeout=WAIT_MS,
    )  # moved on to the inspector's next image
    if action is None:  # Next stores nothing
        page.close()
        assert {c.id for c in review.stored(image_id)} == before
        assert review.services.repo.images.get_image(image_id).status.value == "pending"
        return
    correction = review.wait_new_correction(image_id, before)
    page.close()
    assert correction.author == "inspector" and correction.action.value == action
    status = review.services.repo.images.get_image(image_id).status.value
    assert status == ("skipped" if action == "skipped" else "reviewed")
    if action == "accepted":  # the predicted mask becomes the label
        np.testing.assert_array_equal(review.saved_mask(correction), predicted)
    elif action == "defect_free":
        assert not review.saved_mask(correction).any()
    else:
        assert correction.mask_sha256 is None


def test_a_deep_link_opens_that_image_after_sign_in(review: Review) -> None:
    sizes = [(96, 80), (112, 72), (80, 104)]
    ids = [review.ingest(size) for size in sizes]
    wanted = ids[1]
    context = review.browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        page.goto(f"{review.app.url}/?image={wanted}")
        sign_in(page)
        wait_for_image(page, wanted)
        assert shown_image(page) == wanted
        assert f"{sizes[1][0]}×{sizes[1][1]}" in page.inner_text("#image-info")
        page.wait_for_function(
            "id => (document.querySelector('#review-status')?.innerText || '')"
            ".includes(`Opened image ${id} from its link`)",
            arg=wanted,
            timeout=WAIT_MS,
        )
    finally:
        context.close()


def test_click_to_refine_changes_the_shown_mask(review: Review) -> None:
    image_id = review.ingest()
    predicted = review.prediction(image_id)
    page = review.open(image_id)
    overlay = page.locator("#overlay img")
    first = overlay.get_attribute("src")
    box = overlay.bounding_box()
    assert box is not None and first
    # A positive click on the scratch (the image is shown square and whole).
    page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.48)
    page.wait_for_function(
        "src => { const img = document.querySelector('#overlay img');"
        " return img && img.getAttribute('src') !== src; }",
        arg=first,
        timeout=WAIT_MS,
    )
    before = {c.id for c in review.stored(image_id)}
    page.keyboard.press("s")  # saves the refined mask the editor now shows
    correction = review.wait_new_correction(image_id, before)
    page.close()
    refined = review.saved_mask(correction)
    assert refined.shape == predicted.shape
    assert (refined != predicted).sum() > 0, "the click did not change the shown mask"


def test_the_history_lists_earlier_corrections_and_shows_an_earlier_mask(
    review: Review,
) -> None:
    image_id = review.ingest()
    earlier = np.zeros((SIZE, SIZE), bool)
    earlier[20:40, 30:90] = True
    ids = []
    for role, action, mask in (("inspector", "corrected", earlier), ("admin", "defect_free", None)):
        files = {"mask": ("m.png", _png_mask(mask))} if mask is not None else None
        with review.app.client(role) as client:
            state = client.get(f"/api/images/{image_id}").json()["state"]
            response = client.post(
                f"/api/images/{image_id}/corrections",
                data={"action": action, "based_on": state},
                files=files,
            )
        assert response.status_code == 201, response.text
        ids.append(int(response.json()["id"]))
    page = review.open(image_id)
    page.get_by_text("History of this image").click()
    table = page.locator("#history")
    for cid, author, action in (
        (ids[0], "inspector", "corrected"),
        (ids[1], "admin", "defect_free"),
    ):
        wait_for(
            lambda words=(str(cid), author, action): all(w in table.inner_text() for w in words),
            f"correction {cid} by {author} in the history",
        )
    page.locator("#earlier input").click()
    page.get_by_role("option", name=f"#{ids[0]} corrected by inspector").click()
    image = page.locator("#earlier-mask img")
    image.wait_for(timeout=WAIT_MS)
    src = image.get_attribute("src")
    assert src
    response = page.request.get(src)
    assert response.ok
    shown = np.asarray(Image.open(io.BytesIO(response.body())).convert("L")) > 127
    page.close()
    np.testing.assert_array_equal(shown, earlier)
