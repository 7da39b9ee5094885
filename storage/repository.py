"""One database and one blob store, by aggregate: images and predictions, the review
queue, the model registry, the training-run queue, zero-label anomaly detection and the
defect types, sharing one sessionmaker.

Every write runs in one transaction. Blobs are written before the rows that refer to
them, so a crash in between leaves an unreferenced blob (reclaimed by
`ImageStore.collect_garbage`), never a row pointing at a missing blob.
"""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from storage.anomaly_store import AnomalyStore
from storage.blobs import BlobStore
from storage.defect_types import DefectTypeStore
from storage.engine import make_sessionmaker
from storage.image_store import ImageStore
from storage.model_registry import ModelRegistry
from storage.review_queue import ReviewQueue
from storage.training_runs import TrainingRunQueue


class Repository:
    """The persistence API: one attribute per aggregate."""

    def __init__(self, engine: Engine, blobs: BlobStore, *, holdout_percent: int = 10) -> None:
        self.engine = engine
        self.blobs = blobs
        self._sessions = make_sessionmaker(engine)
        self.images = ImageStore(self._sessions, blobs, holdout_percent=holdout_percent)
        self.reviews = ReviewQueue(self._sessions, blobs, self.images)
        self.registry = ModelRegistry(self._sessions)
        self.runs = TrainingRunQueue(self._sessions)
        self.anomalies = AnomalyStore(self._sessions, blobs)
        self.types = DefectTypeStore(self._sessions)

    def session(self) -> Session:
        return self._sessions()
