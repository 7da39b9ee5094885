"""Training runs: queued, running and finished, at most one busy."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from storage.errors import NotFoundError, StorageError
from storage.schema import (
    RunStatus,
    TrainingRun,
    utcnow,
)


class TrainingRunQueue:
    """Training runs: queued, running and finished, at most one busy."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def session(self) -> Session:
        return self._sessions()

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
