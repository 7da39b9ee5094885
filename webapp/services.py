"""Application services: what the REST API and the UI both call.

They compose storage (rows and blobs) with the served model; neither `model` nor
`storage` knows about the other, only this layer does.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image as PILImage

from model.images import decode_image
from model.predict import Click, Prediction
from model.visualize import colorize_heatmap
from storage.accounts import Accounts
from storage.errors import InvalidMaskError, NotFoundError
from storage.masks import decode_heatmap, decode_mask
from storage.repository import IngestResult, Repository
from storage.schema import Correction, CorrectionAction, Role, User
from webapp.ingest import decode_upload
from webapp.model_server import ModelServer
from webapp.settings import Settings

log = logging.getLogger(__name__)

CAN_CORRECT = (Role.inspector, Role.admin)


class PermissionDenied(Exception):
    """The user's role does not allow the action."""


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def decode_mask_upload(data: bytes, name: str = "mask") -> np.ndarray:
    """A mask PNG from a client: grayscale 0/255 (or 0/1), or RGBA where alpha marks defect."""
    try:
        with PILImage.open(io.BytesIO(data)) as img:
            img.load()
            if img.mode in ("RGBA", "LA"):
                return np.asarray(img.getchannel("A")) > 0
            return np.asarray(img.convert("L"))
    except Exception as exc:
        reason = exc.__class__.__name__
        raise InvalidMaskError(f"{name}: not a readable mask image ({reason})") from exc


@dataclass
class Services:
    """Everything a request handler needs."""

    settings: Settings
    repo: Repository
    accounts: Accounts
    models: ModelServer

    trainer: Any = None  # the RetrainScheduler when this process runs one

    def __post_init__(self) -> None:
        self._predict_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        self._pending: set[Future[Any]] = set()
        self._pending_lock = threading.Lock()

    # ------------------------------------------------------------------ ingest
    def ingest(
        self, data: bytes, name: str, *, source: str = "upload", predict: bool = True
    ) -> IngestResult:
        """Validate, store and (in the background) predict one image."""
        decoded = decode_upload(
            data,
            name,
            max_bytes=self.settings.max_image_bytes,
            max_pixels=self.settings.max_image_pixels,
        )
        result = self.repo.ingest_image(
            data, width=decoded.width, height=decoded.height, format=decoded.format, source=source
        )
        if predict and not result.duplicate:
            self.schedule_prediction(result.id, decoded.rgb)
        return result

    def schedule_prediction(self, image_id: int, rgb: np.ndarray | None = None) -> Future[Any]:
        future = self._predict_pool.submit(self.predict_image, image_id, rgb)
        with self._pending_lock:
            self._pending.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: Future[Any]) -> None:
        with self._pending_lock:
            self._pending.discard(future)
        if future.exception() is not None:
            log.error("background prediction failed: %s", future.exception())

    def wait_for_predictions(self, timeout: float = 120.0) -> None:
        """Block until background predictions queued so far are done."""
        with self._pending_lock:
            futures = list(self._pending)
        for f in futures:
            f.result(timeout=timeout)

    def predict_upload(self, data: bytes, name: str) -> dict[str, Any]:
        """Validate and predict an upload without storing anything."""
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

    def image_rgb(self, image_id: int) -> np.ndarray:
        return decode_image(self.repo.image_bytes(image_id), name=f"image {image_id}")

    def predict_image(
        self,
        image_id: int,
        rgb: np.ndarray | None = None,
        clicks: tuple[Click, ...] = (),
        *,
        store: bool = True,
    ) -> Prediction:
        """Predict an image with the served model and (by default) store the prediction."""
        image = self.repo.get_image(image_id)
        rgb = rgb if rgb is not None else self.image_rgb(image_id)
        pred, version_id = self.models.predict(rgb, sha256=image.sha256, clicks=clicks)
        if store:
            self.repo.add_prediction(
                image_id,
                mask=pred.mask,
                heatmap=pred.heatmap,
                defect_score=pred.defect_score,
                uncertainty=pred.uncertainty,
                model_version_id=version_id,
            )
        return pred

    # ------------------------------------------------------------------ reading
    def image_view(self, image_id: int) -> dict[str, Any]:
        """Metadata, latest prediction and latest correction of an image (JSON-ready)."""
        image = self.repo.get_image(image_id)
        pred = self.repo.latest_prediction(image_id)
        history = self.repo.corrections_for(image_id)
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
            "prediction": None
            if pred is None
            else {
                "id": pred.id,
                "model_version": pred.model_version_id,
                "defect_score": pred.defect_score,
                "uncertainty": pred.uncertainty,
                "created_at": pred.created_at.isoformat(),
            },
            "correction": None if not history else correction_view(history[-1]),
        }

    def mask(self, image_id: int, source: str = "prediction") -> np.ndarray:
        """Latest predicted or corrected mask as a boolean array."""
        if source == "prediction":
            pred = self.repo.latest_prediction(image_id)
            if pred is None:
                self.repo.get_image(image_id)  # NotFound for unknown ids
                raise NotFoundError(f"image {image_id} has no prediction yet")
            return decode_mask(self.repo.blobs.get(pred.mask_sha256))
        if source == "correction":
            for corr in reversed(self.repo.corrections_for(image_id)):
                if corr.mask_sha256:
                    return decode_mask(self.repo.blobs.get(corr.mask_sha256))
            self.repo.get_image(image_id)
            raise NotFoundError(f"image {image_id} has no corrected mask")
        raise ValueError(f"source must be 'prediction' or 'correction', got {source!r}")

    def heatmap(self, image_id: int) -> np.ndarray:
        pred = self.repo.latest_prediction(image_id)
        if pred is None:
            self.repo.get_image(image_id)
            raise NotFoundError(f"image {image_id} has no prediction yet")
        return decode_heatmap(self.repo.blobs.get(pred.heatmap_sha256))

    def heatmap_png(self, image_id: int) -> bytes:
        return png_bytes(colorize_heatmap(self.heatmap(image_id)))

    # ------------------------------------------------------------------ writing
    def save_correction(
        self,
        image_id: int,
        user: User,
        *,
        action: str,
        mask: np.ndarray | None,
        note: str | None = None,
    ) -> int:
        """Store an inspector's decision; viewers are refused."""
        if user.role not in CAN_CORRECT:
            raise PermissionDenied(
                f"user {user.name!r} is a {user.role.value} and cannot correct masks"
            )
        pred = self.repo.latest_prediction(image_id)
        if action == CorrectionAction.accepted.value and mask is None:
            mask = self.mask(image_id, "prediction")
        return self.repo.save_correction(
            image_id,
            author=user.name,
            action=action,
            mask=mask,
            prediction_id=pred.id if pred else None,
            note=note,
        )

    def request_training(self, user: User, trigger: str = "manual") -> int:
        """Ask for a training run now (admins): started here when this process runs the
        scheduler, otherwise queued for the worker's next check."""
        if user.role is not Role.admin:
            raise PermissionDenied(f"user {user.name!r} is not an admin")
        if self.trainer is not None:
            return int(self.trainer.request(trigger))
        run_id, _ = self.repo.enqueue_training_run(trigger=trigger)
        return run_id

    def check_login(self, username: str, password: str) -> bool:
        """Gradio's login check against the users table."""
        return self.accounts.authenticate(username, password) is not None

    def shutdown(self) -> None:
        self._predict_pool.shutdown(wait=True)


def correction_view(c: Correction) -> dict[str, Any]:
    return {
        "id": c.id,
        "author": c.author,
        "action": c.action.value,
        "note": c.note,
        "created_at": c.created_at.isoformat(),
        "has_mask": c.mask_sha256 is not None,
    }
