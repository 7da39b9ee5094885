"""Images and their predictions (the image aggregate)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from storage.blobs import BlobStore
from storage.defect_types import UNSPECIFIED_ID, known_type_ids
from storage.errors import NotFoundError, StorageError
from storage.masks import (
    encode_heatmap,
    encode_mask,
    encode_type_mask,
    validate_mask,
    validate_type_mask,
)
from storage.schema import (
    Correction,
    Image,
    ModelVersion,
    PredictedRegion,
    Prediction,
    ReviewStatus,
    blob_columns,
)


@dataclass(frozen=True)
class RegionRow:
    """A predicted region as stored: its type id, pixel area and the model's confidence."""

    type_id: int
    area: int
    confidence: float


@dataclass(frozen=True)
class IngestResult:
    """Outcome of an ingest: the image id, its hash, and whether it was already stored."""

    id: int
    sha256: str
    duplicate: bool


def is_holdout(sha256: str, percent: int) -> bool:
    """Deterministic holdout assignment from the image hash."""
    return int(sha256[:8], 16) % 100 < percent


class ImageStore:
    """Images and their predictions (the image aggregate)."""

    def __init__(
        self, sessions: sessionmaker[Session], blobs: BlobStore, *, holdout_percent: int = 10
    ) -> None:
        self._sessions = sessions
        self.blobs = blobs
        self.holdout_percent = holdout_percent

    def session(self) -> Session:
        return self._sessions()

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

    def add_prediction(
        self,
        image_id: int,
        *,
        mask: np.ndarray,
        heatmap: np.ndarray,
        defect_score: float,
        uncertainty: float,
        model_version_id: int | None,
        types: np.ndarray | None = None,
        regions: Sequence[tuple[int, int, float]] = (),
    ) -> int:
        """Store a model's output for an image (and its uncertainty for the queue).

        `types` is the predicted type mask (defect_types ids, see `store_type_mask`);
        `regions` one (type_id, area, confidence) per region of the mask, by label, stored
        as predicted_regions rows so the queue can be filtered by predicted type."""
        image = self.get_image(image_id)
        mask = validate_mask(mask, width=image.width, height=image.height)
        if heatmap.shape != mask.shape:
            raise StorageError(f"heatmap is {heatmap.shape}, mask is {mask.shape}")
        rows = self._region_rows(regions)
        types_sha = self.store_type_mask(types, mask)
        mask_sha = self.blobs.put(encode_mask(mask))
        heat_sha = self.blobs.put(encode_heatmap(heatmap))
        with self.session() as s, s.begin():
            row = Prediction(
                image_id=image_id,
                model_version_id=model_version_id,
                mask_sha256=mask_sha,
                heatmap_sha256=heat_sha,
                types_sha256=types_sha,
                defect_score=float(defect_score),
                uncertainty=float(uncertainty),
            )
            s.add(row)
            s.execute(update(Image).where(Image.id == image_id).values(uncertainty=uncertainty))
            s.flush()
            s.add_all(
                PredictedRegion(
                    prediction_id=row.id,
                    image_id=image_id,
                    type_id=r.type_id,
                    area=r.area,
                    confidence=r.confidence,
                )
                for r in rows
            )
            return row.id

    def _region_rows(self, regions: Sequence[tuple[int, int, float]]) -> list[RegionRow]:
        """`regions` checked: known type ids, areas of at least 0, finite confidences."""
        if not regions:
            return []
        with self.session() as s:
            known = known_type_ids(s)
        rows: list[RegionRow] = []
        for i, (type_id, area, confidence) in enumerate(regions, start=1):
            if int(type_id) not in known:
                raise StorageError(f"region {i}: unknown defect type id {type_id}")
            if int(area) < 0 or not math.isfinite(float(confidence)):
                raise StorageError(f"region {i}: area {area}, confidence {confidence} invalid")
            rows.append(RegionRow(int(type_id), int(area), float(confidence)))
        return rows

    def store_type_mask(self, types: np.ndarray | None, mask: np.ndarray) -> str | None:
        """Validate the type mask of `mask` (`storage.masks.validate_type_mask`) and store
        it; None, and nothing stored, when it says nothing more than "unspecified"
        everywhere (the meaning of no type mask at all)."""
        if types is None:
            return None
        with self.session() as s:
            known = known_type_ids(s)
        codes = validate_type_mask(types, mask, known, unspecified=UNSPECIFIED_ID)
        if np.all(codes[mask] == UNSPECIFIED_ID):
            return None
        return self.blobs.put(encode_type_mask(codes))

    def predicted_regions(self, prediction_id: int) -> list[RegionRow]:
        """The regions of a prediction by label (1, 2, ...): empty for one stored without."""
        with self.session() as s:
            found = s.scalars(
                select(PredictedRegion)
                .where(PredictedRegion.prediction_id == prediction_id)
                .order_by(PredictedRegion.id)
            )
            return [RegionRow(r.type_id, r.area, r.confidence) for r in found]

    def get_prediction(self, prediction_id: int) -> Prediction:
        with self.session() as s:
            row = s.get(Prediction, prediction_id)
            if row is None:
                raise NotFoundError(f"no prediction with id {prediction_id}")
            return row

    def latest_prediction(self, image_id: int) -> Prediction | None:
        with self.session() as s:
            return s.scalar(
                select(Prediction)
                .where(Prediction.image_id == image_id)
                .order_by(Prediction.id.desc())
                .limit(1)
            )

    @staticmethod
    def _pending(unpredicted_only: bool) -> list[ColumnElement[bool]]:
        where = [Image.status == ReviewStatus.pending]
        if unpredicted_only:  # the prediction backlog lives in the database
            where.append(~select(Prediction.id).where(Prediction.image_id == Image.id).exists())
        return where

    def count_pending(self, *, unpredicted_only: bool = False) -> int:
        """How many images wait for review (with `unpredicted_only`: with no prediction)."""
        with self.session() as s:
            query = select(func.count()).select_from(Image).where(*self._pending(unpredicted_only))
            return int(s.scalar(query) or 0)

    def pending_image_ids(
        self, *, unpredicted_only: bool = False, limit: int | None = None
    ) -> list[int]:
        """Ids of images waiting for review, newest first; `unpredicted_only` keeps those
        with no prediction at all."""
        query = select(Image.id).where(*self._pending(unpredicted_only))
        query = query.order_by(Image.arrived_at.desc(), Image.id.desc())
        if limit is not None:
            query = query.limit(limit)
        with self.session() as s:
            return list(s.scalars(query))

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
        """Every blob a row names: the columns the schema marks as blob columns."""
        with self.session() as s:
            return {v for column in blob_columns() for v in s.scalars(select(column)) if v}

    def collect_garbage(self, *, min_age_s: float = 3600.0) -> int:
        """Delete blobs no row refers to; returns the number removed."""
        return self.blobs.collect_garbage(self.referenced_blobs(), min_age_s=min_age_s)
