"""Application services: the one door the REST API and the UI both go through.

They compose storage (rows and blobs) with the served model and check permissions; the API
and the UI are thin adapters that translate requests into these calls and render the
answers. Neither `model` nor `storage` knows about the other, only this layer does.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image as PILImage

from model.checkpoint import read_checkpoint
from model.click_mask import refine_with_clicks
from model.cpu_threads import pin_intra_op_threads, prediction_workers
from model.errors import CheckpointError
from model.geometry import scale_label
from model.images import decode_image
from model.predict import Click, Prediction
from model.region_types import codes_from_regions, label_regions
from model.starter import starter_progress
from model.visualize import colorize_heatmap
from storage.accounts import Accounts
from storage.defect_types import UNSPECIFIED_ID
from storage.errors import NotFoundError, StorageError
from storage.image_store import IngestResult
from storage.masks import decode_heatmap, decode_mask, decode_type_mask
from storage.repository import Repository
from storage.review_queue import ImageState
from storage.schema import (
    Correction,
    CorrectionAction,
    DefectType,
    Image,
    ModelVersion,
    Promotion,
    TrainingRun,
    User,
)
from webapp.anomaly_service import AnomalyService
from webapp.cold_start import (
    FIRST_MODEL_TRIGGER,
    GOOD,
    GOOD_NOTE,
    LabelProgress,
    label_progress,
    parse_ingest_label,
)
from webapp.export import ExportReport, export_archive
from webapp.ingest import decode_upload
from webapp.model_server import ModelServer
from webapp.permissions import Permission, PermissionDenied, allowed, require
from webapp.prediction_queue import PredictionQueue
from webapp.region_view import regions_view
from webapp.review_order import OrderContext, strategy
from webapp.settings import Settings
from webapp.typed_regions import retyped
from webapp.views import correction_view

log = logging.getLogger(__name__)

# A background batch decodes its images and holds their full-size heatmaps and masks at
# once: above this many pixels it is split, so large images do not multiply peak memory by
# the batch size (an image larger than this is predicted alone).
PREDICTION_BATCH_PIXELS = 32_000_000

__all__ = ["PermissionDenied", "Services", "png_bytes"]


class Trainer(Protocol):
    """What the services need of the retraining scheduler running in this process."""

    def request(self, trigger: str) -> int: ...


class Watcher(Protocol):
    """What the services need of this process's hot-swap watcher."""

    def wake(self) -> None: ...

    def problem(self) -> str | None: ...


@dataclass(frozen=True)
class Ingested(IngestResult):
    """An ingest's outcome; `labelled`: a declared-good label was stored by this call."""

    labelled: bool = False


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def type_view(t: DefectType) -> dict[str, Any]:
    """A defect type as the API and the UI show it."""
    return {"id": t.id, "name": t.name, "color": t.color, "key": t.key}


def _require_admin(user: User | None, verb: str) -> User:
    """Admins only (the role that manages models manages the type list too)."""
    if user is None:
        raise PermissionDenied(f"sign in to {verb}")
    if not allowed(user, Permission.manage_models):
        raise PermissionDenied(f"user {user.name!r} is a {user.role.value} and cannot {verb}")
    return user


def _areas(labels: np.ndarray, count: int) -> list[int]:
    """Pixel area of each labelled region, by label."""
    return [int(a) for a in np.bincount(labels.ravel(), minlength=count + 1)[1:]]


def _pixel_chunks(images: Sequence[Image], max_pixels: int) -> list[list[Image]]:
    """`images` in order, cut into runs of at most `max_pixels` (at least one image each)."""
    chunks: list[list[Image]] = []
    pixels = 0
    for image in images:
        size = image.width * image.height
        if not chunks or pixels + size > max_pixels:
            chunks.append([])
            pixels = 0
        chunks[-1].append(image)
        pixels += size
    return chunks


@dataclass
class Services:
    """Everything a request handler needs, behind permission checks."""

    settings: Settings
    repo: Repository
    accounts: Accounts
    models: ModelServer

    trainer: Trainer | None = None  # the retraining scheduler when this process runs one
    watcher: Watcher | None = None  # this process's hot-swap watcher
    anomaly: AnomalyService | None = None  # this process's normality model (zero-label maps)
    predictions: PredictionQueue = field(init=False)

    def __post_init__(self) -> None:
        workers, threads = prediction_workers(self.settings.prediction_workers)
        self.predictions = PredictionQueue(
            self._predict_in_background,
            capacity=self.settings.prediction_queue_size,
            batch_size=self.settings.prediction_batch_size,
            refill=self._unpredicted,
            workers=workers,
            on_worker_start=None if threads is None else partial(pin_intra_op_threads, threads),
        )

    def _unpredicted(self, limit: int) -> list[int]:
        """The database backlog: pending images with no prediction (none without a model)."""
        if self.models.current is None:
            return []
        return self.repo.images.pending_image_ids(unpredicted_only=True, limit=limit)

    # ------------------------------------------------------------------ users
    def user(self, name: str | None) -> User | None:
        """The signed-in user named `name` (None for no or an unknown name)."""
        if not name:
            return None
        try:
            return self.accounts.get_user(name)
        except StorageError:
            return None

    def user_for_token(self, token: str) -> User | None:
        return self.accounts.user_for_token(token)

    def check_login(self, username: str, password: str) -> bool:
        """Gradio's login check against the users table."""
        return self.accounts.authenticate(username, password) is not None

    # ------------------------------------------------------------------ ingest
    def ingest(
        self,
        data: bytes,
        name: str,
        *,
        user: User | None = None,
        source: str = "upload",
        label: str | None = None,
    ) -> Ingested:
        """Validate, store and (in the background) predict one image.

        `user` None is a trusted in-process source (the inbox folder, the demo). `label`
        "good" declares the image defect-free: that is a label, so it needs the review
        permission and is stored as a defect-free correction by the uploader (audited,
        never queued); a duplicate gets it only when it has no label yet.
        """
        label = parse_ingest_label(label)
        if user is not None:
            require(user, Permission.ingest)
            if label is not None:
                require(user, Permission.review)
        decoded = decode_upload(
            data,
            name,
            max_bytes=self.settings.max_image_bytes,
            max_pixels=self.settings.max_image_pixels,
        )
        result = self.repo.images.ingest_image(
            data, width=decoded.width, height=decoded.height, format=decoded.format, source=source
        )
        if not result.duplicate:
            self.predictions.submit(result.id)
        labelled = label == GOOD and self._declare_good(result.id, user.name if user else source)
        return Ingested(result.id, result.sha256, result.duplicate, labelled)

    def _declare_good(self, image_id: int, author: str) -> bool:
        """Store the declared-good label unless the image has a label; True when stored."""
        history = self.repo.reviews.corrections_for(image_id)
        if any(c.action is not CorrectionAction.skipped for c in history):
            return False
        self.repo.reviews.save_correction(
            image_id, author=author, action=CorrectionAction.defect_free, note=GOOD_NOTE
        )
        if self.anomaly is not None:  # a new known-good image: the normality model refits
            self.anomaly.wake()
        self._after_label()
        return True

    def predict_upload(self, data: bytes, name: str, user: User) -> dict[str, Any]:
        """Validate and predict an upload without storing anything."""
        require(user, Permission.read)
        decoded = decode_upload(
            data,
            name,
            max_bytes=self.settings.max_image_bytes,
            max_pixels=self.settings.max_image_pixels,
        )
        sha = hashlib.sha256(data).hexdigest()
        pred, version_id = self.models.predict(decoded.rgb, sha256=sha)
        return {
            "model_version": version_id,
            "defect_score": pred.defect_score,
            "uncertainty": pred.uncertainty,
            "defective": pred.is_defective,
            "defect_pixels": int(pred.mask.sum()),
        }

    # ------------------------------------------------------------------ predictions
    def _predict_in_background(self, image_ids: list[int]) -> None:
        """Supervised predictions of a batch when a model is served, then each image's
        anomaly map when a normality model is (no model of either kind: nothing to do,
        nothing to report).

        The queue retries a failed batch image by image; an image the served version has
        predicted already is skipped, so an image stored before the failure (in an earlier
        pixel chunk) is not predicted twice.
        """
        served = self.models.current
        if served is not None:
            images = [self.repo.images.get_image(i) for i in image_ids]
            todo = [im for im in images if not self._predicted_by(im.id, served.version_id)]
            for chunk in _pixel_chunks(todo, PREDICTION_BATCH_PIXELS):
                self._predict_and_store(chunk)
        if self.anomaly is not None and self.anomaly.current is not None:
            for image_id in image_ids:
                try:
                    self.anomaly.score_image(image_id)
                except Exception as exc:  # the supervised predictions are stored already
                    log.warning("anomaly scoring of image %s failed: %s", image_id, exc)

    def _predicted_by(self, image_id: int, version_id: int | None) -> bool:
        if version_id is None:  # unregistered models cannot be told apart
            return False
        latest = self.repo.images.latest_prediction(image_id)
        return latest is not None and latest.model_version_id == version_id

    def _predict_and_store(self, images: Sequence[Image]) -> None:
        """Decode `images`, predict them in one model call (so with one served version) and
        store every prediction; nothing is stored unless all of them decoded and predicted."""
        rgbs = [self.image_rgb(image.id) for image in images]
        preds, version_id = self.models.predict_many(rgbs, shas=[im.sha256 for im in images])
        for image, pred in zip(images, preds, strict=True):
            self._store_prediction(image.id, pred, version_id)

    def _store_prediction(self, image_id: int, pred: Prediction, version_id: int | None) -> None:
        """Store a prediction with its type mask and one predicted_regions row per region
        (names the table lacks are added: a model may know types the deployment does not)."""
        labels = pred.labels
        if labels is None or labels.shape != pred.mask.shape:  # a model without region output
            labels, count = label_regions(pred.mask)
            regions = [(UNSPECIFIED_ID, area, 0.0) for area in _areas(labels, count)]
        else:
            ids = self.repo.types.ensure(r.name for r in pred.regions)
            count = int(labels.max(initial=0))
            regions = [(ids[r.name], int(r.area), float(r.confidence)) for r in pred.regions]
            # Labels beyond the model's list of regions stay "unspecified".
            regions += [(UNSPECIFIED_ID, a, 0.0) for a in _areas(labels, count)[len(regions) :]]
            regions = regions[:count]
        codes = codes_from_regions(labels, [type_id for type_id, _, _ in regions])
        codes[~pred.mask.astype(bool)] = 0  # types only where the mask is
        self.repo.images.add_prediction(
            image_id,
            mask=pred.mask,
            heatmap=pred.heatmap,
            defect_score=pred.defect_score,
            uncertainty=pred.uncertainty,
            model_version_id=version_id,
            types=codes,
            regions=regions,
        )

    def schedule_prediction(self, image_id: int) -> bool:
        """Queue a background prediction; False when the queue is full (the image stays in
        the database backlog and is picked up when the queue drains)."""
        return self.predictions.submit(image_id)

    def wait_for_predictions(self, timeout: float = 300.0) -> bool:
        """Block until background predictions queued so far are done."""
        return self.predictions.wait_idle(timeout)

    def image_rgb(self, image_id: int) -> np.ndarray:
        return decode_image(self.repo.images.image_bytes(image_id), name=f"image {image_id}")

    def predict_image(
        self,
        image_id: int,
        rgb: np.ndarray | None = None,
        clicks: tuple[Click, ...] = (),
        *,
        store: bool = True,
    ) -> Prediction:
        """Predict an image with the served model and (by default) store the prediction."""
        image = self.repo.images.get_image(image_id)
        rgb = rgb if rgb is not None else self.image_rgb(image_id)
        pred, version_id = self.models.predict(rgb, sha256=image.sha256, clicks=clicks)
        if store:
            self._store_prediction(image_id, pred, version_id)
        return pred

    # ------------------------------------------------------------------ reading
    def image_view(self, image_id: int) -> dict[str, Any]:
        """Metadata, latest prediction and latest correction of an image (JSON-ready).

        `state` is what a save of this image must carry as `based_on`."""
        image = self.repo.images.get_image(image_id)
        pred = self.repo.images.latest_prediction(image_id)
        history = self.repo.reviews.corrections_for(image_id)
        state = ImageState(pred.id if pred else None, history[-1].id if history else None)
        names = {t.id: t.name for t in self.repo.types.list()}
        correction = None
        if history:
            correction = correction_view(history[-1]) | {
                "regions": self._correction_regions(history[-1], names)
            }
        return {
            "id": image.id,
            "sha256": image.sha256,
            "width": image.width,
            "height": image.height,
            "format": image.format,
            "source": image.source,
            "arrived_at": image.arrived_at.isoformat(),
            "status": image.status.value,
            "holdout": image.holdout,
            "state": state.token,
            "prediction": None
            if pred is None
            else {
                "id": pred.id,
                "model_version": pred.model_version_id,
                "defect_score": pred.defect_score,
                "uncertainty": pred.uncertainty,
                "created_at": pred.created_at.isoformat(),
                "regions": self._prediction_regions(pred, names),
            },
            "correction": correction,
            "anomaly": self.anomaly_view(image_id),
        }

    def _prediction_regions(self, pred: Any, names: dict[int, str]) -> list[dict[str, Any]]:
        mask = decode_mask(self.repo.blobs.get(pred.mask_sha256))
        types = self._types_blob(pred.types_sha256)
        confidences = [r.confidence for r in self.repo.images.predicted_regions(pred.id)]
        return regions_view(mask, types, names, confidences)

    def _correction_regions(self, corr: Correction, names: dict[int, str]) -> list[dict[str, Any]]:
        if corr.mask_sha256 is None:
            return []
        mask = decode_mask(self.repo.blobs.get(corr.mask_sha256))
        return regions_view(mask, self._types_blob(corr.types_sha256), names)

    def _types_blob(self, sha: str | None) -> np.ndarray | None:
        return None if sha is None else decode_type_mask(self.repo.blobs.get(sha))

    def anomaly_view(self, image_id: int) -> dict[str, Any] | None:
        """The image's latest anomaly score and the normality model behind it (None: not
        scored yet), JSON-ready."""
        found = self.repo.anomalies.latest_anomaly(image_id)
        if found is None:
            return None
        models = {m.id: m for m in self.repo.anomalies.normality_models()}
        model = models.get(found.normality_model_id)
        return {
            "score": found.score,
            "version": found.normality_model_id,
            "good_images": None if model is None else model.good_images,
            "created_at": found.created_at.isoformat(),
        }

    def history(self, image_id: int) -> list[Correction]:
        """The image's corrections, oldest first."""
        self.repo.images.get_image(image_id)
        return self.repo.reviews.corrections_for(image_id)

    def correction_mask(self, image_id: int, correction_id: int) -> np.ndarray | None:
        """The mask stored with one earlier correction (None: that correction has none)."""
        for c in self.repo.reviews.corrections_for(image_id):
            if c.id == correction_id:
                return decode_mask(self.repo.blobs.get(c.mask_sha256)) if c.mask_sha256 else None
        raise NotFoundError(f"image {image_id} has no correction {correction_id}")

    def mask(self, image_id: int, source: str = "prediction") -> np.ndarray:
        """Latest predicted or corrected mask as a boolean array."""
        if source == "prediction":
            pred = self.repo.images.latest_prediction(image_id)
            if pred is None:
                self.repo.images.get_image(image_id)  # NotFound for unknown ids
                raise NotFoundError(f"image {image_id} has no prediction yet")
            return decode_mask(self.repo.blobs.get(pred.mask_sha256))
        if source == "correction":
            for corr in reversed(self.repo.reviews.corrections_for(image_id)):
                if corr.mask_sha256:
                    return decode_mask(self.repo.blobs.get(corr.mask_sha256))
            self.repo.images.get_image(image_id)
            raise NotFoundError(f"image {image_id} has no corrected mask")
        raise ValueError(f"source must be 'prediction' or 'correction', got {source!r}")

    def type_mask(self, image_id: int, source: str = "prediction") -> np.ndarray:
        """The latest predicted or corrected type mask: uint8 defect-type ids, 0 outside
        the mask, "unspecified" where the mask is set and no type mask was stored."""
        sha: str | None
        if source == "prediction":
            pred = self.repo.images.latest_prediction(image_id)
            if pred is None:
                self.repo.images.get_image(image_id)
                raise NotFoundError(f"image {image_id} has no prediction yet")
            mask_sha, sha = pred.mask_sha256, pred.types_sha256
        elif source == "correction":
            found = next(
                (c for c in reversed(self.repo.reviews.corrections_for(image_id)) if c.mask_sha256),
                None,
            )
            if found is None or found.mask_sha256 is None:
                self.repo.images.get_image(image_id)
                raise NotFoundError(f"image {image_id} has no corrected mask")
            mask_sha, sha = found.mask_sha256, found.types_sha256
        else:
            raise ValueError(f"source must be 'prediction' or 'correction', got {source!r}")
        mask = decode_mask(self.repo.blobs.get(mask_sha))
        types = self._types_blob(sha)
        if types is None or types.shape != mask.shape:
            return (mask * UNSPECIFIED_ID).astype(np.uint8)
        return types

    def heatmap(self, image_id: int, source: str = "model") -> np.ndarray:
        """The latest heatmap of the supervised model (`model`) or the normality model
        (`anomaly`, the zero-label map), values in [0, 1] at the image's size."""
        if source == "model":
            pred = self.repo.images.latest_prediction(image_id)
            if pred is None:
                self.repo.images.get_image(image_id)
                raise NotFoundError(f"image {image_id} has no prediction yet")
            return decode_heatmap(self.repo.blobs.get(pred.heatmap_sha256))
        if source == "anomaly":
            found = self.repo.anomalies.latest_anomaly(image_id)
            if found is None:
                self.repo.images.get_image(image_id)
                raise NotFoundError(
                    f"image {image_id} has no anomaly map yet (it needs a normality model, "
                    "built once at least 2 images are marked defect-free)"
                )
            return decode_heatmap(self.repo.blobs.get(found.heatmap_sha256))
        raise ValueError(f"source must be 'model' or 'anomaly', got {source!r}")

    def heatmap_png(self, image_id: int, source: str = "model") -> bytes:
        return png_bytes(colorize_heatmap(self.heatmap(image_id, source)))

    def propose_mask(
        self,
        image_id: int,
        clicks: Sequence[tuple[float, float, bool]],
        *,
        rgb: np.ndarray | None = None,
    ) -> np.ndarray:
        """A mask from (x, y, positive) clicks without a trained decoder, so a click helps
        from the first image: grown from the clicked spots, guided by the image's anomaly
        map when it has one."""
        rgb = rgb if rgb is not None else self.image_rgb(image_id)
        try:
            heat: np.ndarray | None = self.heatmap(image_id, source="anomaly")
        except NotFoundError:
            heat = None
        return refine_with_clicks(rgb, clicks, heatmap=heat)

    def counts(self) -> dict[str, int]:
        return self.repo.images.counts()

    # ------------------------------------------------------------------ review
    def next_for_review(self, user: User, order: str, defect_type: str | None = None) -> int | None:
        """The next image for `user` in the named order: leased to reviewers, so two never
        get the same one; only shown (no lease) to read-only users. With `defect_type`,
        only images whose newest prediction has a region of that type (422 for a name no
        type has)."""
        require(user, Permission.read)
        context = OrderContext(
            model_served=self.models.current is not None,
            random_share=self.settings.cold_start_random_share,
        )
        keys = strategy(order).keys(context)
        if allowed(user, Permission.review):
            image = self.repo.reviews.next_for_review(
                user.name,
                order=keys,
                lease_seconds=self.settings.lease_seconds,
                defect_type=defect_type,
            )
        else:
            image = self.repo.reviews.peek_for_review(order=keys, defect_type=defect_type)
        return None if image is None else image.id

    def save_correction(
        self,
        image_id: int,
        user: User,
        *,
        action: str,
        mask: np.ndarray | None,
        based_on: ImageState | str | None,
        note: str | None = None,
        types: np.ndarray | None = None,
    ) -> int:
        """Store a reviewer's decision on the state of the image they saw.

        `types` is the type mask of `mask` (defect-type ids at the image's size, 0 outside
        the mask; None: every region "unspecified"). Accept without a mask stores the mask
        and the type mask of the prediction in `based_on`; Accept with `types` (regions
        retyped on screen) stores the prediction's mask with those types, as a correction
        when they differ from the predicted ones (the model's mask was right, its types
        were not). A save based on an older
        state (a newer prediction or correction exists) or on an image another reviewer
        holds is refused with `SaveConflict` (409) and stores nothing.
        """
        require(user, Permission.review)
        if based_on is None:
            raise ValueError("based_on: the image state the save is based on is required")
        state = ImageState.parse(based_on) if isinstance(based_on, str) else based_on
        if action == CorrectionAction.accepted.value and mask is None:
            if state.prediction_id is None:
                raise StorageError(f"image {image_id} has no prediction to accept")
            pred = self.repo.images.get_prediction(state.prediction_id)
            if pred.image_id != image_id:
                raise NotFoundError(f"image {image_id} has no prediction {state.prediction_id}")
            mask = decode_mask(self.repo.blobs.get(pred.mask_sha256))
            predicted = self._types_blob(pred.types_sha256)
            if types is None:
                types = predicted
            else:  # the prediction's mask with the reviewer's types
                types = retyped(mask, types, predicted)
                if types is not predicted:
                    action = CorrectionAction.corrected.value
        correction_id = self.repo.reviews.save_correction(
            image_id,
            author=user.name,
            action=action,
            mask=mask,
            based_on=state,
            note=note,
            types=types,
        )
        if self.anomaly is not None:  # the known-good set may have changed: refit now
            self.anomaly.wake()
        self._after_label()
        return correction_id

    # ------------------------------------------------------------------ defect types
    def defect_types(self) -> list[dict[str, Any]]:
        """Every defect type ({id, name, color, key}), "unspecified" first."""
        return [type_view(t) for t in self.repo.types.list()]

    def add_defect_type(
        self, user: User | None, name: str, color: str | None = None, key: str | None = None
    ) -> dict[str, Any]:
        """A new defect type (admins); DuplicateError (409) for a taken name or key,
        StorageError (422) for a bad name, colour or key."""
        _require_admin(user, "manage defect types")
        return type_view(self.repo.types.add(name, color=color, key=key))

    def update_defect_type(self, user: User | None, type_id: int, **fields: Any) -> dict[str, Any]:
        """Rename, recolour or re-key a type (admins); `key=None` removes its key."""
        _require_admin(user, "manage defect types")
        unknown = sorted(set(fields) - {"name", "color", "key"})
        if unknown:
            raise ValueError(f"a defect type has no field {', '.join(unknown)}")
        return type_view(self.repo.types.update(type_id, **fields))

    # ------------------------------------------------------------------ models
    def model_versions(self) -> list[ModelVersion]:
        return self.repo.registry.model_versions()

    def promotions(self, limit: int = 50) -> list[Promotion]:
        """Changes of the active model, newest first, with their re-prediction outcome."""
        return self.repo.registry.promotions(limit)

    def activate(self, version_id: int, user: User) -> bool:
        """Promote or roll back to `version_id` (admins); True when the active version
        changed. Only the database is written, after checking that the checkpoint is
        there and intact; each serving process's watcher loads, smoke-tests and swaps, and
        one of them re-predicts the review queue."""
        require(user, Permission.manage_models)
        version = self.repo.registry.get_version(version_id)
        path = Path(version.checkpoint_path)
        if not path.is_file():
            raise CheckpointError(f"version {version_id}: checkpoint {path} is missing")
        read_checkpoint(path, expected_sha256=version.checkpoint_sha256)
        changed = self.repo.registry.activate(version_id, actor=user.name)
        if self.watcher is not None:
            self.watcher.wake()
        return changed

    def model_status(self) -> dict[str, Any]:
        """What is served, what is active, and what is wrong (for health and the UI)."""
        served = self.models.current
        active = self.repo.registry.active_version()
        meta = served.predictor.bundle.meta if served is not None else None
        problem = self.watcher.problem() if self.watcher is not None else None
        normality = self.anomaly.served if self.anomaly is not None else None
        state = "model" if served is not None else "no_model"
        if served is None and normality is not None:
            state = "anomaly_only"  # zero-label anomaly maps until the first model is served
        return {
            "state": state,
            "served_version": None if served is None else served.version_id,
            "active_version": None if active is None else active.id,
            "encoder": None if meta is None else meta.encoder_id,
            "mask_threshold": None if meta is None else meta.mask_threshold,
            "min_defect_area": None if meta is None else meta.min_defect_area,
            # How the served model sees an image: tile side and pixel scale ("fit": squashed).
            "tile": None if meta is None else meta.input_size,
            "pixel_scale": None if meta is None else scale_label(meta.pixel_scale),
            "test_time_views": None if served is None else len(served.predictor.active_views),
            "precision": None if served is None else served.predictor.precision,
            "problem": problem,
            "normality_model": None if normality is None else normality.model_id,
            "normality_good_images": None if normality is None else normality.model.good_images,
            "anomaly_problem": self.anomaly.problem() if self.anomaly is not None else None,
            "normality_fit": self.anomaly.fitting if self.anomaly is not None else None,
            "starter": self.starter_status() if active is None else None,
        }

    def starter_status(self) -> dict[str, Any] | None:
        """While no model exists: the starter heads the first model will start from, as
        `model.starter.starter_progress` reads them (None when they are not used)."""
        if self.settings.training.first_model_start != "starter":
            return None
        return starter_progress(self.settings.models_dir)

    def health(self) -> dict[str, Any]:
        status = self.model_status()
        return {
            "status": "ok" if status["state"] == "model" else "no_model",
            "state": status["state"],
            "active_model_version": status["active_version"],
            "served_model_version": status["served_version"],
            "tile": status["tile"],
            "pixel_scale": status["pixel_scale"],
            "test_time_views": status["test_time_views"],
            "problem": status["problem"],
            "normality_model": status["normality_model"],
            "anomaly_problem": status["anomaly_problem"],
            "normality_fit": status["normality_fit"],
            "starter": status["starter"],
            "queue_length": self.repo.images.counts()["pending"],
            "prediction_backlog": self.predictions.backlog,
            "prediction_workers": self.predictions.workers,
            "prediction_unpredicted": self.repo.images.count_pending(unpredicted_only=True),
        }

    # ------------------------------------------------------------------ training
    def request_training(self, user: User, trigger: str = "manual") -> int:
        """Ask for a training run now (admins): started here when this process runs the
        scheduler, otherwise queued for the worker's next check."""
        require(user, Permission.train)
        return self._request_training(trigger)

    def _request_training(self, trigger: str) -> int:
        if self.trainer is not None:
            return int(self.trainer.request(trigger))
        run_id, _ = self.repo.runs.enqueue_training_run(trigger=trigger)
        return run_id

    # ------------------------------------------------------------------ cold start
    def label_progress(self) -> LabelProgress:
        """The labelled set against the first model's threshold (K labels, M defective)."""
        return label_progress(
            self.repo,
            needed=self.settings.first_model_labels,
            min_defective=self.settings.first_model_min_defective,
        )

    def first_model_run(self) -> TrainingRun | None:
        """The training run queued or running while no model version exists yet."""
        if self.repo.registry.model_versions():
            return None
        return self.repo.runs.active_training_run()

    def _after_label(self) -> int | None:
        """While no model version exists, the save that brings the labelled set to the
        threshold requests the first training run at once (never a second one beside a
        queued or running run). The label is stored whatever happens here: a failure is
        logged, and the scheduler's periodic check still starts a run later."""
        try:
            if self.repo.registry.model_versions() or self.repo.runs.active_training_run():
                return None
            if not self.label_progress().enough:
                return None
            run_id = self._request_training(FIRST_MODEL_TRIGGER)
        except Exception:
            log.exception("could not request the first model's training run")
            return None
        log.info("first model: training run %s requested", run_id)
        return run_id

    def cancel_training(self, user: User, run_id: int | None = None) -> tuple[TrainingRun, bool]:
        """Cancel run `run_id` (default: the one queued or running; NotFound when none); its
        trainer stops after the current epoch. Returns the run as it is now and whether this
        call cancelled it (False: it had already finished)."""
        require(user, Permission.train)
        if run_id is None:
            running = self.repo.runs.active_training_run()
            if running is None:
                raise NotFoundError("no training run is queued or running")
            run_id = running.id
        cancelled = self.repo.runs.cancel_training_run(run_id)
        return self.repo.runs.get_training_run(run_id), cancelled

    def training_runs(self, limit: int = 20) -> list[TrainingRun]:
        return self.repo.runs.training_runs(limit=limit)

    def training_run(self, run_id: int) -> TrainingRun:
        return self.repo.runs.get_training_run(run_id)

    # ------------------------------------------------------------------ export
    def export(self, user: User | None, fmt: str) -> ExportReport:
        """Write the labelled set as a zip in `fmt` (png, coco, mvtec) under the data
        directory (one file per format, replaced by the next export) and report on it:
        damaged items are skipped and listed, never the whole export."""
        require(user, Permission.export)
        folder = self.settings.data_dir / "exports"
        folder.mkdir(parents=True, exist_ok=True)
        return export_archive(self.repo, fmt, folder / f"heatprompt-{fmt}.zip")

    def shutdown(self) -> None:
        self.predictions.shutdown(wait=True)
        self.models.close()
