"""The review queue: leases, corrections and the labelled set."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, func, or_, select, true, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql import Subquery

from storage.blobs import BlobStore
from storage.defect_types import type_named
from storage.errors import NotFoundError, StorageError
from storage.image_store import ImageStore
from storage.masks import encode_mask, validate_mask
from storage.schema import (
    Correction,
    CorrectionAction,
    Image,
    PredictedRegion,
    Prediction,
    ReviewStatus,
    utcnow,
)


class QueueKey(str, enum.Enum):
    """Sort keys the review queue can be ordered by (composed by a review strategy)."""

    uncertainty_desc = "uncertainty_desc"
    anomaly_desc = "anomaly_desc"
    arrival = "arrival"
    random = "random"


_QUEUE_ORDER = {
    QueueKey.uncertainty_desc: (Image.uncertainty.desc().nulls_last(),),
    QueueKey.anomaly_desc: (Image.anomaly_score.desc().nulls_last(),),
    QueueKey.arrival: (Image.arrived_at, Image.id),
    QueueKey.random: (func.random(),),  # SQLite and PostgreSQL both have random()
}


def _ordering(keys: Sequence[QueueKey]) -> list[Any]:
    if not keys:
        raise ValueError("a queue order needs at least one sort key")
    clauses = [c for key in keys for c in _QUEUE_ORDER[QueueKey(key)]]
    return [*clauses, Image.id]


def newest_labels() -> Subquery:
    """(image_id, cid): each image's label, its newest non-skipped correction."""
    return (
        select(Correction.image_id, func.max(Correction.id).label("cid"))
        .where(Correction.action != CorrectionAction.skipped)
        .group_by(Correction.image_id)
        .subquery()
    )


def _predicted_type(s: Session, defect_type: str | None) -> ColumnElement[bool]:
    """Images whose newest prediction has a region of `defect_type` (None: every image);
    StorageError for a name no type has."""
    if defect_type is None:
        return true()
    type_id = type_named(s, defect_type).id
    newest = (
        select(func.max(Prediction.id))
        .where(Prediction.image_id == PredictedRegion.image_id)
        .scalar_subquery()
    )
    return (
        select(PredictedRegion.id)
        .where(
            PredictedRegion.image_id == Image.id,
            PredictedRegion.prediction_id == newest,
            PredictedRegion.type_id == type_id,
        )
        .exists()
    )


@dataclass(frozen=True)
class ImageState:
    """What a reviewer saw of an image: its newest prediction and correction (None: none
    yet). A save carries the state it is based on, so it cannot silently overwrite a
    newer one; `token` is its compact form for forms and JSON."""

    prediction_id: int | None
    correction_id: int | None

    @property
    def token(self) -> str:
        return f"p{self.prediction_id or 0}-c{self.correction_id or 0}"

    @classmethod
    def parse(cls, token: str) -> ImageState:
        try:
            p, c = token.strip().split("-")
            if p[0] != "p" or c[0] != "c":
                raise ValueError
            return cls(int(p[1:]) or None, int(c[1:]) or None)
        except (ValueError, IndexError):
            raise ValueError(f"based_on must look like 'p12-c3', got {token!r}") from None


class SaveConflict(StorageError):
    """A save that would overwrite a newer state of the image, or an image another
    reviewer holds (HTTP 409). `current` is the state now stored; nothing was written."""

    def __init__(self, message: str, current: ImageState) -> None:
        super().__init__(message)
        self.current = current


@dataclass(frozen=True)
class LabelledImage:
    """An image and its label: the newest non-skipped correction."""

    image: Image
    correction: Correction


class ReviewQueue:
    """The review queue: leases, corrections and the labelled set."""

    def __init__(
        self, sessions: sessionmaker[Session], blobs: BlobStore, images: ImageStore
    ) -> None:
        self._sessions = sessions
        self.blobs = blobs
        self._images = images

    def session(self) -> Session:
        return self._sessions()

    def next_for_review(
        self,
        reviewer: str,
        *,
        order: Sequence[QueueKey],
        lease_seconds: float = 600.0,
        defect_type: str | None = None,
    ) -> Image | None:
        """Lease the next pending image to `reviewer`; None when the queue is empty.

        Two reviewers never hold the same image; an abandoned lease expires after
        `lease_seconds`. A reviewer asking again gets back the image they hold. With
        `defect_type`, only images whose newest prediction has a region of that type are
        handed out; a held image of another type is let go, so a reviewer holds one image.
        """
        ordering = _ordering(order)
        for _ in range(10):
            with self.session() as s, s.begin():
                now = utcnow()
                of_type = _predicted_type(s, defect_type)
                free = or_(
                    Image.lease_owner.is_(None),
                    Image.lease_expires_at < now,
                    Image.lease_owner == reviewer,
                )
                mine = (
                    Image.status == ReviewStatus.pending,
                    Image.lease_owner == reviewer,
                    Image.lease_expires_at >= now,
                )
                held = s.scalar(select(Image).where(*mine, of_type).limit(1))
                if held is not None:
                    held.lease_expires_at = now + timedelta(seconds=lease_seconds)
                    return held
                candidates = s.scalars(
                    select(Image.id)
                    .where(Image.status == ReviewStatus.pending, free, of_type)
                    .order_by(*ordering)
                    .limit(5)
                ).all()
                if not candidates:
                    return None
                s.execute(  # a held image the filter leaves out
                    update(Image).where(*mine).values(lease_owner=None, lease_expires_at=None)
                )
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

    def peek_for_review(
        self, *, order: Sequence[QueueKey], defect_type: str | None = None
    ) -> Image | None:
        """The first pending image in `order` without leasing it (read-only users); with
        `defect_type`, the first whose newest prediction has a region of that type."""
        with self.session() as s:
            return s.scalar(
                select(Image)
                .where(Image.status == ReviewStatus.pending, _predicted_type(s, defect_type))
                .order_by(*_ordering(order))
                .limit(1)
            )

    def image_state(self, image_id: int) -> ImageState:
        """The image's newest prediction and correction ids."""
        with self.session() as s:
            return self._state(s, image_id)

    @staticmethod
    def _state(s: Session, image_id: int) -> ImageState:
        newest_pred = select(func.max(Prediction.id)).where(Prediction.image_id == image_id)
        newest_corr = select(func.max(Correction.id)).where(Correction.image_id == image_id)
        row = s.execute(select(newest_pred.scalar_subquery(), newest_corr.scalar_subquery())).one()
        return ImageState(row[0], row[1])

    def save_correction(
        self,
        image_id: int,
        *,
        author: str,
        action: CorrectionAction | str,
        mask: np.ndarray | None = None,
        based_on: ImageState | None = None,
        note: str | None = None,
        types: np.ndarray | None = None,
    ) -> int:
        """Append a correction (the newest one is the image's label) in one transaction.

        accepted / corrected need a mask of the image's size, and may carry `types`, its
        type mask (defect_types ids, `ImageStore.store_type_mask`; None: every region
        "unspecified"); defect_free stores an empty mask; skipped stores none. The
        reviewer's lease is released. With `based_on`, the save is refused with
        `SaveConflict` when the image has changed since (a newer prediction or correction);
        it is always refused while another reviewer holds a live lease on the image.
        """
        try:
            action = CorrectionAction(action)
        except ValueError as exc:
            choices = ", ".join(a.value for a in CorrectionAction)
            raise StorageError(f"unknown action {action!r}; choose one of {choices}") from exc
        image = self._images.get_image(image_id)
        mask_sha = types_sha = None
        if action in (CorrectionAction.accepted, CorrectionAction.corrected):
            if mask is None:
                raise StorageError(f"action {action.value} needs a mask")
            mask = validate_mask(mask, width=image.width, height=image.height)
            types_sha = self._images.store_type_mask(types, mask)
            mask_sha = self.blobs.put(encode_mask(mask))
        elif types is not None and np.any(types):
            raise StorageError(f"action {action.value} has no regions to give types to")
        if action is CorrectionAction.defect_free:
            mask_sha = self.blobs.put(encode_mask(np.zeros((image.height, image.width), bool)))
        status = (
            ReviewStatus.skipped if action is CorrectionAction.skipped else ReviewStatus.reviewed
        )
        with self.session() as s, s.begin():
            # Lock the image row so two saves of one image are checked one after the other.
            row_image = s.scalar(select(Image).where(Image.id == image_id).with_for_update())
            if row_image is None:
                raise NotFoundError(f"no image with id {image_id}")
            current = self._state(s, image_id)
            now = utcnow()
            expires = row_image.lease_expires_at
            if expires is not None and expires.tzinfo is None:  # SQLite drops the zone
                expires = expires.replace(tzinfo=now.tzinfo)
            if (
                row_image.lease_owner not in (None, author)
                and expires is not None
                and expires >= now
            ):
                raise SaveConflict(
                    f"image {image_id} is being reviewed by {row_image.lease_owner}; "
                    "nothing was saved",
                    current,
                )
            if based_on is not None and based_on != current:
                raise SaveConflict(
                    f"image {image_id} changed since you opened it (you saw "
                    f"{based_on.token}, it is now {current.token}); nothing was saved",
                    current,
                )
            prediction_id = based_on.prediction_id if based_on else current.prediction_id
            row = Correction(
                image_id=image_id,
                prediction_id=prediction_id,
                author=author,
                action=action,
                mask_sha256=mask_sha,
                types_sha256=types_sha,
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
        newest = newest_labels()
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
