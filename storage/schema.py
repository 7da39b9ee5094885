"""The database schema (SQLAlchemy 2 typed ORM). Alembic revisions in `migrations/`
must match it exactly; a test compares them."""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# Marks a column that names a blob of the blob store (`blob_columns`): the garbage
# collector keeps what they name and the backup checks it holds every one of them.
BLOB = {"blob": True}


def utcnow() -> datetime:
    """Timezone-aware current time in UTC."""
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}  # noqa: RUF012


class ReviewStatus(str, enum.Enum):
    pending = "pending"
    reviewed = "reviewed"
    skipped = "skipped"


class CorrectionAction(str, enum.Enum):
    accepted = "accepted"
    corrected = "corrected"
    defect_free = "defect_free"
    skipped = "skipped"


class Role(str, enum.Enum):
    viewer = "viewer"
    inspector = "inspector"
    admin = "admin"


class VersionStatus(str, enum.Enum):
    candidate = "candidate"
    active = "active"
    rejected = "rejected"
    retired = "retired"


class RunStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    return Enum(cls, name=name, native_enum=False, length=16, validate_strings=True)


class Image(Base):
    __tablename__ = "images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True, info=BLOB)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(16))
    size_bytes: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(200), default="upload")
    arrived_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    status: Mapped[ReviewStatus] = mapped_column(
        _enum(ReviewStatus, "review_status"), default=ReviewStatus.pending, index=True
    )
    holdout: Mapped[bool] = mapped_column(Boolean, default=False)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    # Denormalised from the newest prediction, for the review queue's ordering.
    uncertainty: Mapped[float | None] = mapped_column(Float, index=True)
    # Denormalised from the newest anomaly prediction (cold start: most anomalous first).
    anomaly_score: Mapped[float | None] = mapped_column(Float, index=True)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[Role] = mapped_column(_enum(Role, "role"), default=Role.viewer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # A stolen token must stop working by itself (expiry) or on demand (revocation).
    expires_at: Mapped[datetime | None] = mapped_column()  # None: never expires
    revoked_at: Mapped[datetime | None] = mapped_column()


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        # Exactly one active version, enforced by the database itself.
        Index(
            "uq_model_versions_one_active",
            "status",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    checkpoint_path: Mapped[str] = mapped_column(String(500))
    checkpoint_sha256: Mapped[str] = mapped_column(String(64))
    encoder_id: Mapped[str] = mapped_column(String(50))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    note: Mapped[str | None] = mapped_column(Text)
    status: Mapped[VersionStatus] = mapped_column(
        _enum(VersionStatus, "version_status"), default=VersionStatus.candidate
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column()


class DefectType(Base):
    """A class of defect regions. Its id is the pixel value of type masks (so at most 255
    of them); `key` is the one-character keyboard shortcut of the review editor."""

    __tablename__ = "defect_types"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    color: Mapped[str] = mapped_column(String(7))  # "#rrggbb"
    key: Mapped[str | None] = mapped_column(String(1), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Prediction(Base):
    __tablename__ = "predictions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), index=True)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    mask_sha256: Mapped[str] = mapped_column(String(64), info=BLOB)
    heatmap_sha256: Mapped[str] = mapped_column(String(64), info=BLOB)
    # The predicted type mask (uint8 PNG of defect_types ids); None: all "unspecified".
    types_sha256: Mapped[str | None] = mapped_column(String(64), info=BLOB)
    defect_score: Mapped[float] = mapped_column(Float)
    uncertainty: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PredictedRegion(Base):
    """One region of a prediction's mask and the type the model gave it (rows of one
    prediction in id order are its regions by label, 1, 2, ...): what the review queue
    filters on."""

    __tablename__ = "predicted_regions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prediction_id: Mapped[int] = mapped_column(ForeignKey("predictions.id"), index=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), index=True)
    type_id: Mapped[int] = mapped_column(ForeignKey("defect_types.id"))
    area: Mapped[int] = mapped_column(Integer)
    confidence: Mapped[float] = mapped_column(Float)


class Correction(Base):
    __tablename__ = "corrections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), index=True)
    prediction_id: Mapped[int | None] = mapped_column(ForeignKey("predictions.id"))
    author: Mapped[str] = mapped_column(String(100))
    action: Mapped[CorrectionAction] = mapped_column(_enum(CorrectionAction, "correction_action"))
    mask_sha256: Mapped[str | None] = mapped_column(String(64), info=BLOB)
    # The reviewer's type mask (uint8 PNG of defect_types ids); None: every region of the
    # mask is "unspecified", which is how corrections older than defect types read.
    types_sha256: Mapped[str | None] = mapped_column(String(64), info=BLOB)
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrainingRun(Base):
    __tablename__ = "training_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trigger: Mapped[str] = mapped_column(String(50))
    status: Mapped[RunStatus] = mapped_column(
        _enum(RunStatus, "run_status"), default=RunStatus.queued, index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    corrections_used: Mapped[int] = mapped_column(Integer, default=0)
    correction_watermark: Mapped[int] = mapped_column(Integer, default=0)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    log_tail: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))


class Promotion(Base):
    """One change of the active model version. Re-predicting the review queue after it is
    one job for the whole deployment: the first serving process that runs the promoted
    version claims the row, re-predicts, and marks it finished."""

    __tablename__ = "promotions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    previous_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    actor: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    claimed_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    repredicted: Mapped[int] = mapped_column(Integer, default=0)
    outcome: Mapped[str | None] = mapped_column(String(200))


class NormalityModel(Base):
    """A zero-label normality model built from known-good images (no training run): the
    newest row is the one served."""

    __tablename__ = "normality_models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    encoder_id: Mapped[str] = mapped_column(String(50))
    good_images: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)


class AnomalyPrediction(Base):
    """A normality model's output for an image: an anomaly heatmap and an image score."""

    __tablename__ = "anomaly_predictions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), index=True)
    normality_model_id: Mapped[int] = mapped_column(ForeignKey("normality_models.id"))
    heatmap_sha256: Mapped[str] = mapped_column(String(64), info=BLOB)
    score: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def blob_columns() -> list[Any]:
    """Every column whose value names a blob (marked with `info=BLOB`)."""
    return [
        column
        for table in Base.metadata.sorted_tables
        for column in table.columns
        if column.info.get("blob")
    ]
