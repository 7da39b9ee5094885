"""Defect types over the REST API of a launched server: the type list, typed corrections
(a second PNG, `types`), type masks read back, and the queue by predicted type."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from model.predict import Prediction
from model.region_types import RegionType, label_regions
from tests.webapp_fixtures import ENGINES, HTTP_TIMEOUT, RunningApp

HTTP = httpx.Client(timeout=HTTP_TIMEOUT)
W, H = 64, 48


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def read_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def _mask() -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[10:14, 5:50] = 255  # label 1
    m[30:40, 40:50] = 255  # label 2
    return m


def _upload(app: RunningApp, seed: int) -> int:
    pixels = np.random.default_rng(seed).integers(60, 200, (H, W, 3), np.uint8)
    r = HTTP.post(
        f"{app.url}/api/images",
        headers=app.auth("inspector"),
        files={"file": ("i.png", png(pixels))},
    )
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _post_correction(
    app: RunningApp, image_id: int, files: dict[str, bytes], role: str = "inspector"
):  # type: ignore[no-untyped-def]
    state = HTTP.get(f"{app.url}/api/images/{image_id}", headers=app.auth("viewer")).json()["state"]
    return HTTP.post(
        f"{app.url}/api/images/{image_id}/corrections",
        headers=app.auth(role),
        data={"action": "corrected", "based_on": state},
        files={name: (f"{name}.png", data) for name, data in files.items()},
    )


def _type_id(app: RunningApp, name: str, key: str | None = None) -> int:
    """The id of type `name`, added through the API when missing."""
    for t in HTTP.get(f"{app.url}/api/types", headers=app.auth("viewer")).json():
        if t["name"] == name:
            return int(t["id"])
    r = HTTP.post(
        f"{app.url}/api/types", headers=app.auth("admin"), json={"name": name, "key": key}
    )
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


@pytest.mark.parametrize("running_app", ENGINES, indirect=True)
def test_the_type_list_is_read_by_all_and_edited_by_admins(running_app: RunningApp) -> None:
    url, auth = f"{running_app.url}/api/types", running_app.auth
    assert HTTP.get(url).status_code == 401
    listed = HTTP.get(url, headers=auth("viewer")).json()
    assert listed[0] == {"id": 1, "name": "unspecified", "color": "#ffcc00", "key": "0"}
    assert HTTP.post(url, headers=auth("inspector"), json={"name": "dent"}).status_code == 403
    added = HTTP.post(
        url, headers=auth("admin"), json={"name": "dent", "color": "#00FF00", "key": "2"}
    )
    assert added.status_code == 201, added.text
    dent = added.json()
    assert dent["name"] == "dent" and dent["color"] == "#00ff00" and dent["key"] == "2"
    for body, status, fragment in (
        ({"name": "DENT"}, 409, "exists already"),
        ({"name": "hole", "key": "2"}, 409, "key '2' is taken by defect type 'dent'"),
        ({"name": "hole", "color": "green"}, 422, "#rrggbb"),
        ({"name": "hole", "key": "ab"}, 422, "one printable character"),
        ({"name": " "}, 422, "needs a name"),
        ({"color": "#000000"}, 422, "name"),
        ({"name": "hole", "shape": "round"}, 422, "shape"),
    ):
        r = HTTP.post(url, headers=auth("admin"), json=body)
        assert (r.status_code, fragment in r.json()["error"]) == (status, True), (body, r.text)
    assert len(HTTP.get(url, headers=auth("viewer")).json()) == len(listed) + 1  # none stored
    patch = f"{url}/{dent['id']}"
    changed = HTTP.patch(patch, headers=auth("admin"), json={"key": None, "name": "big dent"})
    assert changed.status_code == 200 and changed.json()["key"] is None
    assert changed.json()["name"] == "big dent" and changed.json()["color"] == "#00ff00"
    assert HTTP.patch(patch, headers=auth("inspector"), json={"key": "x"}).status_code == 403
    assert HTTP.patch(f"{url}/999", headers=auth("admin"), json={"key": "x"}).status_code == 404
    for body, fragment in (({}, "nothing to change"), ({"name": None}, "cannot be removed")):
        r = HTTP.patch(patch, headers=auth("admin"), json=body)
        assert r.status_code == 422 and fragment in r.json()["error"]
    renamed = HTTP.patch(f"{url}/1", headers=auth("admin"), json={"name": "other"})
    assert renamed.status_code == 422 and "cannot be renamed" in renamed.json()["error"]


@pytest.mark.parametrize("running_app", ENGINES, indirect=True)
def test_a_typed_correction_is_posted_and_read_back(running_app: RunningApp) -> None:
    scratch = _type_id(running_app, "scratch", key="1")
    image_id = _upload(running_app, 1)
    types = np.zeros((H, W), np.uint8)
    types[10:14, 5:50] = scratch  # region 2 left at 0: unspecified
    r = _post_correction(running_app, image_id, {"mask": png(_mask()), "types": png(types)})
    assert r.status_code == 201, r.text
    back = HTTP.get(
        f"{running_app.url}/api/images/{image_id}/types?source=correction",
        headers=running_app.auth("viewer"),
    )
    assert back.status_code == 200 and back.headers["content-type"] == "image/png"
    expected = types.copy()
    expected[30:40, 40:50] = 1
    assert np.array_equal(read_png(back.content), expected)
    view = HTTP.get(f"{running_app.url}/api/images/{image_id}", headers=running_app.auth("viewer"))
    regions = view.json()["correction"]["regions"]
    assert [(r["type"], r["area"], r["bbox"]) for r in regions] == [
        ("scratch", 180, [5, 10, 45, 4]),
        ("unspecified", 100, [40, 30, 10, 10]),
    ]


def test_bad_type_masks_are_refused_and_store_nothing(running_app: RunningApp) -> None:
    services = running_app.app.services
    scratch = _type_id(running_app, "scratch", key="1")
    image_id = _upload(running_app, 2)
    services.wait_for_predictions()  # its prediction's blobs are written before we count
    blobs_before = set(services.repo.blobs)
    outside = np.zeros((H, W), np.uint8)
    outside[0, 0] = scratch
    rgb = np.zeros((H, W, 3), np.uint8)
    for types, fragment in (
        (png(np.zeros((10, 10), np.uint8)), "type mask is 10x10 but the mask is 64x48"),
        (png((_mask() > 0).astype(np.uint8) * 200), "unknown defect type ids: 200"),
        (png(outside), "1 pixels outside the defect mask"),
        (png(rgb), "mode RGB is not a type mask"),
        (b"not a png", "not a readable type mask"),
    ):
        r = _post_correction(running_app, image_id, {"mask": png(_mask()), "types": types})
        assert r.status_code == 422 and fragment in r.json()["error"], r.text
    assert services.history(image_id) == []
    assert set(services.repo.blobs) == blobs_before


def test_predicted_types_are_served_and_filter_the_queue(running_app: RunningApp) -> None:
    services = running_app.app.services
    services.wait_for_predictions()
    image_id = _upload(running_app, 3)
    services.wait_for_predictions()
    url = f"{running_app.url}/api/images/{image_id}/types"
    predicted = HTTP.get(url, headers=running_app.auth("viewer"))
    assert predicted.status_code == 200
    assert read_png(predicted.content).shape == (H, W)
    mask = _mask() > 0
    labels, _ = label_regions(mask)
    services._store_prediction(  # the served model's types are whatever it learnt: set them
        image_id,
        Prediction(
            heatmap=mask.astype(np.float32),
            mask=mask,
            defect_score=0.9,
            uncertainty=0.99,
            threshold=0.5,
            labels=labels,
            regions=[RegionType("pit", 0.7, 180), RegionType("unspecified", 0.2, 100)],
        ),
        1,
    )
    pit = _type_id(running_app, "pit")  # added when the prediction named it
    assert read_png(HTTP.get(url, headers=running_app.auth("viewer")).content)[12, 10] == pit
    view = HTTP.get(f"{running_app.url}/api/images/{image_id}", headers=running_app.auth("viewer"))
    regions = view.json()["prediction"]["regions"]
    assert [(r["type"], r["confidence"]) for r in regions] == [("pit", 0.7), ("unspecified", 0.2)]
    nxt = f"{running_app.url}/api/queue/next?order=arrival&defect_type=pit"
    r = HTTP.get(nxt, headers=running_app.auth("viewer"))
    assert r.status_code == 200 and r.json()["id"] == image_id
    unknown = HTTP.get(f"{nxt}x", headers=running_app.auth("viewer"))
    assert unknown.status_code == 422 and "no defect type called 'pitx'" in unknown.json()["error"]
    bad_source = HTTP.get(f"{url}?source=model", headers=running_app.auth("viewer"))
    assert bad_source.status_code == 422
    assert (
        HTTP.get(
            f"{running_app.url}/api/images/99999/types", headers=running_app.auth("viewer")
        ).status_code
        == 404
    )
