"""End to end in headless Chromium (Debian's package, driven by Playwright): sign in, see the
heatmap, paint a stroke in the mask editor, save, and find the correction in the database."""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from storage.masks import decode_mask
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

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (apt-get install chromium); .ci/run installs it",
)


def _image() -> bytes:
    rng = np.random.default_rng(7)
    img = rng.integers(100, 150, (128, 128, 3), dtype=np.uint8)
    img[60:64, 10:120] = 20
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def test_inspector_paints_and_saves_a_correction(running_app: RunningApp) -> None:
    from playwright.sync_api import sync_playwright

    services = running_app.app.services
    # The served heads are untrained; make them predict an empty mask so the painted stroke
    # is what the saved correction adds, wherever it lands.
    served = services.models.current
    assert served is not None
    served.predictor.bundle.meta.mask_threshold = 1.0
    image_id = services.ingest(_image(), "e2e.png", source="test").id
    services.wait_for_predictions()
    predicted = services.mask(image_id, "prediction")
    before = {c.id for c in services.repo.corrections_for(image_id)}

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{running_app.url}/?image={image_id}")
        page.fill("input[type=text]", "inspector")
        page.fill("input[type=password]", PASSWORD)
        page.keyboard.press("Enter")
        page.wait_for_selector("#overlay img", timeout=30_000)
        page.wait_for_function(
            "document.querySelector('#image-info') && "
            f"document.querySelector('#image-info').innerText.includes('Image {image_id}')",
            timeout=30_000,
        )
        assert page.locator("#overlay img").get_attribute("src")  # the heatmap overlay
        canvas = page.locator("#mask-editor canvas").first
        box = canvas.bounding_box()
        assert box is not None
        # A horizontal stroke across the middle of the editor canvas, where the image is.
        y = box["y"] + box["height"] * 0.25
        page.mouse.move(box["x"] + box["width"] * 0.45, y)
        page.mouse.down()
        for i in range(1, 15):
            page.mouse.move(box["x"] + box["width"] * (0.45 + 0.007 * i), y)
        page.mouse.up()
        page.wait_for_timeout(1500)  # let the editor hand the new layer to the page state
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)  # heatmap + painted stroke
        page.keyboard.press("s")  # the Save-correction shortcut
        deadline = time.monotonic() + 30
        new = []
        while time.monotonic() < deadline and not new:
            new = [c for c in services.repo.corrections_for(image_id) if c.id not in before]
            time.sleep(0.2)
        browser.close()

    assert new, "no correction reached the database"
    (correction,) = new
    assert correction.author == "inspector" and correction.action.value == "corrected"
    saved = decode_mask(services.repo.blobs.get(correction.mask_sha256))  # type: ignore[arg-type]
    assert saved.shape == predicted.shape
    assert (saved & ~predicted).sum() > 0, "the painted stroke is not in the saved mask"
    assert SCREENSHOT.is_file()
