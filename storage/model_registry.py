"""Model versions, the one active version and its promotions."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from storage.errors import NotFoundError, StorageError
from storage.schema import (
    ModelVersion,
    Promotion,
    VersionStatus,
    utcnow,
)

ACTIVATE_RETRIES = 5


class ModelRegistry:
    """Model versions, the one active version and its promotions."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def session(self) -> Session:
        return self._sessions()

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

    def activate(self, version_id: int, *, actor: str = "system") -> bool:
        """Make `version_id` the one active version (also used for rollback); True when the
        active version changed.

        Only the database changes here: every serving process's watcher notices, loads and
        swaps. A change records a `Promotion`, the one re-prediction job it calls for. The
        partial unique index guarantees one active row; a concurrent activation that loses
        the race is retried, so the last one wins cleanly.
        """
        for attempt in range(ACTIVATE_RETRIES):
            try:
                with self.session() as s, s.begin():
                    row = s.get(ModelVersion, version_id)
                    if row is None:
                        raise NotFoundError(f"no model version with id {version_id}")
                    if row.status is VersionStatus.active:
                        return False
                    previous = s.scalar(
                        select(ModelVersion.id).where(ModelVersion.status == VersionStatus.active)
                    )
                    s.execute(
                        update(ModelVersion)
                        .where(ModelVersion.status == VersionStatus.active)
                        .values(status=VersionStatus.retired)
                    )
                    s.flush()
                    row.status = VersionStatus.active
                    row.activated_at = utcnow()
                    s.add(Promotion(version_id=version_id, previous_id=previous, actor=actor))
                return True
            except IntegrityError:
                if attempt == ACTIVATE_RETRIES - 1:
                    raise
        return False

    def get_version(self, version_id: int) -> ModelVersion:
        with self.session() as s:
            row = s.get(ModelVersion, version_id)
            if row is None:
                raise NotFoundError(f"no model version with id {version_id}")
            return row

    def claim_promotion(
        self, version_id: int, owner: str, *, stale_after_s: float = 900.0
    ) -> Promotion | None:
        """Claim the newest unfinished promotion of `version_id` for `owner` (None when there
        is none, or another process holds a fresh claim). Older unfinished promotions are
        closed as superseded: only the newest change of the active model needs the queue
        re-predicted. A claim older than `stale_after_s` (its process died) is taken over."""
        now = utcnow()
        with self.session() as s, s.begin():
            newest = s.scalar(
                select(Promotion)
                .where(Promotion.finished_at.is_(None))
                .order_by(Promotion.id.desc())
                .limit(1)
            )
            if newest is None:
                return None
            s.execute(
                update(Promotion)
                .where(Promotion.finished_at.is_(None), Promotion.id < newest.id)
                .values(finished_at=now, outcome="superseded by a newer promotion")
            )
            if newest.version_id != version_id:
                return None
            free = or_(
                Promotion.claimed_by.is_(None),
                Promotion.claimed_at < now - timedelta(seconds=stale_after_s),
            )
            claimed = s.execute(
                update(Promotion)
                .where(Promotion.id == newest.id, Promotion.finished_at.is_(None), free)
                .values(claimed_by=owner, claimed_at=now)
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount != 1:
                return None
            s.flush()
            s.refresh(newest)
            return newest

    def finish_promotion(self, promotion_id: int, *, repredicted: int, outcome: str) -> None:
        with self.session() as s, s.begin():
            s.execute(
                update(Promotion)
                .where(Promotion.id == promotion_id)
                .values(finished_at=utcnow(), repredicted=repredicted, outcome=outcome[:200])
            )

    def promotions(self, limit: int = 50) -> list[Promotion]:
        """The newest promotions first."""
        with self.session() as s:
            return list(s.scalars(select(Promotion).order_by(Promotion.id.desc()).limit(limit)))

    def active_version(self) -> ModelVersion | None:
        with self.session() as s:
            return s.scalar(select(ModelVersion).where(ModelVersion.status == VersionStatus.active))

    def model_versions(self) -> list[ModelVersion]:
        with self.session() as s:
            return list(s.scalars(select(ModelVersion).order_by(ModelVersion.id)))
