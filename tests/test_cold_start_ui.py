"""Cold start in the Review tab, driven through `gradio_client` against a launched app with
no model: the banner counts the labels towards the first model, and a click on the overlay
proposes a mask that Save correction stores."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gradio_client import Client
from PIL import Image

from storage.schema import CorrectionAction
from tests.webapp_fixtures import PASSWORD, serve_app
from webapp.app import Application, create_app
from webapp.settings import Settings


@dataclass
class ColdApp:
    url: str
    app: Application


@pytest.fixture(scope="module")
def cold_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ColdApp]:
    root = tmp_path_factory.mktemp("cold-ui")
    settings = Settings(data_dir=root / "data", first_model_labels=5, first_model_min_defective=2)
    app = create_app(settings)
    try:
        app.services.accounts.add_user("inspector", PASSWORD, role="inspector")
        with serve_app(app) as url:
            yield ColdApp(url, app)
    finally:
        app.stop()


def _surface() -> bytes:
    """A flat grey plate with one dark scratch across it."""
    img = np.full((64, 96, 3), 150, np.uint8)
    img[30:34, 12:84] = 30
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _select(client: Client, elem_id: str, index: tuple[int, int], *data: Any) -> Any:
    """Fire the `select` event of the component `elem_id` at pixel `index`, as a click in
    the browser does (gradio_client has no call for event data, so it is sent as the page
    sends it)."""
    (component,) = [
        c["id"] for c in client.config["components"] if c["props"].get("elem_id") == elem_id
    ]
    (fn_index,) = [
        i
        for i, dep in enumerate(client.config["dependencies"])
        if [component, "select"] in [list(t) for t in dep["targets"]]
    ]
    fn_index = client.config["dependencies"][fn_index].get("id", fn_index)
    endpoint = client.endpoints[fn_index]
    predict = endpoint.make_predict(client.new_helper(fn_index))
    return predict(
        *data,
        event_data={"index": list(index), "value": None, "selected": True},
        trigger_id=component,
    )


def test_the_banner_counts_labels_towards_the_first_model(cold_app: ColdApp) -> None:
    client = Client(f"{cold_app.url}/", auth=("inspector", PASSWORD), verbose=False)
    _, _, _, line = client.predict(api_name="/models")
    assert line.startswith("**No model yet:** 0 of 5 labels collected (0 defective, at least 2")
    assert "the first model trains automatically" in line


def test_a_click_with_no_model_proposes_a_mask_that_save_correction_stores(
    cold_app: ColdApp, tmp_path: Path
) -> None:
    services = cold_app.app.services
    image_id = services.ingest(_surface(), "plate.png", source="line").id
    assert services.models.current is None
    client = Client(f"{cold_app.url}/", auth=("inspector", PASSWORD), verbose=False)
    out = client.predict("auto", 0.45, api_name="/next_image")
    assert any(isinstance(o, str) and o.startswith(f"**Image {image_id}**") for o in out)
    # A positive click on the scratch (state inputs are the session's own: sent as None).
    _select(client, "overlay", (48, 32), None, None, "defect (+)", 0.45)
    *_, status = client.predict(None, "", "auto", 0.45, api_name="/corrected")
    assert f"image {image_id}" in status, status
    (saved,) = services.repo.reviews.corrections_for(image_id)
    assert saved.action is CorrectionAction.corrected and saved.author == "inspector"
    mask = services.mask(image_id, "correction")
    assert mask.any(), "the click proposed no mask"
    assert mask[32, 48] and mask.mean() < 0.25  # the clicked scratch, not the whole plate
