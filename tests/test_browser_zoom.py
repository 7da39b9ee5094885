"""Large images on the review page: the editor and overlay get a display-sized view (at most
1024 px a side), the zoom and the overview choose the region in view, and strokes and clicks
on any view land on the right native pixels of the stored mask.

In headless Chromium (as tests/test_browser.py) and through `gradio_client` (the same events
the page fires, with strokes drawn into the editor value by hand, so exactly)."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from tests.test_browser import (  # noqa: F401  (`review`: the browser fixture)
    CHROMIUM,
    UNDO_ENABLED,
    WAIT_MS,
    Review,
    _image,
    review,
)
from tests.waiting import wait_for
from tests.webapp_fixtures import PASSWORD, RunningApp, serve_app
from webapp.app import create_app
from webapp.display_view import DISPLAY_MAX_SIDE, Region, overview_to_native, view_region
from webapp.editor_masks import CLEAR_RGB, MASK_RGB
from webapp.settings import Settings

BIG = (1500, 1500)  # (width, height) of the large test image: over the display size
BRUSH_RADIUS = 6  # the editor's default brush, in display pixels
TOLERANCE = 4  # native pixels: where the editor draws is read from a screenshot
STROKE_STEPS = 4  # mouse moves per stroke: the editor draws the segments between them

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (apt-get install chromium); .ci/run installs it",
)


# ---------------------------------------------------------------------------- helpers
def _png(array: np.ndarray, path: Path) -> Path:
    Image.fromarray(array).save(path)
    return path


def _size(path: str) -> tuple[int, int]:
    """(width, height) of an image file."""
    with Image.open(path) as image:
        return image.size


def _shown_id(outputs: tuple[Any, ...]) -> int:
    info = next(o for o in outputs if isinstance(o, str) and o.startswith("**Image "))
    return int(info.split()[1].strip("*"))


def _editor_input(editor: dict[str, Any], layer: Path) -> dict[str, Any]:
    """The editor value as the page sends it: what the server sent, plus the painted layer."""
    return {
        "background": handle_file(editor["background"]),
        "layers": [handle_file(str(layer))],
        "composite": handle_file(editor["composite"]),
    }


def _select(client: Client, elem_id: str, index: tuple[int, int], *data: Any) -> Any:
    """Fire the `select` event of the component `elem_id` at pixel `index`, as a click in
    the browser does (gradio_client has no call for event data, so it is sent as the page
    sends it; state inputs are the session's own, sent as None)."""
    (component,) = [
        c["id"] for c in client.config["components"] if c["props"].get("elem_id") == elem_id
    ]
    (fn_index,) = [
        i
        for i, dep in enumerate(client.config["dependencies"])
        if [component, "select"] in [list(t) for t in dep["targets"]]
    ]
    fn_index = client.config["dependencies"][fn_index].get("id", fn_index)
    predict = client.endpoints[fn_index].make_predict(client.new_helper(fn_index))
    return predict(
        *data,
        event_data={"index": list(index), "value": None, "selected": True},
        trigger_id=component,
    )


# ---------------------------------------------------------------- through gradio_client
def test_strokes_at_two_zoom_levels_are_saved_on_their_native_pixels(
    running_app: RunningApp, tmp_path: Path
) -> None:
    services = running_app.app.services
    services.ingest(_image(901, BIG), "zoom.png", source="test")
    services.wait_for_predictions()
    client = Client(f"{running_app.url}/", auth=("inspector", PASSWORD), verbose=False)
    image_id = _shown_id(client.predict("arrival", 0.45, api_name="/next_image"))
    predicted = services.mask(image_id, "prediction")
    shape = predicted.shape
    assert shape[0] > DISPLAY_MAX_SIDE

    # A view lasts until the next image loads: then it is Fit again.
    *_, zoom = client.predict(None, "8", 0.45, api_name="/zoom")
    assert zoom == "8"
    again = client.predict("arrival", 0.45, api_name="/next_image")
    assert _shown_id(again) == image_id  # the image the reviewer holds
    editor = next(o for o in again if isinstance(o, dict) and "background" in o)
    assert _size(editor["background"]) == (1024, 1024) and "fit" in again

    # 4×, centred: a 375 px crop sent at native resolution, the overlay of the same region.
    editor, overlay, overview, zoom = client.predict(None, "4", 0.45, api_name="/zoom")
    region = view_region(shape, "4")
    assert region == Region(562, 562, 375, 375) and zoom == "4"
    assert _size(editor["background"]) == _size(overlay) == (375, 375)
    assert max(_size(overview)) <= 200
    layer = np.zeros((375, 375, 4), np.uint8)
    layer[40:44, 10:300] = (*MASK_RGB, 255)  # adds native rows 602:606, columns 572:862
    layer[200:210, 100:120] = (*CLEAR_RGB, 255)  # removes native rows 762:772, cols 662:682
    added = np.zeros(shape, bool)
    added[602:606, 572:862] = True
    removed = np.zeros(shape, bool)
    removed[762:772, 662:682] = True

    # Back to Fit: the strokes go into the native mask, the editor gets the 1024 px view.
    fit_editor, fit_overlay, _, zoom = client.predict(
        _editor_input(editor, _png(layer, tmp_path / "zoomed.png")),
        "fit",
        0.45,
        api_name="/zoom",
    )
    assert zoom == "fit"
    assert _size(fit_editor["background"]) == _size(fit_overlay) == (1024, 1024)

    # One display pixel at Fit covers a block of native pixels (1500 / 1024 a side).
    fit_layer = np.zeros((1024, 1024, 4), np.uint8)
    fit_layer[700:702, 100:110] = (*MASK_RGB, 255)
    ceil = lambda i: -(-i * 1500 // 1024)  # noqa: E731  first native pixel of display pixel i
    added[ceil(700) : ceil(702), ceil(100) : ceil(110)] = True

    *_, status = client.predict(
        _editor_input(fit_editor, _png(fit_layer, tmp_path / "fit.png")),
        "",
        "arrival",
        0.45,
        api_name="/corrected",
    )
    assert f"image {image_id}" in status, status
    saved = services.mask(image_id, "correction")
    np.testing.assert_array_equal(saved, (predicted | added) & ~removed)


@pytest.fixture(scope="module")
def cold_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    """An app with no model: a click proposes a mask around the clicked spot."""
    root = tmp_path_factory.mktemp("cold-zoom")
    app = create_app(Settings(data_dir=root / "data"))
    try:
        app.services.accounts.add_user("inspector", PASSWORD, role="inspector")
        with serve_app(app) as url:
            yield url, app.services
    finally:
        app.stop()


def test_a_click_on_a_zoomed_overlay_refines_at_the_native_point(
    cold_url: tuple[str, Any],
) -> None:
    url, services = cold_url
    plate = np.full((400, 1200, 3), 150, np.uint8)  # wider than the display size
    plate[300:305, 700:1000] = 30  # a scratch, off centre
    buf = io.BytesIO()
    Image.fromarray(plate).save(buf, format="PNG")
    image_id = services.ingest(buf.getvalue(), "plate.png", source="line").id
    client = Client(f"{url}/", auth=("inspector", PASSWORD), verbose=False)
    assert _shown_id(client.predict("auto", 0.45, api_name="/next_image")) == image_id
    # Centre the view near the scratch (from Fit an overview click zooms in 2×), then 4×.
    _select(client, "overview", (140, 50), None, None, None, None, None, 0.45)
    *_, zoom = client.predict(None, "4", 0.45, api_name="/zoom")
    assert zoom == "4"
    centre = overview_to_native((140, 50), (400, 1200))  # the overview is 200 × 67
    assert centre == (842.5, 301.5)
    assert view_region((400, 1200), "4", centre) == Region(692, 252, 300, 100)  # unresampled
    # Display pixel (150, 50) of the zoomed overlay is native (842, 302), on the scratch; read
    # as native, it would be on the plain plate.
    _select(client, "overlay", (150, 50), None, None, "defect (+)", 0.45)
    *_, status = client.predict(None, "", "auto", 0.45, api_name="/corrected")
    assert f"image {image_id}" in status, status
    mask = services.mask(image_id, "correction")
    assert mask[302, 842], "the click did not land on the native scratch"
    assert not mask[50, 150]
    assert mask[300:305, 720:980].mean() > 0.9 and mask.mean() < 0.05


# ---------------------------------------------------------------------- in Chromium
@dataclass(frozen=True)
class Placed:
    """Where the editor draws its background on the page: CSS pixels of its top left corner,
    and CSS pixels per display pixel."""

    left: float
    top: float
    scale: float

    def css(self, point: tuple[float, float]) -> tuple[float, float]:
        """The page position of the centre of display pixel `point`."""
        return self.left + (point[0] + 0.5) * self.scale, self.top + (point[1] + 0.5) * self.scale


def _drawn(page: Any) -> tuple[float, float, int, int] | None:
    """The box (left, top, width, height) of the picture in the editor's canvas, from a
    screenshot: the columns and rows most of whose pixels are not the canvas's white (the
    tool bar and layer button over the canvas are too small or too short to count)."""
    canvas = page.locator("#mask-editor canvas").first
    box = canvas.bounding_box()
    shot = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB"))
    painted = (shot < 240).any(axis=2)
    cols = _longest_run(painted.mean(axis=0) > 0.5)
    rows = _longest_run(painted.mean(axis=1) > 0.5)
    if box is None or cols is None or rows is None:
        return None
    return box["x"] + cols[0], box["y"] + rows[0], cols[1] - cols[0], rows[1] - rows[0]


def _longest_run(flags: np.ndarray) -> tuple[int, int] | None:
    """[start, end) of the longest run of True (the picture, not a line of the tool bar)."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    if not len(starts):
        return None
    longest = int(np.argmax(ends - starts))
    return int(starts[longest]), int(ends[longest])


def _placed(page: Any, shown: tuple[int, int]) -> Placed:
    """Where the editor draws a background of `shown` (height, width) display pixels, once it
    has loaded and fitted it: its drawn size matches the editor's zoom and stays put."""

    def fitted() -> Placed | None:
        first = _drawn(page)
        zoom = page.inner_text("#mask-editor .zoom-number").strip().rstrip("%")
        if first is None or not zoom.isdigit():
            return None
        left, top, width, height = first
        scale = width / shown[1]
        if abs(scale * 100 - int(zoom)) > 1.5 or abs(height - shown[0] * scale) > 2:
            return None  # still the previous picture, or not fitted yet
        time.sleep(0.3)
        return Placed(left, top, scale) if _drawn(page) == first else None

    return wait_for(fitted, f"the editor showing a {shown[1]} × {shown[0]} background")


def _wait_for_overlay_width(page: Any, width: int) -> None:
    page.wait_for_function(
        "w => document.querySelector('#overlay img')?.naturalWidth === w",
        arg=width,
        timeout=WAIT_MS,
    )


def _paint(page: Any, placed: Placed, start: tuple[int, int], end: tuple[int, int]) -> None:
    """A brush stroke from display pixel `start` to `end` of the editor's background;
    returns once the editor has recorded it (its Undo button becomes available)."""
    assert page.locator(UNDO_ENABLED).count() == 0
    page.mouse.move(*placed.css(start))
    page.mouse.down()
    for i in range(1, STROKE_STEPS + 1):
        t = i / STROKE_STEPS
        page.mouse.move(
            *placed.css((start[0] + (end[0] - start[0]) * t, start[1] + (end[1] - start[1]) * t))
        )
    page.mouse.up()
    page.wait_for_selector(UNDO_ENABLED, timeout=WAIT_MS)


def _stroke_box(
    start: tuple[int, int], end: tuple[int, int], region: Region, shown: tuple[int, int]
) -> tuple[slice, slice]:
    """The native rows and columns a horizontal stroke may cover, with the brush's width and
    the tolerance."""
    sy, sx = region.height / shown[0], region.width / shown[1]
    pad_y, pad_x = (BRUSH_RADIUS + 1) * sy + TOLERANCE, (BRUSH_RADIUS + 1) * sx + TOLERANCE
    y = region.y0 + (start[1] + 0.5) * sy
    x0, x1 = region.x0 + start[0] * sx, region.x0 + (end[0] + 1) * sx
    return (
        slice(max(0, int(y - pad_y)), int(y + pad_y) + 1),
        slice(max(0, int(x0 - pad_x)), int(x1 + pad_x) + 1),
    )


def _core(box: tuple[slice, slice]) -> tuple[slice, slice]:
    """The middle of a stroke's box: what the stroke surely covers."""
    rows, cols = box
    mid = (rows.start + rows.stop) // 2
    return slice(mid - 1, mid + 2), slice(cols.start + 3 * TOLERANCE, cols.stop - 3 * TOLERANCE)


@needs_chromium
def test_a_large_image_is_zoomed_painted_at_two_levels_and_saved_at_native_size(
    review: Review,  # noqa: F811  (the imported fixture)
) -> None:
    image_id = review.ingest(BIG)
    predicted = review.prediction(image_id)
    assert predicted.shape == (BIG[1], BIG[0])
    page = review.context.new_page()
    images: list[str] = []
    page.on(
        "response",
        lambda r: (
            images.append(r.url)
            if "/gradio_api/file=" in r.url
            and (r.headers.get("content-type") or "").startswith("image/")
            else None
        ),
    )
    page.goto(f"{review.app.url}/?image={image_id}")
    page.wait_for_function(
        "id => (document.querySelector('#image-info')?.innerText || '').includes(`Image ${id} `)",
        arg=image_id,
        timeout=WAIT_MS,
    )
    _wait_for_overlay_width(page, 1024)
    at_fit = _placed(page, (1024, 1024))

    # At Fit every picture the page fetched is display-sized, the editor's background too.
    at_fit_images = list(images)

    fit = Region.whole(predicted.shape)
    first = ((150, 900), (350, 900))  # display pixels at Fit: native ~(220–514, 1319)
    _paint(page, at_fit, *first)

    # Pan: a click near the overview's top right corner centres the view there (2× from
    # Fit, kept inside the image); then 4× around the same centre.
    overview = page.locator("#overview img")
    box = overview.bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + box["width"] * 0.97, box["y"] + box["height"] * 0.03)
    _wait_for_overlay_width(page, 750)
    _placed(page, (750, 750))
    page.locator("#zoom").get_by_text("4×").click()
    _wait_for_overlay_width(page, 375)
    at_4x = _placed(page, (375, 375))
    zoomed = Region(1125, 0, 375, 375)  # the top right corner at native resolution
    second = ((100, 200), (250, 200))  # display = native offset: ~(1225–1375, 200)
    _paint(page, at_4x, *second)  # on a fresh stroke layer: the first is in the native mask

    before = {c.id for c in review.stored(image_id)}
    page.keyboard.press("s")
    correction = review.wait_new_correction(image_id, before)
    sizes = {url: Image.open(io.BytesIO(page.request.get(url).body())).size for url in images}
    page.close()
    # At Fit the editor's background and composite are display-sized; no picture the page
    # fetched at any zoom is larger.
    assert (1024, 1024) in [sizes[url] for url in at_fit_images], sizes
    assert max(max(size) for size in sizes.values()) <= DISPLAY_MAX_SIDE, sizes

    saved = review.saved_mask(correction)
    assert saved.shape == predicted.shape
    lost = int((predicted & ~saved).sum())
    assert lost == 0, f"{lost} predicted pixels were dropped on save"
    boxes = [_stroke_box(*first, fit, (1024, 1024)), _stroke_box(*second, zoomed, (375, 375))]
    allowed = predicted.copy()
    for box_ in boxes:
        allowed[box_] = True
        core = saved[_core(box_)]
        assert core.all(), f"the stroke in {box_} is missing ({core.mean():.2f} saved)"
    stray = saved & ~allowed
    assert not stray.any(), f"{int(stray.sum())} saved pixels outside the strokes, e.g. " + str(
        np.argwhere(stray)[:3].tolist()
    )
