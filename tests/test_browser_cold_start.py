"""The review page of a fresh deployment, in headless Chromium: no checkpoint, no model, no
labels. The page explains the state, shows the image with an empty mask to paint, refuses
nothing but Accept, and a painted correction is stored."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from storage.masks import decode_mask
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, WAIT_MS, paint_stroke, sign_in
from tests.waiting import wait_for
from tests.webapp_fixtures import PASSWORD, serve_app
from webapp.app import Application, create_app
from webapp.settings import Settings

SCREENSHOT = Path(__file__).resolve().parents[1] / "build" / "e2e-cold-start.png"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    img = rng.integers(100, 150, (96, 128, 3), dtype=np.uint8)
    img[40:44, 10:110] = 20
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Application, str]]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("fresh") / "data")
    app = create_app(settings)
    app.services.accounts.add_user("inspector", PASSWORD, role="inspector")
    with serve_app(app) as url:
        yield app, url
    app.stop()


def test_the_empty_state_review_page_labels_without_a_model(
    fresh: tuple[Application, str],
) -> None:
    from playwright.sync_api import sync_playwright

    app, url = fresh
    services = app.services
    assert services.health()["state"] == "no_model"
    image_id = services.ingest(_png(1), "first.png").id
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page: Any = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/")
        sign_in(page)
        page.wait_for_function(
            "id => document.querySelector('#image-info')?.innerText.includes(`Image ${id} `)",
            arg=image_id,
            timeout=WAIT_MS,
        )
        line = page.inner_text("#model-line")
        assert "No model yet" in line and "restart" not in line.lower()
        assert "no prediction yet" in page.inner_text("#image-info")
        assert page.locator("#btn-accept").is_disabled()  # nothing to accept
        assert page.locator("#btn-save").is_enabled()
        page.wait_for_function(
            "() => parseInt(document.querySelector('#mask-editor .zoom-number')?.innerText) > 100",
            timeout=WAIT_MS,
        )
        paint_stroke(page)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        page.keyboard.press("s")
        correction = wait_for(
            lambda: services.repo.reviews.corrections_for(image_id), "the saved correction"
        )[-1]
        browser.close()
    assert correction.action.value == "corrected" and correction.author == "inspector"
    saved = decode_mask(services.repo.blobs.get(correction.mask_sha256))
    assert saved.shape == (96, 128) and 0 < saved.sum() < saved.size / 4  # the stroke alone
