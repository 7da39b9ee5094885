"""Zero-label anomaly detection's rows: normality models (built from known-good images,
newest served) and the anomaly predictions they make (a heatmap blob and an image score).

Known-good images are the labelled set's defect-free images: declared good on the way in
(a defect-free correction by the uploader) or marked Defect-free by a reviewer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from storage.blobs import BlobStore
from storage.errors import NotFoundError, StorageError
from storage.masks import encode_heatmap
from storage.review_queue import newest_labels
from storage.schema import (
    AnomalyPrediction,
    Correction,
    CorrectionAction,
    Image,
    NormalityModel,
    ReviewStatus,
)


class AnomalyStore:
    """Normality models and anomaly predictions."""

    def __init__(self, sessions: sessionmaker[Session], blobs: BlobStore) -> None:
        self._sessions = sessions
        self.blobs = blobs

    def session(self) -> Session:
        return self._sessions()

    # ------------------------------------------------------------------ known-good images
    def known_good_images(self, *, limit: int | None = None) -> list[Image]:
        """Images whose label (newest non-skipped correction) is defect-free, oldest first."""
        newest = newest_labels()
        query = (
            select(Image)
            .join(newest, newest.c.image_id == Image.id)
            .join(Correction, Correction.id == newest.c.cid)
            .where(Correction.action == CorrectionAction.defect_free)
            .order_by(Image.id)
        )
        if limit is not None:
            query = query.limit(limit)
        with self.session() as s:
            return list(s.scalars(query))

    # ------------------------------------------------------------------ normality models
    def register_normality_model(
        self,
        *,
        encoder_id: str,
        good_images: int,
        path: str,
        sha256: str,
        metrics: dict[str, Any] | None = None,
    ) -> int:
        with self.session() as s, s.begin():
            row = NormalityModel(
                encoder_id=encoder_id,
                good_images=good_images,
                path=path,
                sha256=sha256,
                metrics=metrics or {},
            )
            s.add(row)
            s.flush()
            return row.id

    def newest_normality_model(self) -> NormalityModel | None:
        with self.session() as s:
            return s.scalar(select(NormalityModel).order_by(NormalityModel.id.desc()).limit(1))

    def normality_models(self) -> list[NormalityModel]:
        with self.session() as s:
            return list(s.scalars(select(NormalityModel).order_by(NormalityModel.id)))

    # ------------------------------------------------------------------ anomaly predictions
    def add_anomaly(
        self, image_id: int, *, normality_model_id: int, heatmap: np.ndarray, score: float
    ) -> int:
        """Store an anomaly heatmap (values in [0, 1], the image's size) and score."""
        with self.session() as s:
            image = s.get(Image, image_id)
            if image is None:
                raise NotFoundError(f"no image with id {image_id}")
            if heatmap.shape != (image.height, image.width):
                raise StorageError(
                    f"anomaly heatmap is {heatmap.shape}, image is {(image.height, image.width)}"
                )
        heat_sha = self.blobs.put(encode_heatmap(heatmap))
        with self.session() as s, s.begin():
            row = AnomalyPrediction(
                image_id=image_id,
                normality_model_id=normality_model_id,
                heatmap_sha256=heat_sha,
                score=float(score),
            )
            s.add(row)
            s.execute(update(Image).where(Image.id == image_id).values(anomaly_score=float(score)))
            s.flush()
            return row.id

    def latest_anomaly(self, image_id: int) -> AnomalyPrediction | None:
        with self.session() as s:
            return s.scalar(
                select(AnomalyPrediction)
                .where(AnomalyPrediction.image_id == image_id)
                .order_by(AnomalyPrediction.id.desc())
                .limit(1)
            )

    def unscored_image_ids(self, normality_model_id: int, *, limit: int | None = None) -> list[int]:
        """Pending images with no anomaly prediction from this normality model, newest
        first (what a refreshed model still has to score)."""
        scored = select(AnomalyPrediction.id).where(
            AnomalyPrediction.image_id == Image.id,
            AnomalyPrediction.normality_model_id == normality_model_id,
        )
        query = (
            select(Image.id)
            .where(Image.status == ReviewStatus.pending, ~scored.exists())
            .order_by(Image.arrived_at.desc(), Image.id.desc())
        )
        if limit is not None:
            query = query.limit(limit)
        with self.session() as s:
            return list(s.scalars(query))

    def referenced_blobs(self) -> set[str]:
        with self.session() as s:
            return set(s.scalars(select(AnomalyPrediction.heatmap_sha256)))
