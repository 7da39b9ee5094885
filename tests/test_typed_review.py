"""Defect types on the review page, through `gradio_client` against the launched server: the
admin panel adds types, the queue is filtered by predicted type, the region list shows the
model's types and confidences, a selected region is retyped, strokes painted in a type's
colour become regions of that type, and Save correction / Accept store the type map."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from tests.webapp_fixtures import PASSWORD, RunningApp
from webapp.typed_regions import PredictedRegion, RegionRow, TypeStyle, hex_rgb
from webapp.ui.defect_types import (
    ALL_TYPES,
    check_new_type,
    filter_choices,
    legend_html,
    normalise_colour,
    suggested_colour,
    wanted_type,
)
from webapp.ui.models import per_type_iou, version_type_rows
from webapp.ui.regions import LISTED_REGIONS, region_list

SIZE = (64, 96)  # (height, width): shown unresampled, so display pixels are native pixels
REGION_A = (slice(10, 20), slice(10, 40))
REGION_B = (slice(40, 50), slice(50, 90))


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(90, 160, (*SIZE, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def types(running_app: RunningApp) -> dict[str, dict[str, Any]]:
    """The project's types by name, with "scratch" and "dent" added."""
    services = running_app.app.services
    admin = services.user("admin")
    have = {t["name"] for t in services.defect_types()}
    for name, key in (("scratch", "1"), ("dent", "2")):
        if name not in have:
            services.add_defect_type(admin, name, key=key)
    return {t["name"]: t for t in services.defect_types()}


def _client(app: RunningApp, role: str) -> Client:
    client = Client(f"{app.url}/", auth=(role, PASSWORD), verbose=False)
    client.predict(api_name="/types")  # what the page does on load: the current types
    return client


def _typed_image(app: RunningApp, seed: int, kinds: list[tuple[int, float]]) -> int:
    """An image whose newest prediction has region A (and region B when two kinds are
    given), of the given (type id, confidence)."""
    services = app.app.services
    image_id = services.ingest(_png(seed), f"typed-{seed}.png", source="test").id
    services.wait_for_predictions()  # the served model's own prediction comes first
    mask = np.zeros(SIZE, bool)
    codes = np.zeros(SIZE, np.uint8)
    regions = []
    for box, (type_id, confidence) in zip((REGION_A, REGION_B), kinds, strict=False):
        mask[box] = True
        codes[box] = type_id
        regions.append((type_id, int(mask[box].sum()), confidence))
    services.repo.images.add_prediction(
        image_id,
        mask=mask,
        heatmap=mask.astype(np.float32) * 0.9,
        defect_score=0.9,
        uncertainty=0.5,
        model_version_id=None,
        types=codes,
        regions=regions,
    )
    return int(image_id)


def _shown_id(outputs: tuple[Any, ...]) -> int | None:
    info = next((o for o in outputs if isinstance(o, str) and o.startswith("**Image ")), None)
    return None if info is None else int(info.split()[1].strip("*"))


def _select(client: Client, elem_id: str, index: tuple[int, int], *data: Any) -> Any:
    """Fire the `select` event of `elem_id` at pixel `index`, as a click in the browser does
    (state inputs are the session's own: sent as None)."""
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


def test_admins_add_types_in_the_panel_and_others_may_not(
    running_app: RunningApp, types: dict[str, dict[str, Any]]
) -> None:
    viewer = _client(running_app, "viewer")
    *_, refused = viewer.predict("pit", "#8000ff", "p", api_name="/add_defect_type")
    assert refused.startswith("⚠") and "cannot manage defect types" in refused
    admin = _client(running_app, "admin")
    *_, reserved = admin.predict("pit", "#8000ff", "s", api_name="/add_defect_type")
    assert "review shortcut" in reserved
    *_, near = admin.predict("pit", "#00a8ff", "p", api_name="/add_defect_type")
    assert "background brush" in near
    listing, _which, suggested, added = admin.predict(
        "pit", "#8000ff", "p", api_name="/add_defect_type"
    )
    assert "Added defect type **pit**" in added
    stored = {t["name"]: t for t in running_app.app.services.defect_types()}
    assert stored["pit"]["color"] == "#8000ff" and stored["pit"]["key"] == "p"
    for name in ("unspecified", "scratch", "dent", "pit"):
        assert name in listing
    assert suggested not in {t["color"] for t in stored.values()}  # the next free colour
    *_, taken = admin.predict("Pit", "", "", api_name="/add_defect_type")
    assert taken.startswith("⚠") and "exists already" in taken
    picker, _filter, legend = admin.predict(api_name="/types")
    assert '"p": "' in legend.replace("&quot;", '"')  # the key is on the page for the script
    assert ["pit [p]", stored["pit"]["id"]] in picker["choices"]


def test_admins_change_a_types_name_colour_and_key_in_the_panel(
    running_app: RunningApp, types: dict[str, dict[str, Any]]
) -> None:
    services = running_app.app.services
    admin = _client(running_app, "admin")
    dent = types["dent"]
    name, colour, key = admin.predict(dent["id"], api_name="/defect_type_fields")
    assert (name, colour, key) == (dent["name"], dent["color"], dent["key"] or "")
    *_, status = admin.predict(
        dent["id"], "dent (deep)", "#00c000", "e", api_name="/save_defect_type"
    )
    assert "Saved defect type **dent (deep)**" in status, status
    stored = {t["id"]: t for t in services.defect_types()}[dent["id"]]
    assert (stored["name"], stored["color"], stored["key"]) == ("dent (deep)", "#00c000", "e")
    picker, _filter, legend = admin.predict(api_name="/types")  # pickers follow the change
    assert ["dent (deep) [e]", dent["id"]] in picker["choices"] and "dent (deep)" in legend
    *_, status = admin.predict(dent["id"], "dent", dent["color"], "", api_name="/save_defect_type")
    assert {t["id"]: t for t in services.defect_types()}[dent["id"]]["key"] is None  # key off
    *_, status = admin.predict(1, "nothing", "#ffcc00", "", api_name="/save_defect_type")
    assert status.startswith("⚠") and "cannot be renamed" in status
    *_, status = admin.predict(dent["id"], "dent", "#00c000", "k", api_name="/save_defect_type")
    assert status.startswith("⚠") and "review shortcut" in status
    *_, status = admin.predict(0, "dent", "#00c000", "", api_name="/save_defect_type")
    assert status.startswith("⚠") and "choose the type" in status
    viewer = _client(running_app, "viewer")
    *_, refused = viewer.predict(dent["id"], "x", "#00c000", "", api_name="/save_defect_type")
    assert refused.startswith("⚠") and "cannot manage defect types" in refused
    assert {t["id"]: t for t in services.defect_types()}[dent["id"]]["name"] == "dent"
    restore = {"color": dent["color"], "key": dent["key"]}  # as the other tests expect it
    services.update_defect_type(services.user("admin"), dent["id"], **restore)


def test_a_region_is_selected_retyped_and_saved_with_painted_typed_strokes(
    running_app: RunningApp, types: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    scratch, dent = types["scratch"]["id"], types["dent"]["id"]
    services = running_app.app.services
    plain = _typed_image(running_app, 1, [(scratch, 0.9)])  # older, but has no dent
    wanted = _typed_image(running_app, 2, [(scratch, 0.9), (dent, 0.7)])
    client = _client(running_app, "inspector")

    # The queue filtered by predicted type skips the older image without a dent.
    out = client.predict("arrival", 0.45, "dent", api_name="/next_image")
    assert _shown_id(out) == wanted, out[-1]
    editor = next(o for o in out if isinstance(o, dict) and "background" in o)
    _, listing = client.predict(api_name="/regions")
    assert "scratch (0.90)" in listing and "dent (0.70)" in listing

    # A click on region A selects it; the picker shows its type.
    *_, picked, status = _select(client, "regions", (25, 15), *(None,) * 5, 0.45)
    assert picked == scratch and "Region 1 selected (scratch)" in status
    picture, listing = client.predict(api_name="/regions")
    assert "▶ 1" in listing
    shown = np.asarray(Image.open(picture).convert("RGB"))
    assert (shown[9, 10:40] == (255, 255, 255)).all()  # the ring above region A, edged black
    assert (shown[8, 10:40] == (0, 0, 0)).all() and (shown[15, 25] != (255, 255, 255)).any()
    # A click on the background near nothing clears it; a click near A selects it again.
    *_, missed = _select(client, "regions", (60, 30), *(None,) * 5, 0.45)
    assert missed == "No region there."
    _select(client, "regions", (25, 21), *(None,) * 5, 0.45)  # a pixel below A's edge

    # The type's shortcut (or the picker) retypes the selected region.
    *_, status = client.predict(None, 0.45, dent, api_name="/set_type")
    assert "Region 1 is now **dent**" in status
    _, listing = client.predict(api_name="/regions")
    assert "▶ 1" in listing and listing.count("dent") >= 2

    # A stroke in the scratch colour becomes a third region, of type scratch; save.
    layer = np.zeros((*SIZE, 4), np.uint8)
    layer[28:32, 5:30] = (*hex_rgb(types["scratch"]["color"]), 255)
    path = tmp_path / "layer.png"
    Image.fromarray(layer).save(path)
    value = {
        "background": handle_file(editor["background"]),
        "layers": [handle_file(str(path))],
        "composite": handle_file(editor["composite"]),
    }
    *_, status = client.predict(value, "", "arrival", 0.45, "dent", api_name="/corrected")
    assert f"image {wanted}" in status, status

    codes = services.type_mask(wanted, "correction")
    assert (codes[REGION_A] == dent).all() and (codes[REGION_B] == dent).all()
    assert (codes[28:32, 5:30] == scratch).all()
    assert (codes > 0).sum() == 300 + 400 + 100
    regions = services.image_view(wanted)["correction"]["regions"]
    assert sorted((r["type"], r["area"]) for r in regions) == [
        ("dent", 300),
        ("dent", 400),
        ("scratch", 100),
    ]
    assert services.image_view(plain)["status"] == "pending"


def test_accept_keeps_the_predicted_types(
    running_app: RunningApp, types: dict[str, dict[str, Any]]
) -> None:
    scratch, dent = types["scratch"]["id"], types["dent"]["id"]
    services = running_app.app.services
    client = _client(running_app, "inspector")
    out = client.predict("arrival", 0.45, "scratch", api_name="/next_image")
    image_id = _shown_id(out)
    assert image_id is not None
    predicted = services.type_mask(image_id, "prediction")
    assert set(np.unique(predicted)) <= {0, scratch, dent} and predicted.any()
    *_, status = client.predict(None, "", "arrival", 0.45, "scratch", api_name="/accepted")
    assert f"Saved accepted for image {image_id}" in status, status
    np.testing.assert_array_equal(services.type_mask(image_id, "correction"), predicted)


def test_accept_after_retyping_a_region_saves_the_new_type(
    running_app: RunningApp, types: dict[str, dict[str, Any]]
) -> None:
    scratch, dent = types["scratch"]["id"], types["dent"]["id"]
    services = running_app.app.services
    image_id = _typed_image(running_app, 3, [(scratch, 0.9), (dent, 0.7)])
    client = _client(running_app, "inspector")
    out = client.predict("arrival", 0.45, "dent", api_name="/next_image")
    assert _shown_id(out) == image_id, out[-1]
    _select(client, "regions", (25, 15), *(None,) * 5, 0.45)  # region A, a scratch
    *_, status = client.predict(None, 0.45, dent, api_name="/set_type")
    assert "Region 1 is now **dent**" in status
    *_, status = client.predict(None, "", "arrival", 0.45, "dent", api_name="/accepted")
    assert f"Saved corrected for image {image_id}" in status, status  # its types were wrong
    codes = services.type_mask(image_id, "correction")
    predicted = services.type_mask(image_id, "prediction")
    np.testing.assert_array_equal(codes > 0, predicted > 0)  # the predicted mask, accepted
    assert (codes[REGION_A] == dent).all() and (codes[REGION_B] == dent).all()


# ------------------------------------------------------------------ the pieces, alone
def test_the_legend_carries_each_keys_type_for_the_page_script() -> None:
    types = [TypeStyle(1, "unspecified", "#ffcc00", "0"), TypeStyle(5, "a<b", "#123456", None)]
    legend = legend_html(types)
    assert 'data-type-keys="{&quot;0&quot;: &quot;1&quot;}"' in legend
    assert "a&lt;b" in legend and "a<b" not in legend  # names are escaped
    assert "label:nth-of-type(2) span::before{background:#123456}" in legend
    assert filter_choices(types)[0] == ("All types", ALL_TYPES)
    assert wanted_type(ALL_TYPES) is None and wanted_type("dent") == "dent"


def test_the_add_form_refuses_review_keys_and_the_background_brush_colour() -> None:
    with pytest.raises(ValueError, match="review shortcut"):
        check_new_type("#123456", "k")
    with pytest.raises(ValueError, match="background brush"):
        check_new_type("#10a0f0", "x")
    check_new_type("#123456", "x")
    assert normalise_colour("rgba(255, 0, 16.2, 1)") == "#ff0010"
    assert normalise_colour("#abcdef") == "#abcdef" and normalise_colour("") is None
    assert suggested_colour([TypeStyle(1, "u", "#e6194b")]) != "#e6194b"


def test_per_type_iou_per_version_comes_from_the_best_breakdown_a_report_has() -> None:
    typed = {"types": {"per_type": {"dent": {"iou": 0.41234, "dice": 0.5, "images": 3}}}}
    by_image = {"per_type": {"good": {"empty": 1.0, "count": 4}, "dent": {"iou": 0.2}}}
    versions = [
        SimpleNamespace(id=2, metrics={}),
        SimpleNamespace(id=1, metrics={}),
        SimpleNamespace(id=3, metrics={}),  # no evaluation: no points
    ]
    runs = [
        SimpleNamespace(model_version_id=1, metrics={"candidate_holdout": by_image}),
        SimpleNamespace(model_version_id=2, metrics={"candidate_holdout": typed | by_image}),
        SimpleNamespace(model_version_id=None, metrics={}),
    ]
    assert version_type_rows(versions, runs) == [[1, "dent", 0.2], [2, "dent", 0.4123]]  # type: ignore[arg-type]
    assert per_type_iou(None) == {} and per_type_iou({"miou": 0.5}) == {}


def test_the_region_list_lists_the_largest_regions_and_the_selected_one() -> None:
    types = [TypeStyle(1, "unspecified", "#ffcc00"), TypeStyle(2, "dent", "#3cb44b")]
    rows = [RegionRow(i, 2, 100 - i, (i, 0, 1, 1)) for i in range(1, 41)]
    predicted = [
        PredictedRegion((1, 0, 1, 1), 99, "dent", 0.875),
        PredictedRegion((2, 0, 1, 1), 98, "unspecified", 0.0),  # a model without a type head
    ]
    html = region_list(rows, types, predicted, selected=40)
    assert html.count("<tr ") == LISTED_REGIONS + 1  # the largest, and the selected (smallest)
    assert "▶ 40" in html and "data-region='31'" not in html
    assert "9 smaller regions not listed" in html
    assert "dent (0.88)" in html and "<td>unspecified</td>" in html and "(0.00)" not in html
    assert "—" in html  # a region the model did not predict as it is
