"""The queries the application needs, as one small repository API.

Every write runs in one transaction. Blobs are written before the rows that refer to
them, so a crash in between leaves an unreferenced blob (reclaimed by
`collect_garbage`), never a row pointing at a missing blob.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
from sqlalchemy import Engine, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.blobs import BlobStore
from storage.engine import make_sessionmaker
from storage.errors import NotFoundError, StorageError
from storage.masks import encode_heatmap, encode_mask, validate_mask
from storage.schema import (
    Correction,
    CorrectionAction,
    Image,
    ModelVersion,
    Prediction,
    ReviewStatus,
    RunStatus,
    TrainingRun,
    VersionStatus,
    utcnow,
)

ACTIVATE_RETRIES = 5


@dataclass(frozen=True)
class IngestResult:
    """Outcome of an ingest: the image id, its hash, and whether it was already stored."""

    id: int
    sha256: str
    duplicate: bool


@dataclass(frozen=True)
class LabelledImage:
    """An image and its label: the newest non-skipped correction."""

    image: Image
    correction: Correction


def is_holdout(sha256: str, percent: int) -> bool:
    """Deterministic holdout assignment from the image hash."""
    return int(sha256[:8], 16) % 100 < percent


class Repository:
    """Persistence API over one database and one blob store."""

    def __init__(self, engine: Engine, blobs: BlobStore, *, holdout_percent: int = 10) -> None:
        self.engine = engine
        self.blobs = blobs
        self.holdout_percent = holdout_percent
        self._sessions = make_sessionmaker(engine)

    def session(self) -> Session:
        return self._sessions()

    # ------------------------------------------------------------------ images
    def ingest_image(
        self, data: bytes, *, width: int, height: int, format: str, source: str = "upload"
    ) -> IngestResult:
        """Store an already validated image; idempotent by sha256."""
        if width <= 0 or height <= 0:
            raise StorageError(f"image size must be positive, got {width}x{height}")
        sha = hashlib.sha256(data).hexdigest()
        with self.session() as s:
            existing = s.scalar(select(Image.id).where(Image.sha256 == sha))
            if existing is not None:
                return IngestResult(existing, sha, True)
        self.blobs.put(data)  # blob first: a crash after this leaves only an orphan blob
        try:
            row = Image(
                sha256=sha,
                width=width,
                height=height,
                format=format,
                size_bytes=len(data),
                source=source,
                holdout=is_holdout(sha, self.holdout_percent),
            )
            return IngestResult(self._insert_image(row), sha, False)
        except IntegrityError:  # the same bytes were ingested concurrently
            with self.session() as s:
                existing = s.scalar(select(Image.id).where(Image.sha256 == sha))
            if existing is None:
                raise
            return IngestResult(existing, sha, True)

    def _insert_image(self, row: Image) -> int:
        with self.session() as s, s.begin():
            s.add(row)
            s.flush()
            return row.id

    def get_image(self, image_id: int) -> Image:
        with self.session() as s:
            row = s.get(Image, image_id)
            if row is None:
                raise NotFoundError(f"no image with id {image_id}")
            return row

    def image_bytes(self, image_id: int) -> bytes:
        """The stored image file, hash-verified."""
        return self.blobs.get(self.get_image(image_id).sha256)

    # ------------------------------------------------------------------ predictions
    def add_prediction(
        self,
        image_id: int,
        *,
        mask: np.ndarray,
        heatmap: np.ndarray,
        defect_score: float,
        uncertainty: float,
        model_version_id: int | None,
    ) -> int:
        """Store a model's output for an image (and its uncertainty for the queue)."""
        image = self.get_image(image_id)
        mask = validate_mask(mask, width=image.width, height=image.height)
        if heatmap.shape != mask.shape:
            raise StorageError(f"heatmap is {heatmap.shape}, mask is {mask.shape}")
        mask_sha = self.blobs.put(encode_mask(mask))
        heat_sha = self.blobs.put(encode_heatmap(heatmap))
        with self.session() as s, s.begin():
            row = Prediction(
                image_id=image_id,
                model_version_id=model_version_id,
                mask_sha256=mask_sha,
                heatmap_sha256=heat_sha,
                defect_score=float(defect_score),
                uncertainty=float(uncertainty),
            )
            s.add(row)
            s.execute(update(Image).where(Image.id == image_id).values(uncertainty=uncertainty))
            s.flush()
            return row.id

    def latest_prediction(self, image_id: int) -> Prediction | None:
        with self.session() as s:
            return s.scalar(
                select(Prediction)
                .where(Prediction.image_id == image_id)
                .order_by(Prediction.id.desc())
                .limit(1)
            )

    # ------------------------------------------------------------------ review queue
    def next_for_review(
        self, reviewer: str, *, order: str = "uncertainty", lease_seconds: float = 600.0
    ) -> Image | None:
        """Lease the next pending image to `reviewer`; None when the queue is empty.

        Two reviewers never hold the same image; an abandoned lease expires after
        `lease_seconds`. A reviewer asking again gets back the image they hold.
        """
        if order == "uncertainty":
            ordering = (Image.uncertainty.desc().nulls_last(), Image.arrived_at, Image.id)
        elif order == "arrival":
            ordering = (Image.arrived_at, Image.id)
        else:
            raise ValueError(f"order must be 'uncertainty' or 'arrival', got {order!r}")
        for _ in range(10):
            with self.session() as s, s.begin():
                now = utcnow()
                free = or_(
                    Image.lease_owner.is_(None),
                    Image.lease_expires_at < now,
                    Image.lease_owner == reviewer,
                )
                held = s.scalar(
                    select(Image)
                    .where(
                        Image.status == ReviewStatus.pending,
                        Image.lease_owner == reviewer,
                        Image.lease_expires_at >= now,
                    )
                    .limit(1)
                )
                if held is not None:
                    held.lease_expires_at = now + timedelta(seconds=lease_seconds)
                    return held
                candidates = s.scalars(
                    select(Image.id)
                    .where(Image.status == ReviewStatus.pending, free)
                    .order_by(*ordering)
                    .limit(5)
                ).all()
                if not candidates:
                    return None
                for image_id in candidates:
                    claimed = s.execute(
                        update(Image)
                        .where(Image.id == image_id, Image.status == ReviewStatus.pending, free)
                        .values(
                            lease_owner=reviewer,
                            lease_expires_at=now + timedelta(seconds=lease_seconds),
                        )
                    )
                    if claimed.rowcount == 1:
                        return s.get(Image, image_id)
        return None

    # ------------------------------------------------------------------ corrections
    def save_correction(
        self,
        image_id: int,
        *,
        author: str,
        action: CorrectionAction | str,
        mask: np.ndarray | None = None,
        prediction_id: int | None = None,
        note: str | None = None,
    ) -> int:
        """Append a correction (the newest one is the image's label) in one transaction.

        accepted / corrected need a mask of the image's size; defect_free stores an empty
        mask; skipped stores none. The reviewer's lease is released.
        """
        try:
            action = CorrectionAction(action)
        except ValueError as exc:
            choices = ", ".join(a.value for a in CorrectionAction)
            raise StorageError(f"unknown action {action!r}; choose one of {choices}") from exc
        image = self.get_image(image_id)
        mask_sha = None
        if action in (CorrectionAction.accepted, CorrectionAction.corrected):
            if mask is None:
                raise StorageError(f"action {action.value} needs a mask")
            mask_sha = self.blobs.put(
                encode_mask(validate_mask(mask, width=image.width, height=image.height))
            )
        elif action is CorrectionAction.defect_free:
            mask_sha = self.blobs.put(encode_mask(np.zeros((image.height, image.width), bool)))
        status = (
            ReviewStatus.skipped if action is CorrectionAction.skipped else ReviewStatus.reviewed
        )
        with self.session() as s, s.begin():
            if prediction_id is not None:
                pred = s.get(Prediction, prediction_id)
                if pred is None or pred.image_id != image_id:
                    raise NotFoundError(f"no prediction {prediction_id} for image {image_id}")
            row = Correction(
                image_id=image_id,
                prediction_id=prediction_id,
                author=author,
                action=action,
                mask_sha256=mask_sha,
                note=note,
            )
            s.add(row)
            s.execute(
                update(Image)
                .where(Image.id == image_id)
                .values(status=status, lease_owner=None, lease_expires_at=None)
            )
            s.flush()
            return row.id

    def corrections_for(self, image_id: int) -> list[Correction]:
        """The image's correction history, oldest first."""
        with self.session() as s:
            return list(
                s.scalars(
                    select(Correction)
                    .where(Correction.image_id == image_id)
                    .order_by(Correction.id)
                )
            )

    def labelled_since(
        self, watermark: int = 0, *, holdout: bool | None = None
    ) -> list[LabelledImage]:
        """Newest non-skipped correction of every image that has one with id > `watermark`
        (0: every labelled image). `holdout` filters on the holdout assignment."""
        newest = (
            select(Correction.image_id, func.max(Correction.id).label("cid"))
            .where(Correction.action != CorrectionAction.skipped)
            .group_by(Correction.image_id)
            .subquery()
        )
        query = (
            select(Image, Correction)
            .join(newest, newest.c.image_id == Image.id)
            .join(Correction, Correction.id == newest.c.cid)
            .where(newest.c.cid > watermark)
            .order_by(Image.id)
        )
        if holdout is not None:
            query = query.where(Image.holdout.is_(holdout))
        with self.session() as s:
            return [LabelledImage(i, c) for i, c in s.execute(query).all()]

    def holdout_set(self) -> list[LabelledImage]:
        """The fixed holdout: labelled images whose hash assigns them to it."""
        return self.labelled_since(0, holdout=True)

    def max_correction_id(self) -> int:
        with self.session() as s:
            return int(s.scalar(select(func.coalesce(func.max(Correction.id), 0))) or 0)

    # ------------------------------------------------------------------ model versions
    def register_model_version(
        self,
        *,
        checkpoint_path: str,
        checkpoint_sha256: str,
        encoder_id: str,
        metrics: dict[str, Any] | None = None,
        parent_id: int | None = None,
        note: str | None = None,
    ) -> int:
        with self.session() as s, s.begin():
            row = ModelVersion(
                checkpoint_path=checkpoint_path,
                checkpoint_sha256=checkpoint_sha256,
                encoder_id=encoder_id,
                metrics=metrics or {},
                parent_id=parent_id,
                note=note,
            )
            s.add(row)
            s.flush()
            return row.id

    def set_version_status(self, version_id: int, status: VersionStatus) -> None:
        """Mark a candidate rejected / retired (activation goes through `activate`)."""
        if status is VersionStatus.active:
            raise StorageError("use activate() to make a version active")
        with self.session() as s, s.begin():
            row = s.get(ModelVersion, version_id)
            if row is None:
                raise NotFoundError(f"no model version with id {version_id}")
            row.status = status

    def activate(self, version_id: int) -> None:
        """Make `version_id` the one active version (also used for rollback).

        The database's partial unique index guarantees one active row; a concurrent
        activation that loses the race is retried, so the last one wins cleanly.
        """
        for attempt in range(ACTIVATE_RETRIES):
            try:
                with self.session() as s, s.begin():
                    row = s.get(ModelVersion, version_id)
                    if row is None:
                        raise NotFoundError(f"no model version with id {version_id}")
                    if row.status is VersionStatus.active:
                        return
                    s.execute(
                        update(ModelVersion)
                        .where(ModelVersion.status == VersionStatus.active)
                        .values(status=VersionStatus.retired)
                    )
                    s.flush()
                    row.status = VersionStatus.active
                    row.activated_at = utcnow()
                return
            except IntegrityError:
                if attempt == ACTIVATE_RETRIES - 1:
                    raise

    def active_version(self) -> ModelVersion | None:
        with self.session() as s:
            return s.scalar(select(ModelVersion).where(ModelVersion.status == VersionStatus.active))

    def model_versions(self) -> list[ModelVersion]:
        with self.session() as s:
            return list(s.scalars(select(ModelVersion).order_by(ModelVersion.id)))

    # ------------------------------------------------------------------ training runs
    def create_training_run(self, *, trigger: str, watermark: int) -> int:
        with self.session() as s, s.begin():
            row = TrainingRun(trigger=trigger, correction_watermark=watermark)
            s.add(row)
            s.flush()
            return row.id

    def enqueue_training_run(self, *, trigger: str) -> tuple[int, bool]:
        """A queued run unless one is queued or running already: (run id, created?)."""
        with self.session() as s, s.begin():
            busy = s.scalar(
                select(TrainingRun.id)
                .where(TrainingRun.status.in_([RunStatus.queued, RunStatus.running]))
                .limit(1)
            )
            if busy is not None:
                return int(busy), False
            row = TrainingRun(trigger=trigger, correction_watermark=0)
            s.add(row)
            s.flush()
            return row.id, True

    def update_training_run(self, run_id: int, **fields: Any) -> TrainingRun:
        """Set fields of a run (status, metrics, log_tail, error, times, …)."""
        unknown = set(fields) - set(TrainingRun.__table__.columns.keys())
        if unknown:
            raise StorageError(f"unknown training-run fields: {sorted(unknown)}")
        if "status" in fields:
            fields["status"] = RunStatus(fields["status"])
        with self.session() as s, s.begin():
            row = s.get(TrainingRun, run_id)
            if row is None:
                raise NotFoundError(f"no training run with id {run_id}")
            for key, value in fields.items():
                setattr(row, key, value)
            return row

    def cancel_training_run(self, run_id: int) -> bool:
        """Mark a queued or running run cancelled (its trainer stops at the next epoch);
        False when it had already finished."""
        with self.session() as s, s.begin():
            result = s.execute(
                update(TrainingRun)
                .where(
                    TrainingRun.id == run_id,
                    TrainingRun.status.in_([RunStatus.queued, RunStatus.running]),
                )
                .values(status=RunStatus.cancelled, error="cancelled by a user")
            )
            if result.rowcount == 0 and s.get(TrainingRun, run_id) is None:
                raise NotFoundError(f"no training run with id {run_id}")
            return result.rowcount == 1

    def training_runs(self, limit: int = 50) -> list[TrainingRun]:
        """The newest runs first."""
        with self.session() as s:
            return list(s.scalars(select(TrainingRun).order_by(TrainingRun.id.desc()).limit(limit)))

    def active_training_run(self) -> TrainingRun | None:
        """A queued or running run, if any (at most one trains at a time)."""
        with self.session() as s:
            return s.scalar(
                select(TrainingRun)
                .where(TrainingRun.status.in_([RunStatus.queued, RunStatus.running]))
                .order_by(TrainingRun.id)
                .limit(1)
            )

    def last_successful_watermark(self) -> int:
        """The correction watermark of the newest succeeded run (0 when none)."""
        with self.session() as s:
            value = s.scalar(
                select(TrainingRun.correction_watermark)
                .where(TrainingRun.status == RunStatus.succeeded)
                .order_by(TrainingRun.id.desc())
                .limit(1)
            )
            return int(value or 0)

    def count_corrections_since(self, watermark: int) -> int:
        """Non-skipped corrections with an id above `watermark`."""
        with self.session() as s:
            return int(
                s.scalar(
                    select(func.count())
                    .select_from(Correction)
                    .where(Correction.id > watermark, Correction.action != CorrectionAction.skipped)
                )
                or 0
            )

    def fail_interrupted_runs(self, reason: str) -> list[int]:
        """Mark `running` runs failed (their worker is gone); returns their ids. Queued runs
        are kept: the scheduler starts them."""
        with self.session() as s, s.begin():
            rows = list(
                s.scalars(select(TrainingRun).where(TrainingRun.status == RunStatus.running))
            )
            for row in rows:
                row.status = RunStatus.failed
                row.error = reason
                row.finished_at = utcnow()
            return [r.id for r in rows]

    def get_training_run(self, run_id: int) -> TrainingRun:
        with self.session() as s:
            row = s.get(TrainingRun, run_id)
            if row is None:
                raise NotFoundError(f"no training run with id {run_id}")
            return row

    # ------------------------------------------------------------------ dashboard, GC
    def counts(self) -> dict[str, int]:
        """Numbers for the dashboard (each can also be plotted over time by the app)."""
        with self.session() as s:
            by_status = dict(
                s.execute(select(Image.status, func.count()).group_by(Image.status)).all()
            )
            return {
                "images": int(sum(by_status.values())),
                "pending": int(by_status.get(ReviewStatus.pending, 0)),
                "reviewed": int(by_status.get(ReviewStatus.reviewed, 0)),
                "skipped": int(by_status.get(ReviewStatus.skipped, 0)),
                "corrections": int(s.scalar(select(func.count()).select_from(Correction)) or 0),
                "predictions": int(s.scalar(select(func.count()).select_from(Prediction)) or 0),
                "model_versions": int(
                    s.scalar(select(func.count()).select_from(ModelVersion)) or 0
                ),
            }

    def referenced_blobs(self) -> set[str]:
        with self.session() as s:
            refs: set[str] = set(s.scalars(select(Image.sha256)))
            refs |= set(s.scalars(select(Prediction.mask_sha256)))
            refs |= set(s.scalars(select(Prediction.heatmap_sha256)))
            refs |= {m for m in s.scalars(select(Correction.mask_sha256)) if m}
            return refs

    def collect_garbage(self, *, min_age_s: float = 3600.0) -> int:
        """Delete blobs no row refers to; returns the number removed."""
        return self.blobs.collect_garbage(self.referenced_blobs(), min_age_s=min_age_s)
