"""Defect types through the services (the door the API and the UI share), on SQLite and
PostgreSQL: the type list for admins, typed corrections and accepts, stored typed
predictions, regions in the image view, the queue by predicted type, and retraining
samples that carry their types."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.predict import Prediction
from model.region_types import RegionType, label_regions
from storage.defect_types import UNSPECIFIED_ID
from storage.errors import DuplicateError, StorageError
from storage.schema import Role, User
from tests.storage_fixtures import ENGINES, postgres_schema
from webapp.app import build_services
from webapp.permissions import PermissionDenied
from webapp.retraining import RetrainConfig, to_samples
from webapp.services import Services
from webapp.settings import Settings

W, H = 40, 30


@pytest.fixture(params=ENGINES)
def services(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Services]:
    """Services over a fresh database, with no model served (predictions are stored from
    `Prediction`s made here)."""
    with ExitStack() as stack:
        url = None
        if request.param == "postgresql":
            url = stack.enter_context(postgres_schema("svc"))
        built = build_services(Settings(data_dir=tmp_path / "data", database_url=url))
        stack.callback(built.repo.engine.dispose)
        stack.callback(built.shutdown)
        yield built


def _user(services: Services, role: Role) -> User:
    services.accounts.add_user(role.value, "a-long-password", role=role.value)
    user = services.user(role.value)
    assert user is not None
    return user


def _image(services: Services, seed: int = 0) -> int:
    buf = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(60, 200, (H, W, 3), np.uint8)
    Image.fromarray(pixels).save(buf, format="PNG")
    return services.ingest(buf.getvalue(), f"{seed}.png").id


def _mask() -> np.ndarray:
    """Two regions: a scratch-like bar (label 1) and a blob lower right (label 2)."""
    m = np.zeros((H, W), bool)
    m[5:8, 3:30] = True
    m[20:26, 30:36] = True
    return m


def _prediction(names: list[str], confidences: list[float]) -> Prediction:
    mask = _mask()
    labels, _ = label_regions(mask)
    areas = np.bincount(labels.ravel())[1:]
    return Prediction(
        heatmap=mask.astype(np.float32),
        mask=mask,
        defect_score=0.9,
        uncertainty=0.3,
        threshold=0.5,
        labels=labels,
        regions=[
            RegionType(n, c, int(a)) for n, c, a in zip(names, confidences, areas, strict=True)
        ],
    )


def _state(services: Services, image_id: int) -> str:
    return str(services.image_view(image_id)["state"])


# ------------------------------------------------------------------------ type list
def test_admins_manage_the_type_list_and_everyone_reads_it(services: Services) -> None:
    admin, inspector = _user(services, Role.admin), _user(services, Role.inspector)
    added = services.add_defect_type(admin, "scratch", color="#FF0000", key="1")
    assert added == {"id": 2, "name": "scratch", "color": "#ff0000", "key": "1"}
    with pytest.raises(PermissionDenied, match="inspector and cannot manage defect types"):
        services.add_defect_type(inspector, "stain")
    with pytest.raises(PermissionDenied, match="sign in"):
        services.update_defect_type(None, 2, name="x")
    with pytest.raises(DuplicateError):
        services.add_defect_type(admin, "Scratch")
    with pytest.raises(ValueError, match="no field shape"):
        services.update_defect_type(admin, 2, shape="round")
    assert services.update_defect_type(admin, 2, key=None, name="long scratch")["key"] is None
    assert [t["name"] for t in services.defect_types()] == ["unspecified", "long scratch"]


# ---------------------------------------------------------------------- corrections
def test_a_typed_correction_reads_back_as_its_type_mask_and_regions(services: Services) -> None:
    inspector = _user(services, Role.inspector)
    scratch = services.repo.types.add("scratch").id
    image_id = _image(services)
    types = np.zeros((H, W), np.uint8)
    types[5:8, 3:30] = scratch  # the bar is a scratch, the blob left unspecified (0)
    services.save_correction(
        image_id,
        inspector,
        action="corrected",
        mask=_mask(),
        based_on=_state(services, image_id),
        types=types,
    )
    stored = services.type_mask(image_id, "correction")
    assert stored[6, 10] == scratch and stored[22, 32] == UNSPECIFIED_ID and stored[0, 0] == 0
    regions = services.image_view(image_id)["correction"]["regions"]
    assert [(r["label"], r["type"], r["area"], r["bbox"]) for r in regions] == [
        (1, "scratch", 81, [3, 5, 27, 3]),
        (2, "unspecified", 36, [30, 20, 6, 6]),
    ]
    assert "confidence" not in regions[0]


def test_a_bad_type_mask_stores_nothing(services: Services) -> None:
    inspector = _user(services, Role.inspector)
    image_id = _image(services)
    with pytest.raises(StorageError, match="unknown defect type ids: 7"):
        services.save_correction(
            image_id,
            inspector,
            action="corrected",
            mask=_mask(),
            based_on=_state(services, image_id),
            types=_mask().astype(np.uint8) * 7,
        )
    assert services.history(image_id) == []


def test_accept_copies_the_predictions_types(services: Services) -> None:
    inspector = _user(services, Role.inspector)
    image_id = _image(services)
    services._store_prediction(image_id, _prediction(["crack", "unspecified"], [0.8, 0.4]), None)
    services.save_correction(
        image_id, inspector, action="accepted", mask=None, based_on=_state(services, image_id)
    )
    assert np.array_equal(
        services.type_mask(image_id, "correction"), services.type_mask(image_id, "prediction")
    )
    crack = services.repo.types.by_name("crack")
    assert crack is not None and services.type_mask(image_id, "correction")[6, 10] == crack.id


def test_accept_with_regions_retyped_stores_them_as_a_correction(services: Services) -> None:
    inspector = _user(services, Role.inspector)
    image_id = _image(services)
    services._store_prediction(image_id, _prediction(["crack", "unspecified"], [0.8, 0.4]), None)
    predicted = services.type_mask(image_id, "prediction")

    def accept(types: np.ndarray) -> str:
        services.save_correction(
            image_id,
            inspector,
            action="accepted",
            mask=None,
            based_on=_state(services, image_id),
            types=types,
        )
        return services.history(image_id)[-1].action.value

    assert accept(predicted.copy()) == "accepted"  # nothing retyped: still an accept
    dent = services.add_defect_type(_user(services, Role.admin), "dent")["id"]
    shown = np.zeros_like(predicted)
    shown[predicted == UNSPECIFIED_ID] = dent  # the second region retyped; the first untouched
    assert accept(shown) == "corrected"
    stored = services.type_mask(image_id, "correction")
    np.testing.assert_array_equal(stored > 0, predicted > 0)  # the prediction's mask
    crack = services.repo.types.by_name("crack")
    assert crack is not None and stored[6, 10] == crack.id and stored[22, 32] == dent
    with pytest.raises(ValueError, match="types are 3x3"):
        accept(np.zeros((3, 3), np.uint8))


# ---------------------------------------------------------------------- predictions
def test_a_typed_prediction_is_stored_with_new_types_and_regions(services: Services) -> None:
    image_id = _image(services)
    services._store_prediction(image_id, _prediction(["crack", "unspecified"], [0.8, 0.4]), None)
    assert [t["name"] for t in services.defect_types()] == ["unspecified", "crack"]
    regions = services.image_view(image_id)["prediction"]["regions"]
    assert [(r["type"], r["area"]) for r in regions] == [("crack", 81), ("unspecified", 36)]
    assert [r["confidence"] for r in regions] == pytest.approx([0.8, 0.4])
    types = services.type_mask(image_id, "prediction")
    assert set(np.unique(types).tolist()) == {0, 1, 2}


def test_a_prediction_without_regions_is_all_unspecified(services: Services) -> None:
    image_id = _image(services)
    untyped = _prediction(["unspecified", "unspecified"], [0.0, 0.0])
    untyped.labels, untyped.regions = None, []
    services._store_prediction(image_id, untyped, None)
    assert np.array_equal(services.type_mask(image_id), _mask().astype(np.uint8))
    rows = services.repo.images.predicted_regions(
        services.repo.images.latest_prediction(image_id).id  # type: ignore[union-attr]
    )
    assert [(r.type_id, r.area) for r in rows] == [(UNSPECIFIED_ID, 81), (UNSPECIFIED_ID, 36)]


def test_the_queue_serves_one_predicted_type(services: Services) -> None:
    inspector, viewer = _user(services, Role.inspector), _user(services, Role.viewer)
    a, b = _image(services, 1), _image(services, 2)
    services._store_prediction(a, _prediction(["stain", "stain"], [0.9, 0.9]), None)
    services._store_prediction(b, _prediction(["unspecified", "scratch"], [0.1, 0.7]), None)
    assert services.next_for_review(viewer, "arrival", defect_type="scratch") == b
    assert services.next_for_review(inspector, "arrival", defect_type="stain") == a
    assert services.next_for_review(inspector, "arrival") == a  # the one it holds
    with pytest.raises(StorageError, match="no defect type called 'dent'"):
        services.next_for_review(inspector, "arrival", defect_type="dent")


# ----------------------------------------------------------------------- retraining
def test_training_samples_carry_types_and_are_grouped_by_their_main_type(
    services: Services,
) -> None:
    inspector = _user(services, Role.inspector)
    scratch = services.repo.types.add("scratch").id
    typed, untyped, good = _image(services, 1), _image(services, 2), _image(services, 3)
    types = np.zeros((H, W), np.uint8)
    types[_mask()] = scratch
    for image_id, action, t in ((typed, "corrected", types), (untyped, "corrected", None)):
        services.save_correction(
            image_id,
            inspector,
            action=action,
            mask=_mask(),
            based_on=_state(services, image_id),
            types=t,
        )
    services.save_correction(
        good, inspector, action="defect_free", mask=None, based_on=_state(services, good)
    )
    items, skipped = to_samples(services.repo, services.repo.reviews.labelled_since(0), 20)
    assert skipped == []
    by_id = {int(it.sample.image_path.name.split("-")[1]): it for it in items}
    assert [by_id[i].defect_type for i in (typed, untyped, good)] == ["scratch", "defect", "good"]
    for item in items:
        assert item.types is not None and item.types.shape == item.mask.shape == (20, 20)
        assert np.array_equal(item.types > 0, item.mask)  # types exactly where the mask is
        assert item.type_names == {UNSPECIFIED_ID: "unspecified", scratch: "scratch"}
    assert set(np.unique(by_id[typed].types).tolist()) == {0, scratch}
    assert set(np.unique(by_id[untyped].types).tolist()) == {0, UNSPECIFIED_ID}


def test_the_per_type_margin_is_a_setting_that_is_off_by_default() -> None:
    assert RetrainConfig().type_regression_margin is None
    assert RetrainConfig(type_regression_margin=0.05).type_regression_margin == 0.05
    with pytest.raises(ValueError):
        RetrainConfig(type_regression_margin=-0.1)


def _report(score: float, per_type: dict[str, float], typed: dict[str, float] | None = None):  # type: ignore[no-untyped-def]
    """A holdout report as `model.evaluate` writes it (only what the gate reads)."""
    report = {
        "score": score,
        "per_type": {name: {"iou": v, "dice": v, "count": 3} for name, v in per_type.items()}
        | {"good": {"empty": 1.0, "count": 4}},
    }
    if typed is not None:
        report["types"] = {"per_type": {n: {"iou": v, "images": 2} for n, v in typed.items()}}
    return report


def test_the_gate_refuses_a_candidate_that_loses_one_type() -> None:
    from webapp.retraining import decide

    active = _report(0.80, {"scratch": 0.80, "stain": 0.60})
    candidate = _report(0.85, {"scratch": 0.95, "stain": 0.45})  # better overall
    assert decide(candidate, active, True, 0.01)[0]  # no per-type margin: promoted
    promote, why = decide(candidate, active, True, 0.01, type_margin=0.1)
    assert not promote
    assert "'stain'" in why and "0.4500" in why and "0.6000" in why
    assert decide(candidate, active, True, 0.01, type_margin=0.2)[0]
    # A type only one report measured cannot regress.
    assert decide(
        _report(0.85, {"scratch": 0.9, "dent": 0.0}), active, True, 0.01, type_margin=0.1
    )[0]
    # The overall margin still comes first.
    promote, why = decide(_report(0.5, {"scratch": 0.9}), active, True, 0.01, type_margin=0.1)
    assert not promote and "holdout score" in why


def test_the_gate_prefers_the_typed_decisions_pixel_iou() -> None:
    from webapp.retraining import decide

    active = _report(0.8, {"defect": 0.7}, typed={"scratch": 0.7, "stain": 0.6})
    candidate = _report(0.8, {"defect": 0.7}, typed={"scratch": 0.7, "stain": 0.3})
    promote, why = decide(candidate, active, True, 0.01, type_margin=0.05)
    assert not promote and "'stain'" in why
    # An untyped active model: both are compared on the holdout images' types.
    untyped = _report(0.8, {"defect": 0.9})
    promote, why = decide(candidate, untyped, True, 0.01, type_margin=0.05)
    assert not promote and "'defect'" in why
